"""A fast RGB gallery encoder (issue 19; one ships as the model's `AIORGBGalleryEncoder`, put into the weights by
`checkpoint.build.ship_rgb_gallery_encoder`): the shipped model's RGB search embedding (computed at 256x128)
distilled into a network that runs at least twice as many images/s as Open Model Zoo 0277 through OpenVINO: 0277's
own architecture at a smaller input size (in float, or in int8 through `export_int8`), or 0267's (OSNet x0.5) at
full size (`TRUNKS`).

Why: issue 19 asks the best backend for 2x the images/s of 0277 through OpenVINO, and 0277 at full size is about
half of the shipped RGB graph's time, so nothing that runs it at full size can get there. 0277's own graph at 176x88
or 192x96 runs 2-2.7x as many images/s through OpenVINO as its IR does in `bench_embedding.py`, and 0267 at 256x128
about 3.3x. The student starts as that network (0277 through this package's port, its learned global-pooling kernel
resized to the smaller map with each channel's sum kept; 0267 as this package's `OSNet`, its BatchNorm statistics
frozen) plus a linear map into the shipped model's search space fitted by least squares, then learns the teacher's
embeddings of the same photos (full size, mirrored or not, computed once) with feature regression and relation
distillation, in the batch and optionally against a bank of other teacher rows (`losses`), through `Trainer`. With
`train_from` the layers below one of its stages stay frozen and their output maps of every photo are computed
once (`stage_input_cache`), so that a step runs only the layers that learn (0277 from conv3: about 5x fewer seconds
a step on the CPU). Its embeddings live in the shipped model's search space, so text and sketch queries would search
a gallery it indexed. `scripts/low_resolution_student.py` runs it; the folder it writes scores as the peer
`low-res-student:FOLDER` of `scripts/evaluate_reid.py`; `balanced_part_scales` weighs the parts of the target
alike, so that the text-aligned part that text queries read is learnt too. Figures and verdict: docs/experiments.md,
the 2026-12-05 entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors.torch import load_file, save
from torch import nn

from processing_aio import AIOImageProcessor

from ..checkpoint.openvino_port import OpenVINOGraph, load_port
from ..checkpoint.paths import OSNET_0267_WEIGHTS
from ..export import export_int8_openvino, export_pixels_onnx, rgb_pixel_batches
from ..losses import bank_relation_distillation_loss, feature_regression_loss, relation_distillation_loss
from ..osnet import OSNet
from ..training.trunk_binding import train_trunk_in_place
from ..training.trunk_distillation import TrunkDistillationOutput, learning_rate_factor

#: The stride-16 map of a 256x128 crop: the size of 0277's learned global-pooling kernel.
POOLING_GRID = (16, 8)
#: The stages whose input (the pooled map before them) can be cached, so that only they and those above train.
STAGES = ("conv2", "conv3", "conv4")
#: The networks a student can be: 0277 as its port (the IR's graph) or as this package's OSNet x1.0 (the same
#: function, BatchNorm folded cleanly, so it quantises to int8), or 0267's OSNet x0.5 (about 3x 0277's images/s).
TRUNKS = ("omz-0277", "osnet-0277", "osnet-0267")
#: An OSNet trunk's name by its stem width.
_OSNET_NAMES = {64: "osnet-0277", 32: "osnet-0267"}
WEIGHTS_NAME, CONFIG_NAME = "student.safetensors", "student.json"
#: The student's int8 OpenVINO graph (`export_int8`), beside its weights.
INT8_NAME = "student-int8.xml"


def resize_pooling_kernel(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A learned global-pooling kernel (..., kh, kw) resized to `size` (area when it shrinks, bilinear when it
    grows), each channel's sum kept, so a map of that size pools to the same scale."""
    if tuple(kernel.shape[-2:]) == tuple(size):
        return kernel.float()
    flat = kernel.float().reshape(-1, 1, *kernel.shape[-2:])
    resized = F.interpolate(flat, size=tuple(size), mode="area" if size[0] < flat.shape[-2] else "bilinear")
    resized = resized * (flat.sum((-2, -1), keepdim=True) / resized.sum((-2, -1), keepdim=True))
    return resized.reshape(*kernel.shape[:-2], *size)


