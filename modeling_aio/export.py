"""Export of AIO's single-modality paths (one ONNX graph per image modality, one for text) and runtimes for them.

Composed queries (several modalities in one sequence) stay on PyTorch: the exported graphs serve the high-volume
jobs, indexing galleries and embedding single-modality queries. Each export is checked against PyTorch on a check
batch (cosine similarity of the embeddings, must be >= 0.999). `runtime_for` picks what runs a checkpoint for a
backend name (`BACKENDS`): the exported graphs, or PyTorch itself in bfloat16, compiled or not. A checkpoint with a
fast RGB gallery encoder (`AIOConfig.rgb_gallery_image_size`) also has an int8 OpenVINO graph of it
(`export_rgb_gallery_int8`, calibrated on RGB photos), which the "openvino-int8" backend indexes RGB photos with.
Each set of graphs has a record written after it (`write_graph_record`): the digest of the weights it was exported
from and of its files, so that graphs left half-written, or exported from other weights, never run as current.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .checks_aio import finite_embeddings
from .configuration_aio import IMAGE_MODALITIES

if TYPE_CHECKING:
    import openvino as ov

MIN_COSINE = 0.999
#: What can run a checkpoint: PyTorch in float32; PyTorch under bfloat16 autocast (about 2x faster on CPUs with
#: native bf16, slower on others), also compiled by `torch.compile` (3-4x; the first batches of a process
#: compile, about a minute); its exported ONNX or OpenVINO graphs. docs/experiments.md has their accuracy.
#: "openvino-int8": OpenVINO, with RGB photos through the fast RGB gallery encoder in int8 (x2.7 of 0277's images/s
#: at 160x80, 0277 run on whole batches in parallel streams as these graphs are); "torch-fast": PyTorch in
#: float32, with RGB photos through the same encoder (no OpenVINO needed). On both, a search re-scores the index's
#: top hits by the full model (`search.AIOSearcher.search`, `rescore`).
BACKENDS = ("torch", "torch-bf16", "torch-bf16-compiled", "torch-fast", "onnx", "openvino", "openvino-int8")
#: The backends that index RGB photos by the RGB gallery encoder (fast indexes, re-scored when searched).
FAST_INDEX_BACKENDS = ("torch-fast", "openvino-int8")
#: The int8 graph of the RGB gallery encoder, in the checkpoint's openvino/ folder.
RGB_GALLERY_INT8 = "rgb_gallery-int8.xml"
#: The record of a backend folder's float graphs, and that of the int8 graph (calibrated apart), beside them.
GRAPHS_RECORD, RGB_GALLERY_INT8_RECORD = "graphs.json", "rgb_gallery-int8.json"


class _ImagePath(nn.Module):
    def __init__(self, model, modality: str):
        super().__init__()
        self.model, self.key = model, f"pixel_values_{modality}"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.key: pixel_values}).embeds


class _TextPath(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).embeds


def _check_inputs(model) -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    height, width = model.config.image_size
    ids = torch.randint(1000, 2000, (3, 12), generator=generator) % model.config.vocab_size
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    inputs = {m: {"pixel_values": torch.randn(3, 3, height, width, generator=generator)} for m in IMAGE_MODALITIES}
    inputs["text"] = {"input_ids": ids, "attention_mask": mask}
    return inputs


def weights_digest(module: nn.Module, config=None) -> str:
    """sha256 of `module`'s weights (names, types, shapes, values) and of `config` (without the keys that saving or
    loading sets, at any depth): what a graph exported from it computes."""
    from .search.storage import update_with_weights

    digest = hashlib.sha256()
    if config is not None:
        digest.update(json.dumps(_settings(config.to_dict()), sort_keys=True, default=str).encode())
    update_with_weights(digest, module)
    return digest.hexdigest()


def _settings(config: dict) -> dict:
    """`config` (and the configs nested in it) without the keys that saving or loading sets."""
    from .search.storage import LOADING_CONFIG_KEYS

    return {key: _settings(value) if isinstance(value, dict) else value for key, value in config.items()
            if key not in LOADING_CONFIG_KEYS}


def _model_digest(model) -> str:
    base = getattr(model, "aio", model)
    return weights_digest(base, base.config)


def write_graph_record(record: Path, source_digest: str, graphs: list[Path]) -> None:
    """`record` (JSON, written whole, after the graphs): `source_digest` (`weights_digest` of what they were
    exported from) and the digest of every file of `graphs` (an OpenVINO `.xml` with its `.bin`)."""
    from .search.storage import atomic_write, sha256

    files = sorted({path for graph in graphs for path in (Path(graph), Path(graph).with_suffix(".bin"))
                    if path.is_file()})
    content = {"weights": source_digest, "files": {path.name: sha256(path.read_bytes()) for path in files}}
    atomic_write(record, (json.dumps(content, indent=1) + "\n").encode())


def graph_record_matches(record: Path, source_digest: str) -> bool:
    """Whether the graphs of `record` are whole and were exported from weights of `source_digest`."""
    from .search.storage import sha256

    try:
        content = json.loads(record.read_text())
    except (OSError, ValueError):  # missing, or not a record (edited by hand): the graphs count as not current
        return False
    if not isinstance(content, dict):
        return False
    files = content.get("files") or {}
    return content.get("weights") == source_digest and bool(files) and all(
        (record.parent / name).is_file() and sha256((record.parent / name).read_bytes()) == digest
        for name, digest in files.items())


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine similarity between matching rows of two embedding batches (an export's parity check)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def export_onnx(model, out_dir: Path) -> dict[Path, float]:
    """Writes image_{rgb,ir,sketch}.onnx and text.onnx (dynamic batch and length) and returns each file's worst
    cosine to PyTorch on the check batch."""
    import onnxruntime as ort

    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    checks = _check_inputs(model)
    results = {}
    for name, inputs in checks.items():
        module = (_TextPath(model) if name == "text" else _ImagePath(model, name)).eval()
        path = out_dir / ("text.onnx" if name == "text" else f"image_{name}.onnx")
        axes = {k: {0: "batch", 1: "length"} if name == "text" else {0: "batch"} for k in inputs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs),
                              output_names=["embeds"], dynamic_axes={**axes, "embeds": {0: "batch"}},
                              opset_version=17, dynamo=False)
        with torch.no_grad():
            reference = module(*inputs.values()).numpy()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        exported = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
        results[path] = worst_cosine(reference, exported)
        if results[path] < MIN_COSINE:
            raise RuntimeError(f"{path} disagrees with PyTorch (cosine {results[path]:.5f} < {MIN_COSINE}).")
    return results


def export_openvino(model, out_dir: Path) -> dict[Path, float]:
    """Converts the ONNX graphs to OpenVINO IR (.xml/.bin) and checks them the same way."""
    import openvino as ov

    onnx_dir = out_dir.parent / "onnx"
    export_onnx(model, onnx_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    core, results = ov.Core(), {}
    for name, inputs in _check_inputs(model).items():
        stem = "text" if name == "text" else f"image_{name}"
        xml = out_dir / f"{stem}.xml"
        ov.save_model(ov.convert_model(str(onnx_dir / f"{stem}.onnx")), str(xml))
        compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        module = (_TextPath(model) if name == "text" else _ImagePath(model, name)).eval()
        with torch.no_grad():
            reference = module(*inputs.values()).numpy()
        exported = compiled([v.numpy() for v in inputs.values()])[compiled.output(0)]
        results[xml] = worst_cosine(reference, exported)
        if results[xml] < MIN_COSINE:
            raise RuntimeError(f"{xml} disagrees with PyTorch (cosine {results[xml]:.5f} < {MIN_COSINE}).")
    return results


def export_pixels_onnx(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """A module of pixels alone (-> embeds) as an ONNX graph for any batch, traced on `example`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=["pixel_values"], output_names=["embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "embeds": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return Path(path)


def export_int8_openvino(module: nn.Module, calibration: list[torch.Tensor], xml: str | Path,
                         keep_float: tuple[str, ...] = ()) -> float:
    """`module` (pixels -> embeds) quantised to int8 as an OpenVINO graph at `xml` (+ `.bin`, dynamic batch): NNCF
    post-training quantisation, mixed preset (symmetric weights, asymmetric activations: the symmetric "performance"
    preset cost the distilled gallery encoder 0.3-0.5 mAP; keeping its head in float bought nothing and cost 5% of
    the speed) with NNCF's accurate bias correction (the fast one lost 0.3-0.4 mAP more cross-domain in each of
    five pairs, three gallery encoders; docs/experiments.md), the layers matching `keep_float` (node-name
    patterns) left in float, calibrated on the pixel batches `calibration`; each file written whole before it is
    renamed into place (the weights first). Returns the graph's worst cosine to PyTorch on the first batch. Needs
    `nncf`."""
    import tempfile

    import nncf
    import openvino as ov

    with tempfile.TemporaryDirectory() as scratch:
        graph = ov.convert_model(str(export_pixels_onnx(module, calibration[0], Path(scratch) / "graph.onnx")))
    quantized = nncf.quantize(graph, nncf.Dataset([batch.numpy() for batch in calibration]),
                              subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED,
                              fast_bias_correction=False,
                              ignored_scope=nncf.IgnoredScope(patterns=list(keep_float), validate=False)
                              if keep_float else None)
    final = Path(xml)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".partial-{final.name}")
    ov.save_model(quantized, str(partial), compress_to_fp16=False)
    os.replace(partial.with_suffix(".bin"), final.with_suffix(".bin"))
    os.replace(partial, final)
    compiled = ov.Core().compile_model(str(final), "CPU")
    with torch.no_grad():
        reference = module(calibration[0]).numpy()
    return worst_cosine(reference, compiled([calibration[0].numpy()])[compiled.output(0)])


