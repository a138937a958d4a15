"""Intel Open Model Zoo's `person-reidentification-retail-0267` (OSNet, Apache-2.0) from its ONNX file into
`weights/osnet-0267.safetensors` for `modeling_aio.osnet.OSNet`, with a check of the port.

Checks, on the same random inputs: against onnxruntime after replacing the graph's MeanVarianceNormalization nodes
by their ONNX-spec decomposition (plain onnxruntime returns NaN on the original), and against OpenVINO (reads the
original file) when `openvino` is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..osnet import OSNet
from .paths import OSNET_0267_WEIGHTS, SHARED

DEFAULT_ONNX = SHARED / "weights" / "openvino-person-reid" / "person-reidentification-retail-0267.onnx"


def osnet_from_onnx(onnx_path: Path) -> OSNet:
    import onnx
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    net = OSNet().eval()
    missing = [k for k in net.state_dict() if k not in arrays]
    if missing:
        raise RuntimeError(f"{onnx_path} lacks OSNet parameters {missing[:5]}")
    net.load_state_dict({k: torch.from_numpy(arrays[k].copy()) for k in net.state_dict()})
    return net


def onnxruntime_with_mvn_decomposed(onnx_path: Path):
    """An onnxruntime session of the graph with each MVN node replaced by mean / variance / sqrt(var + 1e-9)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "mvn_epsilon"))
    nodes = []
    for index, node in enumerate(graph.node):
        if node.op_type != "MeanVarianceNormalization":
            nodes.append(node)
            continue
        x, y, p = node.input[0], node.output[0], f"mvn{index}_"
        nodes += [
            helper.make_node("ReduceMean", [x], [p + "mean"], axes=[2, 3], keepdims=1),
            helper.make_node("Sub", [x, p + "mean"], [p + "centered"]),
            helper.make_node("Mul", [p + "centered", p + "centered"], [p + "square"]),
            helper.make_node("ReduceMean", [p + "square"], [p + "variance"], axes=[2, 3], keepdims=1),
            helper.make_node("Add", [p + "variance", "mvn_epsilon"], [p + "variance_eps"]),
            helper.make_node("Sqrt", [p + "variance_eps"], [p + "std"]),
            helper.make_node("Div", [p + "centered", p + "std"], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def verify(net: OSNet, onnx_path: Path, trials: int = 3) -> dict[str, float]:
    inputs = [np.random.default_rng(seed).standard_normal((1, 3, 256, 128)).astype(np.float32) for seed in range(trials)]
    with torch.no_grad():
        ours = [net(torch.from_numpy(x))[1].numpy() for x in inputs]
    session = onnxruntime_with_mvn_decomposed(onnx_path)
    result = {"onnxruntime (MVN decomposed)": max(float(np.abs(session.run(None, {"data": x})[0] - o).max())
                                                  for x, o in zip(inputs, ours))}
    try:
        import openvino as ov
    except ImportError:
        print("openvino not installed: skipping the OpenVINO comparison")
    else:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result["openvino (original graph)"] = max(float(np.abs(compiled([x])[compiled.output(0)] - o).max())
                                                  for x, o in zip(inputs, ours))
    return result


def convert(onnx_path: Path = DEFAULT_ONNX, out: Path = OSNET_0267_WEIGHTS) -> Path:
    """Ports, verifies (printing the max abs differences) and writes the safetensors file."""
    if not onnx_path.exists():
        raise SystemExit(f"error: {onnx_path} not found (it lives in ../shared/weights/openvino-person-reid).")
    net = osnet_from_onnx(onnx_path)
    for name, diff in verify(net, onnx_path).items():
        print(f"max |OSNet (PyTorch) - {name}| = {diff:.2e}")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out), metadata={
        "source": "Intel Open Model Zoo person-reidentification-retail-0267 (ONNX initializers)",
        "license": "Apache-2.0"})
    print(f"wrote {out} ({sum(p.numel() for p in net.parameters()):,} parameters, "
          f"{out.stat().st_size / 2**20:.1f} MiB)")
    return out


__all__ = ["osnet_from_onnx", "onnxruntime_with_mvn_decomposed", "verify", "convert", "DEFAULT_ONNX"]