def pooling_kernel_name(port: OpenVINOGraph) -> str:
    """The port's learned global-pooling kernel: its one floating constant whose last two sides are `POOLING_GRID`."""
    names = [name for name, value in port.weights.items()
             if value.dim() >= 3 and tuple(value.shape[-2:]) == POOLING_GRID]
    if len(names) != 1:
        raise ValueError(f"expected one {POOLING_GRID} global-pooling kernel in the port, found {names}.")
    return names[0]


def load_trunk(name: str) -> OpenVINOGraph | OSNet:
    """A student's starting network by `TRUNKS` name."""
    if name == "omz-0277":
        return load_port("omz-0277")
    if name == "osnet-0277":
        from ..checkpoint.osnet_conversion import osnet_from_openvino_port

        port = load_port("omz-0277")
        return osnet_from_openvino_port(port.constant_tensors(), port.nodes)
    if name == "osnet-0267":
        osnet = OSNet()
        osnet.load_state_dict(load_file(str(OSNET_0267_WEIGHTS)))
        return osnet
    raise ValueError(f"the student's trunk is {name!r}; it takes one of {TRUNKS}.")


def stage_input_nodes(port: OpenVINOGraph) -> dict[str, int]:
    """`STAGES` -> the graph node whose output is that stage's input: the pooling nodes that cut the graph, in
    order (the stem's max-pooling, then each transition's average pooling)."""
    pools = [index for index in port.cut_nodes() if port.nodes[index]["op"] in ("MaxPool", "AvgPool")]
    if len(pools) != len(STAGES):
        raise ValueError(f"expected {len(STAGES)} pooling nodes that cut the graph (0277's), found {pools}.")
    return dict(zip(STAGES, pools))