def rgb_pixel_batches(paths: list[str], image_size: tuple[int, int], batch_size: int = 32) -> list[torch.Tensor]:
    """The RGB photos at `paths` as the image processor makes them at `image_size`, in batches (a file that is no
    image is an error naming it)."""
    from processing_aio import AIOImageProcessor

    processor = AIOImageProcessor(size={"height": image_size[0], "width": image_size[1]})
    return [processor([str(p) for p in paths[start:start + batch_size]], modality="rgb", input_name="photos",
                      return_tensors="pt")["pixel_values"] for start in range(0, len(paths), batch_size)]


def export_rgb_gallery_int8(model, checkpoint: Path, calibration: list[torch.Tensor]) -> tuple[Path, float]:
    """The checkpoint's RGB gallery encoder as `checkpoint/openvino/RGB_GALLERY_INT8`, calibrated on `calibration`
    (batches of RGB photos processed at `config.rgb_gallery_image_size`: a few hundred of the photos it will index);
    returns the file and its worst cosine to PyTorch."""
    base = getattr(model, "aio", model)
    if not hasattr(base, "rgb_gallery_encoder"):
        raise ValueError("this checkpoint has no RGB gallery encoder (`config.rgb_gallery_image_size` is None).")
    if not calibration:
        raise ValueError("int8 calibration needs at least one batch of RGB photos.")
    xml = Path(checkpoint) / "openvino" / RGB_GALLERY_INT8
    cosine = export_int8_openvino(base.rgb_gallery_encoder.eval(), calibration, xml)
    write_graph_record(xml.with_name(RGB_GALLERY_INT8_RECORD), weights_digest(base.rgb_gallery_encoder), [xml])
    return xml, cosine


