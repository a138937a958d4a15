"""Open Model Zoo ReID models (e.g. person-reidentification-retail-0277, Apache-2.0) ported from their OpenVINO IR
to PyTorch: the IR's topology and constants are read with OpenVINO's Python API once (`port_openvino_ir`), saved as
safetensors (the constants) plus a JSON graph (the operations), and run by `OpenVINOGraph`, a torch module that
interprets that graph op by op. The port needs OpenVINO only to convert; running and fine-tuning it needs torch only
(constants of the weights are parameters).

The IRs take one BGR 0..255 image (1, 3, 256, 128); `OpenVINOGraph.embed` takes this package's normalised RGB
pixels of any batch size. Batch size: reshape targets whose first dimension is the IR's fixed 1 take the input's
batch instead, which holds for these feed-forward ReID graphs (checked image by image against OpenVINO in the tests),
and a target's batch is written as -1, so that a graph exported to ONNX by tracing runs at any batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .paths import SHARED, WEIGHTS_DIR

DEFAULT_0277_XML = (SHARED / "weights" / "openvino-person-reid" / "person-reidentification-retail-0277-FP16"
                    / "person-reidentification-retail-0277.xml")
#: The crops the port is checked on: real people, cameras and datasets 0277 may never have seen.
CHECK_CROPS = ("data/CUHK-PEDES/imgs/CUHK01/*.jpg", "data/pku_reid/images/val/*/*.jpg")
MIN_COSINE = 0.999

#: Every operation the interpreter runs; a graph with any other is refused when ported.
SUPPORTED_OPS = ("Parameter", "Constant", "Convert", "Add", "Subtract", "Multiply", "Relu", "Sigmoid", "PRelu",
                 "Convolution", "GroupConvolution", "MaxPool", "AvgPool", "ReduceMean", "MVN", "Reshape", "ShapeOf",
                 "Gather", "Concat", "MatMul", "Result")


def port_openvino_ir(xml: str | Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(constants by name, graph nodes in execution order) of an OpenVINO IR."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    index_of, nodes, constants = {}, [], {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in SUPPORTED_OPS:
            raise ValueError(f"{xml}: operation {kind} ({op.get_friendly_name()}) is not supported by the port.")
        node = {"op": kind, "inputs": [[index_of[i.get_source_output().get_node().get_friendly_name()],
                                        i.get_source_output().get_index()] for i in op.inputs()],
                "attrs": {k: v for k, v in op.get_attributes().items() if isinstance(v, (int, float, str, bool, list))}}
        if kind == "Constant":
            name = f"c{len(constants)}"
            constants[name] = torch.from_numpy(op.get_data().copy())
            node["attrs"] = {"name": name}
        index_of[op.get_friendly_name()] = len(nodes)
        nodes.append(node)
    return constants, nodes


class OpenVINOGraph(nn.Module):
    """Runs a ported IR graph. Floating constants are parameters (so the network can be fine-tuned), integer ones
    (shapes, axes, indices) buffers."""

    def __init__(self, constants: dict[str, torch.Tensor], nodes: list[dict], image_mean=(0.485, 0.456, 0.406),
                 image_std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.nodes = nodes
        self._cut_nodes: tuple[int, ...] | None = None  # found on first use (the graph never changes)
        self.weights = nn.ParameterDict({k: nn.Parameter(v.float()) for k, v in constants.items()
                                         if v.is_floating_point()})
        for name, value in constants.items():
            if not value.is_floating_point():
                self.register_buffer(f"int_{name}", value.long())
        self.register_buffer("image_mean", torch.tensor(image_mean)[:, None, None], persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std)[:, None, None], persistent=False)

    @classmethod
    def from_files(cls, weights: str | Path, graph: str | Path) -> "OpenVINOGraph":
        """A port saved by `save` (safetensors constants + JSON graph)."""
        from safetensors.torch import load_file

        state = load_file(str(weights))
        constants = {k[len("weights."):]: v.float() for k, v in state.items() if k.startswith("weights.")}
        constants |= {k[len("int_"):]: v for k, v in state.items() if k.startswith("int_")}
        return cls(constants, json.loads(Path(graph).read_text())["nodes"])

    def save(self, weights: str | Path, graph: str | Path, metadata: dict[str, str]) -> None:
        from safetensors.torch import save_file

        state = {f"weights.{k}": v.detach().half().contiguous() for k, v in self.weights.items()}
        state |= {f"int_{n[len('int_'):]}": b for n, b in self.named_buffers() if n.startswith("int_")}
        save_file(state, str(weights), metadata=metadata)
        Path(graph).write_text(json.dumps({"nodes": self.nodes}) + "\n")

    def constant(self, name: str) -> torch.Tensor:
        return self.weights[name] if name in self.weights else getattr(self, f"int_{name}")

    def constant_tensors(self) -> dict[str, torch.Tensor]:
        """Every constant of the graph by its name (floating ones detached), as `port_openvino_ir` read them."""
        tensors = {name: value.detach() for name, value in self.weights.items()}
        return tensors | {n[len("int_"):]: b for n, b in self.named_buffers() if n.startswith("int_")}

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        """The IR's output for BGR 0..255 images (B, 3, H, W)."""
        return self.run_nodes(bgr)

    def node_output(self, bgr: torch.Tensor, node: int) -> torch.Tensor:
        """The first output of graph node `node` for BGR 0..255 images: the graph run up to that node."""
        return self.run_nodes(bgr, stop=node)

    def forward_from(self, node: int, value: torch.Tensor) -> torch.Tensor:
        """The IR's output when node `node` (one of `cut_nodes`) outputs `value`: only the nodes after it run, so a
        frozen lower part can be computed once and cached."""
        if node not in self.cut_nodes():
            raise ValueError(f"graph node {node} does not cut the graph: later nodes read earlier ones past it.")
        return self.run_nodes(None, start=node, value=value)

    def cut_nodes(self) -> tuple[int, ...]:
        """The nodes every later computation flows through: no node after one of them reads a node before it,
        constants aside. Found once, as `forward_from` checks its node at every call."""
        if self._cut_nodes is not None:
            return self._cut_nodes
        last_reader: dict[int, int] = {}
        for index, node in enumerate(self.nodes):
            for source, _ in node["inputs"]:
                last_reader[source] = index
        cuts, reach = [], -1
        for index, node in enumerate(self.nodes):
            if node["op"] == "Constant":
                continue
            if reach <= index:
                cuts.append(index)
            reach = max(reach, last_reader.get(index, -1))
        self._cut_nodes = tuple(cuts)
        return self._cut_nodes

    def run_nodes(self, bgr: torch.Tensor | None, start: int | None = None, value: torch.Tensor | None = None,
                  stop: int | None = None) -> torch.Tensor:
        """Runs the graph on `bgr`, or from node `start` whose output is `value`, to its Result or node `stop`."""
        if stop is not None and not 0 <= stop < len(self.nodes):
            raise ValueError(f"the graph has no node {stop} (it has {len(self.nodes)}).")
        values: list[list | None] = [None] * len(self.nodes)
        for index, node in enumerate(self.nodes):
            if start is not None and index <= start:
                if index == start:
                    values[index] = [value]
                elif node["op"] == "Constant":
                    values[index] = [self.constant(node["attrs"]["name"])]
                continue
            inputs = [values[source][output] for source, output in node["inputs"]]
            outputs = self.run(node, inputs, bgr)
            values[index] = outputs if isinstance(outputs, list) else [outputs]
            if index == stop:
                return values[index][0]
            if node["op"] == "Result":
                return outputs
        raise ValueError("the graph has no Result.")

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embeddings of this package's normalised RGB pixels (B, 3, 256, 128)."""
        return self(self.to_bgr(pixels))

    def to_bgr(self, pixels: torch.Tensor) -> torch.Tensor:
        """This package's normalised RGB pixels as the IR's BGR 0..255 input."""
        return ((pixels * self.image_std + self.image_mean) * 255.0).flip(1)

    def run(self, node: dict, x: list, bgr: torch.Tensor):  # noqa: C901 (one branch per operation)
        op, attrs = node["op"], node["attrs"]
        if op == "Parameter":
            return bgr
        if op == "Constant":
            return self.constant(attrs["name"])
        if op == "Convert":
            return x[0].float() if attrs["destination_type"].startswith("f") else x[0].long()
        if op in ("Add", "Subtract", "Multiply"):
            return {"Add": torch.add, "Subtract": torch.sub, "Multiply": torch.mul}[op](x[0], x[1])
        if op == "Relu":
            return F.relu(x[0])
        if op == "Sigmoid":
            return torch.sigmoid(x[0])
        if op == "PRelu":
            return torch.where(x[0] >= 0, x[0], x[0] * x[1])
        if op in ("Convolution", "GroupConvolution"):
            return self.convolution(op, x[0], x[1], attrs)
        if op in ("MaxPool", "AvgPool"):
            return self.pool(op, x[0], attrs)
        if op == "ReduceMean":
            return x[0].mean(dim=[int(a) for a in x[1].reshape(-1)], keepdim=attrs["keep_dims"])
        if op == "MVN":
            axes = [int(a) for a in x[1].reshape(-1)]
            centred = x[0] - x[0].mean(dim=axes, keepdim=True)
            if not attrs["normalize_variance"]:
                return centred
            variance = centred.pow(2).mean(dim=axes, keepdim=True)
            if attrs["eps_mode"].upper() == "INSIDE_SQRT":
                return centred / torch.sqrt(variance + attrs["eps"])
            return centred / (torch.sqrt(variance) + attrs["eps"])
        if op == "Reshape":
            return x[0].reshape(self.target_shape(x[0], x[1], attrs["special_zero"]))
        if op == "ShapeOf":
            return torch.tensor(x[0].shape, dtype=torch.long)
        if op == "Gather":
            axis = int(x[2].reshape(-1)[0])
            return torch.index_select(x[0], axis % x[0].dim(), x[1].reshape(-1).long()).reshape(
                *x[0].shape[:axis % x[0].dim()], *x[1].shape, *x[0].shape[axis % x[0].dim() + 1:])
        if op == "Concat":
            return torch.cat(x, dim=attrs["axis"])
        if op == "MatMul":
            a = x[0].transpose(-1, -2) if attrs["transpose_a"] else x[0]
            b = x[1].transpose(-1, -2) if attrs["transpose_b"] else x[1]
            return a @ b
        return x[0]  # Result

    @staticmethod
    def target_shape(value: torch.Tensor, shape: torch.Tensor, special_zero: bool) -> list[int]:
        target = [int(s) for s in shape.reshape(-1)]
        if special_zero:
            target = [value.shape[i] if s == 0 else s for i, s in enumerate(target)]
        # The IR's batch of one, or the input's batch: left free (-1), so that the input's batch is kept and a
        # traced export takes any batch; the other sides resolved.
        if target and target[0] in (1, value.shape[0]):
            known = math.prod(side for side in target[1:] if side != -1)
            target = [-1] + [value[0].numel() // known if side == -1 else side for side in target[1:]]
        return target

    @staticmethod
    def convolution(op: str, x: torch.Tensor, weight: torch.Tensor, attrs: dict) -> torch.Tensor:
        groups = 1
        if op == "GroupConvolution":  # (G, C_out / G, C_in / G, kh, kw)
            groups = weight.shape[0]
            weight = weight.reshape(-1, *weight.shape[2:])
        begin, end = attrs["pads_begin"], attrs["pads_end"]
        if begin != end:
            x = F.pad(x, (begin[1], end[1], begin[0], end[0]))
            begin = [0, 0]
        return F.conv2d(x, weight, stride=attrs["strides"], padding=begin, dilation=attrs["dilations"], groups=groups)

    @staticmethod
    def pool(op: str, x: torch.Tensor, attrs: dict) -> list[torch.Tensor] | torch.Tensor:
        begin, end, ceil = attrs["pads_begin"], attrs["pads_end"], attrs["rounding_type"] == "ceil"
        if begin != end:
            raise ValueError(f"{op} with asymmetric padding {begin} / {end} is not supported.")
        if op == "MaxPool":
            pooled = F.max_pool2d(x, attrs["kernel"], attrs["strides"], begin, attrs.get("dilations", 1), ceil)
            return [pooled, pooled]
        return F.avg_pool2d(x, attrs["kernel"], attrs["strides"], begin, ceil,
                            count_include_pad=not attrs["exclude-pad"])


def port_paths(name: str) -> tuple[Path, Path]:
    """(safetensors, graph JSON) of a port in `weights/`."""
    return WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.graph.json"


def load_port(name: str = "omz-0277") -> OpenVINOGraph:
    """A port shipped in `weights/`, in eval mode."""
    weights, graph = port_paths(name)
    if not weights.is_file() or not graph.is_file():
        raise FileNotFoundError(f"{weights} or {graph} is missing; create them with `python scripts/port_openvino.py`.")
    return OpenVINOGraph.from_files(weights, graph).eval()


def check_against_openvino(port: OpenVINOGraph, xml: Path, per_pattern: int = 16) -> float:
    """The lowest cosine between the port's and OpenVINO's embeddings of real crops (`CHECK_CROPS`)."""
    import glob

    from PIL import Image

    from processing_aio import AIOImageProcessor

    from ..training.trunk_distillation import openvino_reid_embedder

    files = [f for pattern in CHECK_CROPS for f in sorted(glob.glob(str(SHARED / pattern)))[:per_pattern]]
    if not files:
        raise FileNotFoundError(f"no crops under {SHARED}/data to check the port on.")
    processor = AIOImageProcessor()
    pixels = processor([Image.open(f).convert("RGB") for f in files], modality="rgb", return_tensors="pt")
    pixels = pixels["pixel_values"]
    with torch.no_grad():
        ours = port.embed(pixels)
    theirs = openvino_reid_embedder(xml, processor)(pixels)
    return float(F.cosine_similarity(ours, theirs).min())


def convert_and_check(xml: Path, name: str) -> Path:
    """Ports `xml`, refuses a port below `MIN_COSINE` to OpenVINO on real crops, writes it to `weights/`."""
    if not Path(xml).is_file():
        raise SystemExit(f"error: {xml} not found (it lives in ../shared/weights/openvino-person-reid).")
    port = OpenVINOGraph(*port_openvino_ir(xml)).eval()
    cosine = check_against_openvino(port, Path(xml))
    print(f"lowest cosine to OpenVINO on real crops: {cosine:.5f}")
    if cosine < MIN_COSINE:
        raise SystemExit(f"error: the port differs from OpenVINO (cosine {cosine:.5f} < {MIN_COSINE}); not written.")
    weights, graph = port_paths(name)
    port.save(weights, graph, metadata={"source": f"Intel Open Model Zoo {Path(xml).stem} (OpenVINO IR constants)",
                                        "license": "Apache-2.0"})
    print(f"wrote {weights} ({weights.stat().st_size / 2**20:.1f} MiB) and {graph.name}")
    return weights


__all__ = ["OpenVINOGraph", "port_openvino_ir", "load_port", "check_against_openvino", "convert_and_check",
           "port_paths", "SUPPORTED_OPS", "DEFAULT_0277_XML", "MIN_COSINE"]