class LowResolutionStudent(nn.Module):
    """A fast network at `image_size` and a linear map of its 256-d embedding into the teacher's `search_size`-d
    space. `trunk` (`load_trunk`) is 0277's port or an `OSNet` (0277 converted, or 0267); its learned pooling kernel
    is resized to the stride-16 map, and an OSNet's BatchNorm statistics stay frozen while it trains. With
    `teacher_embeds` it returns the distillation loss (feature regression plus relation distillation at
    `temperature`, both on the mapped embedding, in float32); with `bank_embeds` as well (more of the teacher's
    rows), `bank_weight` times `bank_relation_distillation_loss` joins the relation loss. With `train_from` (one of
    `STAGES`) it also reads `stage_inputs`, that stage's input maps computed once by the frozen layers below
    (`stage_input_cache`), instead of pixels: a training step then runs only the layers that train."""

    def __init__(self, trunk: OpenVINOGraph | OSNet, search_size: int, image_size: tuple[int, int],
                 temperature: float = 0.05, bank_weight: float = 1.0, train_from: str | None = None):
        super().__init__()
        height, width = image_size
        self.image_size, self.temperature, self.bank_weight = (height, width), temperature, bank_weight
        if train_from is not None and train_from not in STAGES:
            raise ValueError(f"`train_from` is {train_from!r}; it takes one of {STAGES}.")
        if height < 16 or width < 16:
            raise ValueError(f"the student reads at least 16x16 pixels (one cell of the stride-16 map), got "
                             f"{height}x{width}.")
        self.train_from, grid = train_from, (height // 16, width // 16)  # the map is (h // 16, w // 16) at any size
        if isinstance(trunk, OSNet):
            self.trunk_name, self.osnet, self.stage_node = _OSNET_NAMES[trunk.channels[0]], trunk, None
            pooling = trunk.global_avgpool
            if tuple(pooling.kernel_size) != grid:
                trunk.global_avgpool = nn.Conv2d(pooling.in_channels, pooling.out_channels, grid,
                                                 groups=pooling.groups, bias=pooling.bias is not None)
                trunk.global_avgpool.weight = nn.Parameter(resize_pooling_kernel(pooling.weight.detach(), grid))
                if pooling.bias is not None:
                    trunk.global_avgpool.bias = pooling.bias
            self.pooling_kernel = "global_avgpool.weight"
            trunk.eval()  # from the start: fitting the map must neither use nor move the BatchNorm statistics
        else:
            self.trunk_name, self.port = "omz-0277", trunk
            self.stage_node = stage_input_nodes(trunk)[train_from] if train_from else None
            self.pooling_kernel = pooling_kernel_name(trunk)
            trunk.weights[self.pooling_kernel] = nn.Parameter(
                resize_pooling_kernel(trunk.weights[self.pooling_kernel].detach(), grid))
        self.to_search_space = nn.Linear(256, search_size)

    @property
    def trunk(self) -> OpenVINOGraph | OSNet:
        """The network under the map (what trains beside it)."""
        return self.osnet if self.trunk_name.startswith("osnet") else self.port

    def train(self, mode: bool = True) -> LowResolutionStudent:
        super().train(mode)
        if self.trunk_name.startswith("osnet"):
            self.osnet.eval()  # frozen BatchNorm statistics (the shipped trunks' recipe); the parameters still learn
        return self

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The trunk's 256-d embedding of this package's normalised RGB pixels."""
        if self.trunk_name.startswith("osnet"):
            return self.osnet(pixel_values)[1]
        return self.port.embed(pixel_values)

    def forward(self, pixel_values: torch.Tensor | None = None, teacher_embeds: torch.Tensor | None = None,
                bank_embeds: torch.Tensor | None = None, stage_inputs: torch.Tensor | None = None
                ) -> TrunkDistillationOutput:
        if (pixel_values is None) == (stage_inputs is None):
            raise ValueError("give the student either `pixel_values` or `stage_inputs`.")
        if stage_inputs is not None:
            if self.train_from is None:
                raise ValueError("`stage_inputs` need a student made with `train_from`.")
            features, images = self._embed_from_stage(stage_inputs), len(stage_inputs)
        else:
            if tuple(pixel_values.shape[-2:]) != self.image_size:
                raise ValueError(f"`pixel_values` are {tuple(pixel_values.shape[-2:])}; "
                                 f"this student reads {self.image_size}.")
            features, images = self.embed(pixel_values), len(pixel_values)
        if teacher_embeds is not None and len(teacher_embeds) != images:
            raise ValueError(f"`teacher_embeds` has {len(teacher_embeds)} rows for {images} images.")
        projected = self.to_search_space(features)
        with torch.autocast(projected.device.type, enabled=False):  # similarities / 0.05 need float32
            embeds = F.normalize(projected.float(), dim=-1)
            if teacher_embeds is None:
                return TrunkDistillationOutput(embeds=embeds)
            teacher = F.normalize(teacher_embeds.float(), dim=-1)
            feature_loss = feature_regression_loss(projected.float(), teacher)
            relation_loss = relation_distillation_loss(embeds, teacher, self.temperature)
            if bank_embeds is not None and self.bank_weight:
                bank = F.normalize(bank_embeds.float(), dim=-1)
                relation_loss = relation_loss + self.bank_weight * bank_relation_distillation_loss(
                    embeds, teacher, bank, self.temperature)
        return TrunkDistillationOutput(loss=feature_loss + relation_loss, feature_loss=feature_loss.detach(),
                                       relation_loss=relation_loss.detach(), embeds=embeds)

    def _embed_from_stage(self, stage_inputs: torch.Tensor) -> torch.Tensor:
        if self.trunk_name.startswith("osnet"):
            channels_last = stage_inputs.contiguous(memory_format=torch.channels_last)  # as `features_before` gives
            feature_map = self.osnet.feature_map_from(channels_last, self.train_from)
            return self.osnet.embedding_of(feature_map)
        return self.port.forward_from(self.stage_node, stage_inputs)

    @torch.no_grad()
    def stage_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The input maps of stage `train_from` for `pixel_values`: what the frozen layers below it compute."""
        if self.train_from is None:
            raise ValueError("stage inputs need a student made with `train_from`.")
        if self.trunk_name.startswith("osnet"):
            return self.osnet.features_before(pixel_values, self.train_from).contiguous()
        return self.port.node_output(self.port.to_bgr(pixel_values), self.stage_node)

    def frozen_tensors(self) -> list[torch.Tensor]:
        """The weights of the layers below `train_from` (what a stage-input cache depends on)."""
        if self.trunk_name.startswith("osnet"):
            below = ("in_first", "conv1") + OSNet.stages[:OSNet.stages.index(self.train_from)]
            return [value for name, value in self.osnet.state_dict().items() if name.split(".")[0] in below]
        return [self.port.constant(node["attrs"]["name"]) for node in self.port.nodes[:self.stage_node]
                if node["op"] == "Constant"]

    @torch.no_grad()
    def fit_search_map(self, pixel_batches: list[torch.Tensor], targets: torch.Tensor, ridge: float = 1e-2,
                       bf16: bool = False) -> float:
        """Least-squares (ridge) fit of the linear map from the trunk's embeddings of `pixel_batches` (under bf16
        autocast with `bf16`; the solve in float32) to the unit `targets`; returns the mean cosine of the fit."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            features = torch.cat([self.embed(batch).float() for batch in pixel_batches])
        if len(features) != len(targets):
            raise ValueError(f"{len(features)} images for {len(targets)} targets.")
        design = torch.cat([features, torch.ones(len(features), 1)], 1)
        targets = F.normalize(targets.float(), dim=-1)
        solution = torch.linalg.solve(design.T @ design + ridge * torch.eye(design.shape[1]), design.T @ targets)
        self.to_search_space.weight.copy_(solution[:-1].T)
        self.to_search_space.bias.copy_(solution[-1])
        return float(F.cosine_similarity(design @ solution, targets).mean())

    @torch.no_grad()
    def scale_search_map(self, scales: torch.Tensor) -> None:
        """Multiplies the map's outputs by `scales` (one per dimension): into a reweighted target space to train in
        (`balanced_part_scales`), and back out of it (by the reciprocals) before the student is saved."""
        self.to_search_space.weight.mul_(scales[:, None].to(self.to_search_space.weight.dtype))
        self.to_search_space.bias.mul_(scales.to(self.to_search_space.bias.dtype))

    def save_pretrained(self, folder: str | Path, metadata: dict[str, Any]) -> None:
        """Writes `student.safetensors` and `student.json` (trunk, image size, search size, `metadata`), each file
        whole."""
        from ..search.storage import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_NAME, save(state))
        config = {"trunk": self.trunk_name, "image_size": list(self.image_size),
                  "search_size": self.to_search_space.out_features} | metadata
        if self.trunk_name.startswith("osnet") and self.osnet.skipped_blocks:
            config["skipped_blocks"] = list(self.osnet.skipped_blocks)
        atomic_write(folder / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode())


def load_student(folder: str | Path, image_size: tuple[int, int] | None = None, train_from: str | None = None
                 ) -> LowResolutionStudent:
    """A student written by `save_pretrained`, in eval mode; `image_size` other than its own resizes its pooling
    kernel (to go on training at another size); `train_from` as for `LowResolutionStudent`."""
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file() or not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME} + {CONFIG_NAME} (a low_resolution_student folder).")
    config = json.loads((folder / CONFIG_NAME).read_text())
    state = load_file(str(folder / WEIGHTS_NAME))
    size = tuple(image_size or config["image_size"])
    trunk = load_trunk(config.get("trunk", "omz-0277"))
    if config.get("skipped_blocks"):
        trunk.skip_blocks(config["skipped_blocks"])
    student = LowResolutionStudent(trunk, config["search_size"], size, train_from=train_from)
    name = ("osnet." if student.trunk_name.startswith("osnet") else "port.weights.") + student.pooling_kernel
    state[name] = resize_pooling_kernel(state[name], (size[0] // 16, size[1] // 16))
    student.load_state_dict(state)
    return student.eval()


class StudentCollator:
    """Examples `{"indices": [photos of one identity]}` -> K photos each (with replacement), each mirrored with
    probability 1/2, resized to the student's size, with the teacher's embedding of that same photo, mirrored or
    not; with `bank_size`, that many other teacher rows (plain or mirrored, drawn at random) as `bank_embeds`.
    With `stage_maps` (`stage_input_cache`'s plain and mirrored maps of every photo) it gives those maps as
    `stage_inputs` instead of reading pixels. Seeded per call, so a run repeats."""

    def __init__(self, paths: list[str], plain: np.ndarray, mirrored: np.ndarray, image_size: tuple[int, int],
                 instances_per_identity: int = 4, seed: int = 0, bank_size: int = 0,
                 stage_maps: tuple[np.ndarray, np.ndarray] | None = None):
        if not len(paths) == len(plain) == len(mirrored):
            raise ValueError(f"{len(paths)} photos, {len(plain)} plain and {len(mirrored)} mirrored teacher rows.")
        if stage_maps is not None and not len(stage_maps[0]) == len(stage_maps[1]) == len(paths):
            raise ValueError(f"{len(paths)} photos, {len(stage_maps[0])} plain and {len(stage_maps[1])} mirrored "
                             "stage maps.")
        self.stage_maps = stage_maps
        if not 0 <= bank_size <= 2 * len(paths):
            raise ValueError(f"`bank_size` is {bank_size}; it takes 0 to {2 * len(paths)} teacher rows.")
        self.paths, self.plain, self.mirrored, self.bank_size = paths, plain, mirrored, bank_size
        self.processor = AIOImageProcessor(size={"height": image_size[0], "width": image_size[1]})
        self.instances, self.seed, self.calls = instances_per_identity, seed, 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        picks = [index for example in examples for index in rng.choices(example["indices"], k=self.instances)]
        mirror = [rng.random() < 0.5 for _ in picks]
        teacher = np.stack([self.mirrored[i] if m else self.plain[i] for i, m in zip(picks, mirror)])
        batch = {"teacher_embeds": torch.from_numpy(teacher).float()}
        if self.stage_maps is not None:
            maps = np.stack([self.stage_maps[1][i] if m else self.stage_maps[0][i] for i, m in zip(picks, mirror)])
            batch["stage_inputs"] = torch.from_numpy(maps).float()
        else:
            images = [Image.open(self.paths[i]).convert("RGB") for i in picks]
            images = [ImageOps.mirror(image) if m else image for image, m in zip(images, mirror)]
            batch["pixel_values"] = self.processor(images, modality="rgb", return_tensors="pt")["pixel_values"]
        if self.bank_size:
            rows = np.sort(np.random.default_rng([self.seed, self.calls]).choice(
                2 * len(self.paths), self.bank_size, replace=False))
            bank = np.concatenate([self.plain[rows[rows < len(self.paths)]],
                                   self.mirrored[rows[rows >= len(self.paths)] - len(self.paths)]])
            batch["bank_embeds"] = torch.from_numpy(bank).float()
        return batch


def teacher_targets(paths: list[str], model: str, cache_dir: Path, backend: str = "openvino", batch_size: int = 64
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's (an AIO checkpoint, through `backend`) RGB embeddings of every photo as it is and mirrored, in
    float16; cached in `cache_dir` under a digest of the model name and the photo list."""
    from ..search import AIOSearcher

    digest = hashlib.sha1(json.dumps([model, backend, paths]).encode()).hexdigest()[:12]
    files = [cache_dir / f"teacher-{digest}-{kind}.npy" for kind in ("plain", "mirrored")]
    if all(f.is_file() for f in files):
        return tuple(np.load(f, allow_pickle=False) for f in files)
    searcher = AIOSearcher.from_pretrained(model, batch_size=batch_size, backend=backend)
    plain, mirrored = [], []
    for start in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + batch_size]]
        plain.append(searcher.embed(rgb=images).astype(np.float16))
        mirrored.append(searcher.embed(rgb=[ImageOps.mirror(image) for image in images]).astype(np.float16))
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = (np.concatenate(plain), np.concatenate(mirrored))
    for f, array in zip(files, arrays):  # written whole, then renamed: a broken run leaves no half-written cache
        partial = f.with_suffix(".partial.npy")
        np.save(partial, array, allow_pickle=False)
        os.replace(partial, f)
    return arrays


