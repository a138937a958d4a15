"""AIO's fast RGB gallery encoder: 0277's network (OSNet x1.0) read at a smaller size plus a linear map into the
model's search space, distilled from the model's own RGB search embedding of the same photos
(`modeling_aio.experiments.low_resolution_student`). It indexes RGB photos into the space that text, sketch and IR
queries search, in int8 at 2.7x the images/s of Open Model Zoo 0277 at 160x80 (`export.BACKENDS`, "openvino-int8";
`benchmarks/RESULTS.md`); a search re-scores its top hits by the full model, so the index only has to find them.
Imports only torch and its siblings, so it travels with the remote-code checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_aio import OSNET_0267_CHANNELS, AIOConfig
from .osnet import OSNet

#: OSNet x1.0: the stage widths of Open Model Zoo 0277, which the encoder starts from.
OSNET_X1_CHANNELS: tuple[int, int, int, int] = tuple(2 * c for c in OSNET_0267_CHANNELS)


class AIORGBGalleryEncoder(nn.Module):
    """OSNet x1.0 at `config.rgb_gallery_image_size` (its learned global pooling sized to the stride-16 map), less
    the blocks of `config.rgb_gallery_skipped_blocks`, and a linear map of its 256-d embedding to the
    `search_embedding_size`-d search space; returns unit vectors."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        height, width = config.rgb_gallery_image_size
        self.image_size = (height, width)
        self.osnet = OSNet(feature_size=(height // 16, width // 16), channels=OSNET_X1_CHANNELS,
                           skipped_blocks=config.rgb_gallery_skipped_blocks)
        self.to_search_space = nn.Linear(OSNet.embedding_size, config.search_embedding_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[-2:]) != self.image_size:
            raise ValueError(f"the RGB gallery encoder reads (B, 3, {self.image_size[0]}, {self.image_size[1]}) "
                             f"pixel values, got {tuple(pixel_values.shape)}.")
        return F.normalize(self.to_search_space(self.osnet(pixel_values)[1]).float(), dim=-1)


__all__ = ["AIORGBGalleryEncoder", "OSNET_X1_CHANNELS"]