def export_checkpoint(model, checkpoint: Path, backend: str = "onnx") -> dict[Path, float]:
    """The single-modality graphs of `model` in `checkpoint/backend/`, then their record (`GRAPHS_RECORD`); returns
    each graph's worst cosine to PyTorch."""
    if backend not in ("onnx", "openvino"):
        raise ValueError(f"export backend must be onnx or openvino, got {backend!r}.")
    folder = Path(checkpoint) / backend
    results = (export_onnx if backend == "onnx" else export_openvino)(model, folder)
    write_graph_record(folder / GRAPHS_RECORD, _model_digest(model), list(results))
    return results


def graphs_are_current(model, checkpoint: Path, backend: str) -> bool:
    """Whether `checkpoint/backend/` holds whole graphs exported from `model`'s weights (`export_checkpoint`)."""
    return graph_record_matches(Path(checkpoint) / backend / GRAPHS_RECORD, _model_digest(model))


class TorchAutocastRuntime:
    """The PyTorch model itself under `torch.autocast` in bfloat16: every query kind, composed ones included, with
    the convolutions and matrix products in bf16 and the embedding returned in float32. `compiled` runs it through
    `torch.compile` (inductor fuses each convolution with its ReLU and residual add, which eager PyTorch runs as
    separate passes over memory; it needs a C++ compiler); the model itself stays as it was, eager. The compiled
    graph holds the weights as constants (inductor's `freezing`, set for these calls only: folded and pre-packed for
    oneDNN, 15-50% faster here), read when it compiles, so a runtime serves the weights it first saw."""

    def __init__(self, model, dtype: torch.dtype = torch.bfloat16, compiled: bool = False):
        self.model, self.dtype, self.compiled = model, dtype, compiled
        base = getattr(model, "aio", model)  # AIOForReIdentification wraps the AIOModel that embeds
        self._forward = torch.compile(base) if compiled else base

    def embed(self, batch) -> np.ndarray:
        from torch._dynamo.exc import BackendCompilerFailed

        frozen = contextlib.nullcontext()
        if self.compiled:
            import torch._inductor.config as inductor_config

            frozen = inductor_config.patch(freezing=True)
        try:
            with torch.no_grad(), torch.autocast(self.model.device.type, dtype=self.dtype), frozen:
                return finite_embeddings(self._forward(**batch).embeds).float().cpu().numpy()
        except BackendCompilerFailed as error:
            raise RuntimeError(f"torch.compile could not build the model ({str(error).splitlines()[0]}); it needs a "
                               "working C++ compiler. Use the torch-bf16 backend instead.") from None