def stage_input_cache(student: LowResolutionStudent, paths: list[str], cache_dir: Path, batch_size: int = 32
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The input maps of the student's `train_from` stage for every photo as it is and mirrored (float16,
    memory-mapped), computed once under bf16 autocast by its frozen lower layers; cached in `cache_dir` under a
    digest of the photos, the input size, the stage and those layers' weights, each file written whole first."""
    if student.train_from is None:
        raise ValueError("a stage-input cache needs a student made with `train_from`.")
    frozen = hashlib.sha1(json.dumps([paths, student.image_size, student.train_from]).encode())
    for tensor in student.frozen_tensors():
        frozen.update(tensor.detach().float().numpy().tobytes())
    digest = frozen.hexdigest()[:12]
    files = [cache_dir / f"{student.train_from}-{digest}-{kind}.npy" for kind in ("plain", "mirrored")]
    if not all(f.is_file() for f in files):
        _write_stage_inputs(student, paths, files, batch_size)
    return tuple(np.load(f, mmap_mode="r", allow_pickle=False) for f in files)


def _write_stage_inputs(student: LowResolutionStudent, paths: list[str], files: list[Path], batch_size: int) -> None:
    """Each photo read once; its plain and mirrored maps go to `files` (partial files, renamed when whole)."""
    processor = AIOImageProcessor(size={"height": student.image_size[0], "width": student.image_size[1]})
    files[0].parent.mkdir(parents=True, exist_ok=True)
    partials = [f.with_suffix(".partial.npy") for f in files]
    arrays: list[np.ndarray] = []
    for start in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + batch_size]]
        for kind, views in enumerate((images, [ImageOps.mirror(image) for image in images])):
            pixels = processor(views, modality="rgb", return_tensors="pt")["pixel_values"]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                maps = student.stage_inputs(pixels).float().numpy()
            if len(arrays) <= kind:
                arrays.append(np.lib.format.open_memmap(partials[kind], mode="w+", dtype=np.float16,
                                                        shape=(len(paths), *maps.shape[1:])))
            arrays[kind][start:start + len(maps)] = maps
    for array, partial, final in zip(arrays, partials, files):
        array.flush()
        os.replace(partial, final)


