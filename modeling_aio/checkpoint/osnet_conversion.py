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


class _PortedGraph:
    """Read-only walk over a ported OpenVINO IR (`openvino_port`): consumers of a node and constants behind
    Convert nodes, for `osnet_from_openvino_port`."""

    def __init__(self, constants: dict[str, torch.Tensor], nodes: list[dict]):
        self.constants, self.nodes = constants, nodes
        self.consumers: dict[int, list[int]] = {}
        for index, node in enumerate(nodes):
            for source, _ in node["inputs"]:
                self.consumers.setdefault(source, []).append(index)

    def op(self, index: int) -> str:
        return self.nodes[index]["op"]

    def constant(self, index: int, position: int = 1) -> torch.Tensor:
        """The constant at input `position` of node `index`."""
        source = self.nodes[index]["inputs"][position][0]
        while self.op(source) == "Convert":
            source = self.nodes[source]["inputs"][0][0]
        if self.op(source) != "Constant":
            raise ValueError(f"node {index} ({self.op(index)}): input {position} is not a constant.")
        return self.constants[self.nodes[source]["attrs"]["name"]].float()

    def source(self, index: int) -> int:
        """The node that feeds input 0 of node `index`."""
        return self.nodes[index]["inputs"][0][0]

    def next(self, index: int, op: str) -> int:
        """The one consumer of `index` that is an `op`."""
        found = [c for c in self.consumers.get(index, []) if self.op(c) == op]
        if len(found) != 1:
            raise ValueError(f"node {index} ({self.op(index)}) has {len(found)} {op} consumers, expected one.")
        return found[0]

    def all_next(self, index: int, op: str) -> list[int]:
        return [c for c in self.consumers.get(index, []) if self.op(c) == op]


def _set_conv_bn(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d | torch.nn.BatchNorm1d, weight: torch.Tensor,
                 bias: torch.Tensor) -> None:
    """A convolution with BatchNorm folded into it (the IR's form) as conv + an identity-scaled BatchNorm."""
    conv.weight.data.copy_(weight.reshape(conv.weight.shape))
    bn.weight.data.fill_(1.0)
    bn.bias.data.copy_(bias.reshape(-1))
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) == 1 exactly


def _conv_add(graph: _PortedGraph, conv: int, layer) -> int:
    """Loads Convolution `conv` and the bias Add after it into a `ConvLayer`; returns the Add's index."""
    add = graph.next(conv, "Add")
    _set_conv_bn(layer.conv, layer.bn, graph.constant(conv), graph.constant(add))
    return add


def _block(graph: _PortedGraph, block, source: int) -> int:
    """Loads one OSBlock whose input is node `source`; returns the index of its output (the final Relu)."""
    convs = graph.all_next(source, "Convolution")
    convs.sort(key=lambda c: graph.constant(c).shape[0])  # conv1 (a quarter of the width) before downsample
    stream_input = graph.next(_conv_add(graph, convs[0], block.conv1), "Relu")
    streams = []
    for first in graph.all_next(stream_input, "Convolution"):
        layers, conv = [], first
        while True:
            depthwise = graph.next(conv, "GroupConvolution")
            add = graph.next(depthwise, "Add")
            layers.append((graph.constant(conv), graph.constant(depthwise), graph.constant(add)))
            relu = graph.next(add, "Relu")
            if graph.all_next(relu, "ReduceMean"):
                break
            conv = graph.next(relu, "Convolution")
        streams.append((layers, graph.next(relu, "ReduceMean"), relu))
    streams.sort(key=lambda s: len(s[0]))
    for stream, (layers, _, _) in zip((block.conv2a, block.conv2b, block.conv2c, block.conv2d), streams):
        modules = [stream] if len(layers) == 1 else list(stream)
        for module, (pointwise, depthwise, bias) in zip(modules, layers):
            module.conv1.weight.data.copy_(pointwise.reshape(module.conv1.weight.shape))
            _set_conv_bn(module.conv2, module.bn, depthwise, bias)
    pooled = streams[0][1]
    if hasattr(block.gate, "gn"):
        mvn = graph.next(graph.next(pooled, "Reshape"), "MVN")
        scale = graph.next(graph.next(mvn, "Reshape"), "Multiply")
        block.gate.gn.weight.data.copy_(graph.constant(scale).reshape(-1))
        block.gate.gn.bias.data.copy_(graph.constant(graph.next(scale, "Add")).reshape(-1))
        gate_output = graph.next(graph.next(scale, "Add"), "Sigmoid")
    else:
        fc1 = graph.next(pooled, "Convolution")
        fc2 = graph.next(graph.next(graph.next(fc1, "Add"), "Relu"), "Convolution")
        for layer, conv in ((block.gate.fc1, fc1), (block.gate.fc2, fc2)):
            layer.weight.data.copy_(graph.constant(conv).reshape(layer.weight.shape))
            layer.bias.data.copy_(graph.constant(graph.next(conv, "Add")).reshape(-1))
        gate_output = graph.next(graph.next(fc2, "Add"), "Sigmoid")
    node = graph.next(gate_output, "Multiply")
    while not graph.all_next(node, "Convolution"):  # the Adds that sum the four gated streams
        node = graph.next(node, "Add")
    residual = graph.next(_conv_add(graph, graph.next(node, "Convolution"), block.conv3), "Add")
    if block.downsample is not None:
        _conv_add(graph, convs[1], block.downsample)
    return graph.next(residual, "Relu")


