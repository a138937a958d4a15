"""The text-aligned part of AIO's search vector: the image head (on the shared OSNet trunk's feature map), the
text head (on the frozen encoder's outputs at a caption's words, with optional context layers) and the kinds of
query that weigh the part. `AIOModel` joins the part to its ReID embedding; `modeling_aio.training.text_alignment`
trains both heads. Imports only torch, `configuration_aio` and (for tuned encoder layers) transformers, so it
travels with the remote-code checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_aio import AIOConfig


def bidirectional_layer_mask(encoder_config, hidden_states: torch.Tensor, attention_mask: torch.Tensor
                             ) -> torch.Tensor | None:
    """The attention mask that the encoder's layers take for a (B, T) padding mask. While exporting it is always
    materialised: a trace would otherwise freeze "no padding" into the graph."""
    from transformers.masking_utils import create_bidirectional_mask

    exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    return create_bidirectional_mask(config=encoder_config, inputs_embeds=hidden_states, attention_mask=attention_mask,
                                     allow_is_bidirectional_skip=not exporting)


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


def encoder_layer_copies(config: AIOConfig, count: int) -> nn.ModuleList:
    """`count` layers of the encoder's own kind (untrained; `AIOModel` copies the top ones into them)."""
    from transformers import AutoModel

    if not count:
        return nn.ModuleList()
    encoder_config = config.encoder_config.__class__.from_dict({**config.encoder_config.to_dict(),
                                                                "num_hidden_layers": count, "vocab_size": 2})
    return AutoModel.from_config(encoder_config).encoder.layer


class AIOTextAlignmentTextHead(nn.Module):
    """The text side of the text-aligned part: each encoder output at a text position (after the optional tuned
    encoder layers, `text_alignment_tuned_layers`, and `AIOTextContextLayer`s) goes through LayerNorm and a GELU
    layer; the max and mean over the caption's real positions are projected to `text_alignment_size`. The max lets
    single attribute words (a colour, a garment) reach the vector, where a sentence mean dilutes them."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        hidden = config.text_alignment_hidden
        self.encoder_config = config.encoder_config
        self.tuned_layers = encoder_layer_copies(config, config.text_alignment_tuned_layers)
        self.context = nn.ModuleList(AIOTextContextLayer(config) for _ in range(config.text_alignment_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.text_alignment_dropout)
        self.expand = nn.Linear(config.hidden_size, hidden)
        self.output = nn.Linear(2 * hidden, config.text_alignment_size)

    def forward(self, text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """`text_states`: (B, T, H) encoder outputs at the caption's positions (with tuned layers: the outputs of
        the frozen encoder's layers below them, `AIOModel.text_alignment_states`); `text_mask`: its padding."""
        if len(self.tuned_layers):
            layer_mask = bidirectional_layer_mask(self.encoder_config, text_states, text_mask)
            for layer in self.tuned_layers:
                text_states = layer(text_states, layer_mask)
        for layer in self.context:
            text_states = layer(text_states, text_mask)
        positions = F.gelu(self.expand(self.dropout(self.norm(text_states))))
        real = text_mask.to(positions.dtype)[..., None]
        largest = positions.masked_fill(real == 0, torch.finfo(positions.dtype).min).amax(dim=1)
        mean = (positions * real).sum(1) / real.sum(1).clamp(min=1.0)
        return self.output(self.dropout(torch.cat([largest, mean], dim=1)))


#: The kinds of query that weigh the text-aligned part, in the order of `AIOModel.alignment_shares`.
ALIGNMENT_QUERY_KINDS: tuple[str, ...] = ("rgb", "text", "text+ir", "text+sketch")


__all__ = ["AIOTextAlignmentImageHead", "AIOTextContextLayer", "AIOTextAlignmentTextHead", "ALIGNMENT_QUERY_KINDS",
           "encoder_layer_copies", "bidirectional_layer_mask"]