class StudentEmbeds(nn.Module):
    """The student as a function of its pixels alone: what an exported graph computes."""

    def __init__(self, student: LowResolutionStudent):
        super().__init__()
        self.student = student

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.student(pixel_values).embeds


def export_onnx(student: LowResolutionStudent, example: torch.Tensor, path: str | Path) -> Path:
    """The student as an ONNX graph of its pixels (`StudentEmbeds`; any batch), traced on `example`."""
    return export_pixels_onnx(StudentEmbeds(student.eval()), example, path)


def export_int8(student: LowResolutionStudent, calibration: list[torch.Tensor], folder: str | Path) -> Path:
    """The student's int8 OpenVINO graph (`export.export_int8_openvino`: the recipe the shipped RGB gallery encoder
    uses), calibrated on `calibration` (batches of training photos at the student's size), as
    `folder/student-int8.xml`. Needs `nncf`."""
    final = Path(folder) / INT8_NAME
    export_int8_openvino(StudentEmbeds(student.eval()), calibration, final)
    return final


def balanced_part_scales(targets: np.ndarray, part_sizes: list[int], weights: list[float] | None = None
                         ) -> np.ndarray:
    """Per-dimension scales that give each part of the teacher's search vector (ReID, text-aligned, second RGB trunk:
    `part_sizes`) the same mean energy over `targets` (or energies in the ratio of `weights`). Why: in an RGB
    photo's vector the text-aligned part holds about 7% of the energy, so a student fitted to the whole vector
    reproduces it poorly, and text queries, which read mostly that part, lost 8.6 Rank-1 against its gallery
    (docs/experiments.md, thirteenth session)."""
    if sum(part_sizes) != targets.shape[1]:
        raise ValueError(f"parts of {part_sizes} do not add up to the targets' {targets.shape[1]} dimensions.")
    weights = [1.0] * len(part_sizes) if weights is None else [float(w) for w in weights]
    if len(weights) != len(part_sizes) or min(weights) <= 0:
        raise ValueError(f"part weights {weights}: one positive weight for each of the {len(part_sizes)} parts.")
    bounds, scales = np.cumsum([0, *part_sizes]), np.ones(targets.shape[1], np.float32)
    for start, end, weight in zip(bounds[:-1], bounds[1:], weights):
        energy = float(np.square(targets[:, start:end].astype(np.float32)).sum(1).mean())
        scales[start:end] = np.sqrt(weight / sum(weights) / max(energy, 1e-12))
    return scales


