"""The text-aligned part of AIO's search vector: the image head (on the shared OSNet trunk's feature map), the
text head (on the frozen encoder's outputs at a caption's words, with optional context layers) and the kinds of
query that weigh the part. `AIOModel` joins the part to its ReID embedding; `modeling_aio.training.text_alignment`
trains both heads. Imports only torch and `configuration_aio`, so it travels with the remote-code checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_aio import AIOConfig


class AIOTextAlignmentImageHead(nn.Module):
    """The image side of the text-aligned part: a 1x1 convolution widens an OSNet trunk's stride-16 feature map (the
    shared trunk's or the second RGB trunk's: `AIOConfig.text_alignment_trunk`), and its global max and mean over
    positions are projected to `text_alignment_size`. The max keeps what one region shows (a bag, shoes), which a
    caption names and a pooled ReID embedding blurs."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        hidden = config.text_alignment_hidden
        self.expand = nn.Conv2d(config.text_alignment_channels, hidden, kernel_size=1)
        self.norm = nn.BatchNorm2d(hidden)
        self.dropout = nn.Dropout(config.text_alignment_dropout)
        self.output = nn.Linear(2 * hidden, config.text_alignment_size)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        positions = F.relu(self.norm(self.expand(feature_map)))
        pooled = torch.cat([positions.amax(dim=(2, 3)), positions.mean(dim=(2, 3))], dim=1)
        return self.output(self.dropout(pooled))


class AIOTextContextLayer(nn.Module):
    """A pre-norm self-attention + MLP block over the caption's encoder outputs (padding masked), trained with the
    text head: the frozen encoder's word outputs are general-purpose, this lets them exchange what matters here."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.encoder_config.num_attention_heads
        self.attention_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attention_output = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.dropout = nn.Dropout(config.text_alignment_dropout)

    def forward(self, states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = states.shape
        q, k, v = (t.reshape(batch, length, self.num_heads, -1).transpose(1, 2)
                   for t in self.qkv(self.attention_norm(states)).chunk(3, dim=-1))
        keep = text_mask.bool()[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                                  dropout_p=self.dropout.p if self.training else 0.0)
        states = states + self.dropout(self.attention_output(attended.transpose(1, 2).reshape(batch, length, width)))
        return states + self.dropout(self.mlp(self.mlp_norm(states)))


class AIOTextAlignmentTextHead(nn.Module):
    """The text side of the text-aligned part: each encoder output at a text position (after the optional
    `AIOTextContextLayer`s) goes through LayerNorm and a GELU layer; the max and mean over the caption's real
    positions are projected to `text_alignment_size`. The max lets single attribute words (a colour, a garment)
    reach the vector, where a sentence mean dilutes them."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        hidden = config.text_alignment_hidden
        self.context = nn.ModuleList(AIOTextContextLayer(config) for _ in range(config.text_alignment_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.text_alignment_dropout)
        self.expand = nn.Linear(config.hidden_size, hidden)
        self.output = nn.Linear(2 * hidden, config.text_alignment_size)

    def forward(self, text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.context:
            text_states = layer(text_states, text_mask)
        positions = F.gelu(self.expand(self.dropout(self.norm(text_states))))
        real = text_mask.to(positions.dtype)[..., None]
        largest = positions.masked_fill(real == 0, torch.finfo(positions.dtype).min).amax(dim=1)
        mean = (positions * real).sum(1) / real.sum(1).clamp(min=1.0)
        return self.output(self.dropout(torch.cat([largest, mean], dim=1)))


#: The kinds of query that weigh the text-aligned part, in the order of `AIOModel.alignment_shares`.
ALIGNMENT_QUERY_KINDS: tuple[str, ...] = ("rgb", "text", "text+ir", "text+sketch")


__all__ = ["AIOTextAlignmentImageHead", "AIOTextContextLayer", "AIOTextAlignmentTextHead", "ALIGNMENT_QUERY_KINDS"]
