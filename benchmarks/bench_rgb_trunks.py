#!/usr/bin/env python
"""Throughput (images/s, 2 threads) of the RGB trunks issue 19 weighs, in one run: Open Model Zoo 0277 through
OpenVINO (its IR at batch 1 as shipped, and reshaped to batch 32; float and bfloat16 inference precision; 8-bit
when `nncf` is installed, calibrated on real crops of `../shared`, CUHK01 left out) and this package's `OSNet` in
PyTorch at 0267's width (x0.5) and 0277's (x1.0), float32 and bfloat16 autocast. Why: the issue asks for a trunk
at least as accurate as 0277 at twice its images/s; this prints how far each precision and width is from that.
Say in the output's record what else was running: two jobs on two cores slow each other far more than twice.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from modeling_aio.checkpoint.openvino_port import DEFAULT_0277_XML
from modeling_aio.osnet import OSNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def images_per_second(fn, count: int, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return count / sorted(times)[len(times) // 2]


def calibration_crops(count: int) -> list[np.ndarray]:
    """BGR 0..255 crops (1, 3, 256, 128) of the two-camera training set, as 0277 takes them."""
    from PIL import Image

    files = sorted((SHARED / "data" / "pku_reid" / "images" / "train").rglob("*.jpg"))
    files = files[:: max(1, len(files) // count)][:count]
    return [np.asarray(Image.open(f).convert("RGB").resize((128, 256)), dtype=np.float32)[:, :, ::-1]
            .transpose(2, 0, 1)[None].copy() for f in files]


def openvino_rows(batch: np.ndarray, threads: int, repeats: int, calibration: int) -> dict[str, float]:
    import openvino as ov

    core, rows = ov.Core(), {}
    models = {"float": core.read_model(str(DEFAULT_0277_XML))}
    try:
        import nncf
    except ImportError:
        print("  nncf not installed: no 8-bit row")
    else:
        crops = calibration_crops(calibration)
        models["int8"] = nncf.quantize(core.read_model(str(DEFAULT_0277_XML)), nncf.Dataset(crops),
                                       subset_size=len(crops))
    for name, model in models.items():
        for size in (1, len(batch)):
            model.reshape([size, 3, 256, 128])
            for hint in ("f32", "bf16"):
                compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                             "INFERENCE_PRECISION_HINT": hint})
                if size == 1:
                    fn = lambda c=compiled: [c([x[None]]) for x in batch]  # noqa: E731
                else:
                    fn = lambda c=compiled: c([batch])  # noqa: E731
                rows[f"0277 OpenVINO {name}, batch {size}, {hint} precision"] = images_per_second(
                    fn, len(batch), repeats)
    return rows


def torch_rows(batch: torch.Tensor, repeats: int) -> dict[str, float]:
    rows = {}
    for label, channels in (("x0.5 (0267)", None), ("x1.0 (0277)", (64, 256, 384, 512))):
        net = OSNet(channels=channels).eval()
        for precision in ("float32", "bfloat16 autocast"):
            def fn(net=net, precision=precision):
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision != "float32"):
                    return net(batch)
            rows[f"OSNet {label} PyTorch, batch {len(batch)}, {precision}"] = images_per_second(fn, len(batch), repeats)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration", type=int, default=300, help="real crops calibrating the 8-bit 0277")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pixels = torch.randn(args.batch_size, 3, 256, 128)
    rows = {}
    if DEFAULT_0277_XML.exists():
        rows |= openvino_rows(np.random.default_rng(0).uniform(0, 255, (args.batch_size, 3, 256, 128))
                              .astype(np.float32), args.threads, args.repeats, args.calibration)
    else:
        print(f"  {DEFAULT_0277_XML} not found: no OpenVINO rows")
    rows |= torch_rows(pixels, args.repeats)
    reference = rows.get("0277 OpenVINO float, batch 1, bf16 precision")
    print(f"{args.threads} threads, median of {args.repeats}; ratios to 0277's IR as shipped (batch 1) with "
          "OpenVINO's default precision on this CPU (bf16 where the CPU has it)")
    for name, value in rows.items():
        ratio = f"  x{value / reference:5.2f}" if reference else ""
        print(f"  {name:56s} {value:8.1f} images/s{ratio}")


if __name__ == "__main__":
    main()