def identity_examples(identities: list[str]) -> list[dict[str, list[int]]]:
    """One example per identity with at least two photos: the indices of its photos."""
    photos: dict[str, list[int]] = {}
    for index, identity in enumerate(identities):
        photos.setdefault(identity, []).append(index)
    return [{"indices": indices} for _, indices in sorted(photos.items()) if len(indices) >= 2]


def distil_student(student: LowResolutionStudent, collator: StudentCollator, examples: list[dict[str, list[int]]],
                   output_dir: str | Path, steps: int, learning_rate: float = 1e-4, warmup_steps: int = 50,
                   identities_per_batch: int = 16, seed: int = 42, bf16: bool = True, save_steps: int = 0,
                   resume: bool = False) -> list[dict[str, float]]:
    """Trains `student` in place: AdamW (the map at 10x the trunk's rate, weight decay 5e-4), linear warm-up then
    cosine decay to zero, no gradient clipping, bf16 autocast; Trainer checkpoints every `save_steps`, `resume`
    goes on from the last. Returns the loss log. The weights stay in their own memory layout (a checkpoint stores
    contiguous tensors only; the port's are 5-D), and OSNet turns its activations channels-last itself."""
    if len(examples) < identities_per_batch:
        raise ValueError(f"distillation needs {identities_per_batch} identities with two photos, got {len(examples)}.")
    optimizer = torch.optim.AdamW([{"params": student.trunk.parameters(), "lr": learning_rate},
                                   {"params": student.to_search_space.parameters(), "lr": 10 * learning_rate}],
                                  weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, steps, warmup_steps, "cosine"))
    student.train()
    log = train_trunk_in_place(student.trunk, student, examples, collator, output_dir, steps, identities_per_batch,
                               seed, optimizers=(optimizer, scheduler), bf16=bf16, channels_last=False,
                               save_steps=save_steps, resume=resume, max_grad_norm=0.0)
    student.eval()
    return log