def osnet_from_openvino_port(constants: dict[str, torch.Tensor], nodes: list[dict]) -> OSNet:
    """An `OSNet` computing what a ported OMZ OSNet-AIN IR computes (0277: x1.0, channels 64/256/384/512).

    The IR has each BatchNorm folded into the convolution before it (a bias Add follows); those load as the
    convolution plus an identity-scaled BatchNorm. The IR's own input preprocessing (BGR -> RGB, ImageNet mean and
    std on 0..255) is exactly this package's normalisation, so the module takes the processor's pixels as 0267 does.
    Raises ValueError where the graph is not that architecture."""
    graph = _PortedGraph(constants, nodes)
    parameter = next(i for i, n in enumerate(nodes) if n["op"] == "Parameter")
    gather = graph.next(parameter, "Gather")
    if graph.constant(gather).long().tolist() != [2, 1, 0]:
        raise ValueError("the IR does not start by reordering BGR to RGB.")
    subtract = graph.next(gather, "Subtract")
    scaled = graph.next(subtract, "Multiply")
    mean, scale = graph.constant(subtract).reshape(-1), graph.constant(scaled).reshape(-1)
    if not (torch.allclose(mean / 255, torch.tensor([0.485, 0.456, 0.406]), atol=2e-3)
            and torch.allclose(1 / (scale * 255), torch.tensor([0.229, 0.224, 0.225]), atol=2e-3)):
        raise ValueError(f"the IR normalises with mean {mean.tolist()} and scale {scale.tolist()}, not ImageNet's.")
    input_scale = graph.next(graph.next(scaled, "MVN"), "Multiply")
    input_shift = graph.next(input_scale, "Add")
    stem_conv = graph.next(input_shift, "Convolution")
    # each transition is Convolution -> bias Add -> Relu -> AvgPool; the last GroupConvolution is the global pooling
    transition_widths = [graph.constant(graph.source(graph.source(graph.source(pool)))).shape[0]
                         for pool in (i for i, n in enumerate(nodes) if n["op"] == "AvgPool")]
    global_pool = graph.constant(max(i for i, n in enumerate(nodes) if n["op"] == "GroupConvolution"))
    channels = (graph.constant(stem_conv).shape[0], *transition_widths, global_pool.shape[0])
    net = OSNet(feature_size=tuple(global_pool.shape[-2:]), channels=channels)
    net.in_first.weight.data.copy_(graph.constant(input_scale).reshape(-1))
    net.in_first.bias.data.copy_(graph.constant(input_shift).reshape(-1))
    net.conv1.conv.weight.data.copy_(graph.constant(stem_conv))
    stem_mvn = graph.next(stem_conv, "MVN")
    stem_scale = graph.next(stem_mvn, "Multiply")
    net.conv1.bn.weight.data.copy_(graph.constant(stem_scale).reshape(-1))
    net.conv1.bn.bias.data.copy_(graph.constant(graph.next(stem_scale, "Add")).reshape(-1))
    node = graph.next(graph.next(graph.next(stem_scale, "Add"), "Relu"), "MaxPool")
    for stage in (net.conv2, net.conv3, net.conv4):
        node = _block(graph, stage[1], _block(graph, stage[0], node))
        if len(stage) == 3:
            node = graph.next(graph.next(_conv_add(graph, graph.next(node, "Convolution"), stage[2][0]), "Relu"),
                              "AvgPool")
    node = graph.next(_conv_add(graph, graph.next(node, "Convolution"), net.conv5), "Relu")
    pool = graph.next(node, "GroupConvolution")
    net.global_avgpool.weight.data.copy_(graph.constant(pool).reshape(net.global_avgpool.weight.shape))
    net.global_avgpool.bias.data.copy_(graph.constant(graph.next(pool, "Add")).reshape(-1))
    matmul = graph.next(graph.next(graph.next(pool, "Add"), "Reshape"), "MatMul")
    net.fc[0].weight.data.copy_(graph.constant(matmul))
    net.fc[0].bias.data.copy_(graph.constant(graph.next(matmul, "Add")).reshape(-1))
    scale = graph.next(graph.next(graph.next(matmul, "Add"), "Reshape"), "Multiply")
    shift = graph.next(scale, "Add")
    bn = net.fc[1]
    bn.weight.data.copy_(graph.constant(scale).reshape(-1))
    bn.bias.data.copy_(graph.constant(shift).reshape(-1))
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)
    net.fc[2].weight.data.copy_(graph.constant(graph.next(shift, "PRelu")).reshape(-1))
    return net.eval()
