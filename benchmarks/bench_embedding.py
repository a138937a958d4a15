#!/usr/bin/env python
"""Embedding throughput of `AIOModel.get_features` (RGB, batch 32, 2 threads) next to the raw frozen encoder.

The raw encoder is the transformers model the checkpoint's encoder came from (DINOv2-S/14 with its own patch
embedding), run on the very same (32, 3, 256, 128) batch. Prints images/s of both and their ratio (goal >= 0.9).
Both are measured in this one run, so the ratio is independent of how fast the machine is.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import modeling_aio  # noqa: E402,F401
from transformers import AutoModel  # noqa: E402


def images_per_second(fn, batch: torch.Tensor, repeats: int, warmup: int = 2) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
    return batch.shape[0] / sorted(times)[len(times) // 2]  # median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(REPO / "aio-reid"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = AutoModel.from_pretrained(args.model).eval()
    encoder_config = model.config.encoder_config
    raw = AutoModel.from_config(encoder_config).eval()
    raw.encoder.load_state_dict(model.encoder.layers.state_dict())
    height, width = model.config.image_size
    batch = torch.randn(args.batch_size, 3, height, width)

    aio_ips = images_per_second(lambda x: model.get_features(pixel_values_rgb=x), batch, args.repeats)
    raw_ips = images_per_second(lambda x: raw(pixel_values=x), batch, args.repeats)
    raw_tokens = 1 + (height // encoder_config.patch_size) * (width // encoder_config.patch_size)
    print(f"batch {args.batch_size} x 3 x {height} x {width}, {args.threads} threads, median of {args.repeats}")
    print(f"  raw frozen encoder ({encoder_config.model_type}, {raw_tokens} tokens): {raw_ips:8.1f} images/s")
    print(f"  AIOModel.get_features rgb ({1 + model.config.num_image_tokens} tokens): {aio_ips:8.1f} images/s")
    print(f"  ratio AIO / raw encoder: {aio_ips / raw_ips:.2f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