def run(args) -> dict[str, Any]:
    """`scripts/low_resolution_student.py`: teacher targets for the training photos of `args.split_file` (its
    development identities and the cross-domain source left out, as for every training run), the student (new, its
    map fitted on 4,096 photos, or `args.init_from`'s), distillation, the folder written; returns its metadata."""
    from ..training.recipe import calibration_photos, shared_recipe

    if args.part_weights and not args.balance_parts:
        raise ValueError("--part-weights sets the ratio of --balance-parts; give both.")
    torch.set_num_threads(args.threads)
    records = shared_recipe(args.split_file, None, 42)
    paths, identities = [r["image"] for r in records], [r["identity"] for r in records]
    plain, mirrored = teacher_targets(paths, args.model, args.output_dir / "teacher", args.backend)
    size = args.image_size
    metadata: dict[str, Any] = {"teacher": args.model, "teacher_backend": args.backend, "steps": args.steps,
                                "learning_rate": args.learning_rate, "training_photos": len(paths),
                                "bank_size": args.bank_size, "bank_weight": args.bank_weight,
                                "train_from": args.train_from, "seed": args.seed}
    if args.init_from:
        student = load_student(args.init_from, size, args.train_from)
        student.bank_weight = args.bank_weight
        metadata["init_from"] = str(args.init_from)
    else:
        student = LowResolutionStudent(load_trunk(args.trunk), plain.shape[1], size, bank_weight=args.bank_weight,
                                       train_from=args.train_from)
    if args.skip_blocks:  # before the map is fitted: it is fitted to the shallower trunk
        if not student.trunk_name.startswith("osnet"):
            raise ValueError(f"--skip-blocks needs an OSNet trunk, not {student.trunk_name}.")
        student.osnet.skip_blocks(args.skip_blocks)
    if not args.init_from:
        sample = np.sort(np.random.default_rng(0).choice(len(paths), min(4096, len(paths)), replace=False))
        batches = rgb_pixel_batches([paths[i] for i in sample], size, 128)
        metadata["fitted_map_cosine"] = student.fit_search_map(batches, torch.from_numpy(plain[sample]), bf16=True)
    scales = None
    if args.balance_parts:  # train toward targets whose parts weigh alike, then fold the scales back into the map
        from ..configuration_aio import AIOConfig

        teacher = AIOConfig.from_pretrained(args.model)
        parts = [p for p in (teacher.embedding_size, teacher.text_alignment_size, teacher.second_rgb_trunk_size) if p]
        scales = balanced_part_scales(plain, parts, args.part_weights)
        plain, mirrored = plain * scales, mirrored * scales
        student.scale_search_map(torch.from_numpy(scales))
        metadata["balanced_parts"] = parts
        if args.part_weights:
            metadata["part_weights"] = list(args.part_weights)
    if args.steps:
        stage_maps = stage_input_cache(student, paths, args.output_dir / "stage-inputs") if args.train_from else None
        collator = StudentCollator(paths, plain, mirrored, size, seed=args.seed, bank_size=args.bank_size,
                                   stage_maps=stage_maps)
        log = distil_student(student, collator, identity_examples(identities), args.output_dir / "trainer",
                             args.steps, args.learning_rate, seed=args.seed, save_steps=args.save_steps,
                             resume=args.resume)
        metadata |= {"first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]} if log else {}
    if scales is not None:
        student.scale_search_map(torch.from_numpy(1.0 / scales))
    student.save_pretrained(args.output_dir, metadata)
    if args.int8:  # calibrated as the shipped RGB gallery encoder is
        calibration = rgb_pixel_batches(calibration_photos(), size, 32)
        print(f"int8 graph: {export_int8(student, calibration, args.output_dir)}")
    print(json.dumps(metadata, indent=2))
    print(f"score it: python scripts/evaluate_reid.py --model low-res-student{'-int8' if args.int8 else ''}:"
          f"{args.output_dir} --dataset pooled --root ../shared/data/CUHK-PEDES --query-modalities rgb "
          "--split-file splits/cross_domain_cuhk01.json")
    return metadata


__all__ = ["balanced_part_scales", "load_trunk", "TRUNKS", "resize_pooling_kernel", "pooling_kernel_name",
           "stage_input_nodes", "LowResolutionStudent", "load_student", "StudentCollator", "teacher_targets",
           "stage_input_cache", "StudentEmbeds", "export_onnx", "export_int8", "identity_examples", "distil_student",
           "run", "POOLING_GRID", "STAGES", "INT8_NAME"]
