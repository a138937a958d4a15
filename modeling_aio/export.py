"""Export of AIO's single-modality paths (one ONNX graph per image modality, one for text) and runtimes for them.

Composed queries (several modalities in one sequence) stay on PyTorch: the exported graphs serve the high-volume
jobs, indexing galleries and embedding single-modality queries. Each export is checked against PyTorch on a check
batch (cosine similarity of the embeddings, must be >= 0.999). `runtime_for` picks what runs a checkpoint for a
backend name (`BACKENDS`): the exported graphs, or PyTorch itself in bfloat16, compiled or not.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checks_aio import finite_embeddings
from .configuration_aio import IMAGE_MODALITIES

MIN_COSINE = 0.999
#: What can run a checkpoint: PyTorch in float32; PyTorch under bfloat16 autocast (about 2x faster on CPUs with
#: native bf16, slower on others), also compiled by `torch.compile` (3-4x; the first batches of a process
#: compile, about a minute); its exported ONNX or OpenVINO graphs. docs/experiments.md has their accuracy.
BACKENDS = ("torch", "torch-bf16", "torch-bf16-compiled", "onnx", "openvino")


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


def export_checkpoint(model, checkpoint: Path, backend: str = "onnx") -> dict[Path, float]:
    if backend == "onnx":
        return export_onnx(model, checkpoint / "onnx")
    if backend == "openvino":
        return export_openvino(model, checkpoint / "openvino")
    raise ValueError(f"export backend must be onnx or openvino, got {backend!r}.")


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
    return ExportedRuntime.for_checkpoint(model, Path(checkpoint), backend)


class ExportedRuntime:
    """Runs the exported single-modality graphs with onnxruntime or OpenVINO."""

    def __init__(self, runners: dict[str, object]):
        self.runners = runners

    @classmethod
    def for_checkpoint(cls, model, checkpoint: Path, backend: str) -> "ExportedRuntime":
        folder = checkpoint / backend
        suffix = ".onnx" if backend == "onnx" else ".xml"
        if not (folder / f"text{suffix}").exists():
            export_checkpoint(model, checkpoint, backend)
        runners = {}
        for name in (*IMAGE_MODALITIES, "text"):
            path = folder / (f"text{suffix}" if name == "text" else f"image_{name}{suffix}")
            if backend == "onnx":
                import onnxruntime as ort

                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                runners[name] = lambda feed, s=session: s.run(None, feed)[0]
            elif backend == "openvino":
                import openvino as ov

                compiled = ov.Core().compile_model(str(path), "CPU")
                runners[name] = lambda feed, c=compiled: c(feed)[c.output(0)]
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


__all__ = ["export_onnx", "export_openvino", "export_checkpoint", "ExportedRuntime", "TorchAutocastRuntime",
           "runtime_for", "BACKENDS", "MIN_COSINE"]