def runtime_for(model, checkpoint: Path, backend: str) -> "TorchAutocastRuntime | ExportedRuntime | None":
    """What runs `model` for `backend` (one of BACKENDS): None for plain PyTorch, else an object with `embed(batch)`;
    the exported graphs are written into `checkpoint` on first use."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if backend == "torch":
        return None
    if backend.startswith("torch-bf16"):
        return TorchAutocastRuntime(model, compiled=backend == "torch-bf16-compiled")
    if backend in FAST_INDEX_BACKENDS and not hasattr(getattr(model, "aio", model), "rgb_gallery_encoder"):
        raise ValueError(f"the {backend} backend needs a checkpoint with an RGB gallery encoder "
                         "(`config.rgb_gallery_image_size`); this one has none.")
    if backend == "torch-fast":
        return TorchGalleryEncoderRuntime(model)
    if backend == "openvino-int8":
        xml = Path(checkpoint) / "openvino" / RGB_GALLERY_INT8
        calibrate = (f"calibrate it on your RGB photos with `aio-reid export --model {checkpoint} --backend "
                     "openvino-int8 --calibration-images FOLDER`")
        if not xml.is_file():
            raise FileNotFoundError(f"{xml} is missing: {calibrate}.")
        encoder = getattr(model, "aio", model).rgb_gallery_encoder
        record = xml.with_name(RGB_GALLERY_INT8_RECORD)
        if not graph_record_matches(record, weights_digest(encoder)):
            raise ValueError(f"{xml} was not exported from this checkpoint's RGB gallery encoder, or was left "
                             f"half-written: {calibrate}.")
        from .search.storage import sha256

        runtime = ExportedRuntime.for_checkpoint(model, Path(checkpoint), "openvino")
        # the record, just checked against the graph's files, names this calibration of it
        runtime.add_rgb_gallery(xml, tuple(model.config.rgb_gallery_image_size), sha256(record.read_bytes())[:12])
        return runtime
    return ExportedRuntime.for_checkpoint(model, Path(checkpoint), backend)


class TorchGalleryEncoderRuntime:
    """PyTorch in float32 ("torch-fast"): RGB photos alone by the model's RGB gallery encoder (`embed_rgb_gallery`,
    at its own input size), every query by the model itself (`embed`), so that a search can re-score the fast
    index's top hits by the full model without OpenVINO."""

    rgb_gallery_kind = "float32"

    def __init__(self, model):
        self.model = model
        encoder = getattr(model, "aio", model).rgb_gallery_encoder
        self.rgb_gallery_size: tuple[int, int] = tuple(encoder.image_size)
        self.rgb_gallery_digest = weights_digest(encoder)[:12]  # the encoder's weights name its vectors

    def embed(self, batch) -> np.ndarray:
        with torch.no_grad():
            return self.model.get_features(**batch).numpy()

    def embed_rgb_gallery(self, pixel_values: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.model.get_rgb_gallery_features(pixel_values).numpy()


class OpenVINORunner:
    """One OpenVINO graph on the CPU, run for throughput on batches and for latency on single inputs.

    OpenVINO's default compiles for latency: one stream, every core on one request. On a batch, running parallel
    streams (its THROUGHPUT hint, a core or two each) over slices of the batch is faster (benchmarks/RESULTS.md);
    on one input it is slower, so a batch smaller than the number of streams goes to a latency-compiled copy. The
    throughput copy is compiled on the first call (it says how many streams there are), the latency copy on the
    first small batch. Outputs are those of the graph's first output, in the batch's order; one call at a time."""

    def __init__(self, graph: "str | Path | ov.Model", config: dict[str, object] | None = None):
        self.graph = str(graph) if isinstance(graph, (str, Path)) else graph  # a file, or a graph already read
        self.config = dict(config or {})
        self._latency = self._throughput = None

    def _compiled(self, hint: str):
        import openvino as ov

        return ov.Core().compile_model(self.graph, "CPU", {**self.config, "PERFORMANCE_HINT": hint})

    def __call__(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if self._throughput is None:
            import openvino as ov

            compiled = self._compiled("THROUGHPUT")
            self._throughput = (compiled, ov.AsyncInferQueue(compiled, compiled.get_property(
                "OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        compiled, queue = self._throughput
        batch = len(next(iter(feed.values())))
        if batch < len(queue):
            if self._latency is None:
                self._latency = self._compiled("LATENCY")
            return self._latency(feed)[self._latency.output(0)]
        bounds = np.linspace(0, batch, len(queue) + 1).astype(int)
        outputs: list[np.ndarray | None] = [None] * len(queue)
        queue.set_callback(lambda request, slot: outputs.__setitem__(slot, request.get_output_tensor(0).data.copy()))
        for slot, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            queue.start_async({name: value[start:stop] for name, value in feed.items()}, slot)
        queue.wait_all()
        return np.concatenate(outputs)


class ExportedRuntime:
    """Runs the exported single-modality graphs with onnxruntime or OpenVINO (`OpenVINORunner`)."""

    rgb_gallery_kind = "int8"

    def __init__(self, runners: dict[str, object]):
        self.runners = runners
        self.rgb_gallery_size: tuple[int, int] | None = None  # set by `add_rgb_gallery`
        self.rgb_gallery_digest: str | None = None

    def add_rgb_gallery(self, xml: Path, image_size: tuple[int, int], digest: str) -> None:
        """RGB photos, processed at `image_size`, go through the RGB gallery encoder's graph `xml`
        (`embed_rgb_gallery`). `digest` (of the graph's files) tells one calibration from another: int8 graphs of
        the same weights calibrated on other photos embed differently."""
        self.runners["rgb_gallery"] = OpenVINORunner(xml)
        self.rgb_gallery_size = image_size
        self.rgb_gallery_digest = digest

    def embed_rgb_gallery(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Embeddings of RGB photos processed at `rgb_gallery_size` by the RGB gallery encoder's graph."""
        if self.rgb_gallery_size is None:
            raise ValueError("this runtime has no RGB gallery encoder graph (the openvino-int8 backend has one).")
        if tuple(pixel_values.shape[-2:]) != self.rgb_gallery_size:
            raise ValueError(f"the RGB gallery encoder reads {self.rgb_gallery_size} pixels, got "
                             f"{tuple(pixel_values.shape[-2:])}.")
        return finite_embeddings(torch.from_numpy(np.asarray(
            self.runners["rgb_gallery"]({"pixel_values": pixel_values.numpy()}), dtype=np.float32))).numpy()

    @classmethod
    def for_checkpoint(cls, model, checkpoint: Path, backend: str) -> "ExportedRuntime":
        folder = checkpoint / backend
        suffix = ".onnx" if backend == "onnx" else ".xml"
        if not graphs_are_current(model, checkpoint, backend):  # missing, half-written, or from other weights
            export_checkpoint(model, checkpoint, backend)
        runners = {}
        for name in (*IMAGE_MODALITIES, "text"):
            path = folder / (f"text{suffix}" if name == "text" else f"image_{name}{suffix}")
            if backend == "onnx":
                import onnxruntime as ort

                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                runners[name] = lambda feed, s=session: s.run(None, feed)[0]
            elif backend == "openvino":
                runners[name] = OpenVINORunner(path)
            else:
                raise ValueError(f"backend must be onnx or openvino, got {backend!r}.")
        return cls(runners)

    def embed(self, batch) -> np.ndarray:
        present = [m for m in IMAGE_MODALITIES if f"pixel_values_{m}" in batch] + (["text"] if "input_ids" in batch else [])
        if len(present) != 1:
            raise ValueError(f"exported backends embed one modality at a time; got {present}. Use --backend torch "
                             "for composed queries.")
        (name,) = present
        if name == "text":
            feed = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        else:
            feed = {"pixel_values": batch[f"pixel_values_{name}"].numpy()}
        return np.asarray(self.runners[name](feed), dtype=np.float32)


__all__ = ["export_onnx", "export_openvino", "export_checkpoint", "ExportedRuntime", "OpenVINORunner",
           "TorchAutocastRuntime", "TorchGalleryEncoderRuntime", "runtime_for", "BACKENDS", "FAST_INDEX_BACKENDS",
           "MIN_COSINE", "RGB_GALLERY_INT8", "export_pixels_onnx",
           "export_int8_openvino", "export_rgb_gallery_int8", "rgb_pixel_batches", "weights_digest",
           "write_graph_record", "graph_record_matches", "graphs_are_current", "GRAPHS_RECORD",
           "RGB_GALLERY_INT8_RECORD"]
