"""AIO's tokenizers and the query sequence: per-modality modules that map each input into the frozen encoder's token
space (an IBN conv stem or an adapter on an OSNet trunk for images, word-piece embeddings for text), and
`AIOEmbeddings`, which joins a learnable [CLS] and the tokens of every modality present into one sequence.

Part of the remote-code unit: imports only torch and its siblings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_aio import IMAGE_MODALITIES, MODALITIES, AIOConfig
from .osnet import OSNet


class AIOInstanceBatchNorm(nn.Module):
    """IBN-a normalisation (Pan et al., ECCV 2018): instance norm on half the channels removes appearance style
    (colour, contrast) that differs across modalities and cameras; batch norm on the rest keeps content."""

    def __init__(self, channels: int):
        super().__init__()
        self.instance_channels = channels // 2
        self.instance_norm = nn.InstanceNorm2d(self.instance_channels, affine=True)
        self.batch_norm = nn.BatchNorm2d(channels - self.instance_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        styled, content = torch.split(x, [self.instance_channels, x.shape[1] - self.instance_channels], dim=1)
        return torch.cat([self.instance_norm(styled.contiguous()), self.batch_norm(content.contiguous())], dim=1)


class AIOConvStemTokenizer(nn.Module):
    """The paper's image tokenizer: a light IBN conv stem whose output grid (stride `patch_size`) becomes tokens.

    A convolutional stem instead of a linear patch projection gives each token local texture and edge evidence,
    which is what sketches and IR share with RGB."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        width = config.stem_width
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False),
            AIOInstanceBatchNorm(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]
        for _ in range(int(math.log2(config.patch_size)) - 2):
            layers += [
                nn.Conv2d(width, width * 2, kernel_size=3, stride=2, padding=1, bias=False),
                AIOInstanceBatchNorm(width * 2),
                nn.ReLU(inplace=True),
            ]
            width *= 2
        self.stem = nn.Sequential(*layers)
        self.projection = nn.Conv2d(width, config.hidden_size, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        grid = self.projection(self.stem(pixel_values))
        return grid.flatten(2).transpose(1, 2)  # (B, rows * cols, H)


class AIOOSNetAdapter(nn.Module):
    """Per-modality adapter on the shared OSNet trunk: projects its pooled grid features and its global ReID
    embedding into the encoder's token space. Cheap to train, so a pretrained ReID trunk serves every modality."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        self.grid_projection = nn.Linear(config.osnet_channels[-1], config.hidden_size)
        self.global_projection = nn.Linear(OSNet.embedding_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size)
        self.grid = tuple(config.osnet_token_grid)

    def forward(self, feature_map: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        grid = F.adaptive_avg_pool2d(feature_map, self.grid).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.global_projection(embedding)[:, None], self.grid_projection(grid)], dim=1)
        return self.layer_norm(tokens)


class AIOTextTokenizer(nn.Module):
    """Word-piece embeddings (initialised from MiniLM by `build_checkpoint.py`) with their own position table."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.max_text_length, config.hidden_size))
        self.layer_norm = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        length = input_ids.shape[1]
        return self.layer_norm(self.word_embeddings(input_ids) + self.position_embeddings[:, :length])


class AIOThermalGate(nn.Module):
    """Tells a thermal (LWIR) image from a near-infrared or grayscale one, per image, so that an IR query reads the
    IR trunk (`config.osnet_modality_trunks`, bound on real thermal crops) when it is thermal and the shared trunk
    (which reads near-infrared well) otherwise; `AIOProcessor` keeps one `ir` modality. A logistic regression over
    the shared trunk's unit-length embedding of the image and five statistics of its grey pixels (the processor has
    made every IR image grey; a thermal crop is a smooth, bright or, black-hot, dark body on a plainer scene),
    fitted, not trained by gradient, by `training.thermal_gate`. Unfitted, it never fires."""

    num_statistics = 5

    def __init__(self, embedding_size: int = 256):
        super().__init__()
        size = embedding_size + self.num_statistics
        self.register_buffer("feature_mean", torch.zeros(size))
        self.register_buffer("feature_scale", torch.ones(size))
        self.register_buffer("weight", torch.zeros(size))
        self.register_buffer("bias", torch.tensor(-30.0))

    @staticmethod
    def statistics(pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 5): centre-to-border contrast, texture and bright-centre share (each relative to the image's spread),
        the log of that spread and the mean level, on a 64x32 grey version of the normalised pixels."""
        grey = F.adaptive_avg_pool2d(pixel_values.float().mean(dim=1, keepdim=True), (64, 32))[:, 0]
        spread = grey.flatten(1).std(dim=1) + 1e-3
        level = grey.flatten(1).mean(dim=1)
        centre = grey[:, 8:58, 8:24]
        border = torch.cat([grey[:, :, :5], grey[:, :, -5:]], dim=2)
        contrast = (centre.flatten(1).mean(dim=1) - border.flatten(1).mean(dim=1)).abs() / spread
        smooth = F.avg_pool2d(grey[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
        texture = (grey - smooth).abs().flatten(1).mean(dim=1) / spread
        bright = (centre.flatten(1) > (level + spread)[:, None]).float().mean(dim=1)
        return torch.stack([contrast, texture, bright, spread.log(), level], dim=1)

    @classmethod
    def features(cls, pixel_values: torch.Tensor, shared_embedding: torch.Tensor) -> torch.Tensor:
        """(B, embedding_size + 5): what the gate reads, from the pixels and the shared trunk's embedding of them."""
        return torch.cat([F.normalize(shared_embedding.float(), dim=-1), cls.statistics(pixel_values)], dim=1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) the regression's log-odds that each image is thermal, from its `features`."""
        return (features - self.feature_mean) / self.feature_scale @ self.weight + self.bias

    def forward(self, pixel_values: torch.Tensor, shared_embedding: torch.Tensor) -> torch.Tensor:
        """(B,) the probability that each image is thermal."""
        return torch.sigmoid(self.logits(self.features(pixel_values, shared_embedding))).to(pixel_values.dtype)


class AIOEmbeddings(nn.Module):
    """Builds the one sequence of a query: [CLS] + tokens of each present modality, each tagged with a learnable
    modality embedding (so the frozen encoder can tell a sketch token from an RGB token) and a position."""

    def __init__(self, config: AIOConfig):
        super().__init__()
        hidden = config.hidden_size
        if config.image_tokenizer == "osnet":
            self.image_backbone = OSNet(channels=config.osnet_channels)
            self.modality_backbones = nn.ModuleDict({m: OSNet(channels=config.osnet_channels)
                                                     for m in config.osnet_modality_trunks})
            self.image_tokenizers = nn.ModuleDict({m: AIOOSNetAdapter(config) for m in IMAGE_MODALITIES})
            self.thermal_gate = AIOThermalGate(OSNet.embedding_size) if config.ir_thermal_gate else None
        else:
            self.image_backbone = None
            self.thermal_gate = None
            self.modality_backbones = nn.ModuleDict()
            self.image_tokenizers = nn.ModuleDict({m: AIOConvStemTokenizer(config) for m in IMAGE_MODALITIES})
        self.text_tokenizer = AIOTextTokenizer(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.modality_embeddings = nn.Embedding(len(MODALITIES), hidden)
        self.image_position_embeddings = nn.Parameter(torch.zeros(1, config.num_image_tokens, hidden))

    def image_tokens(self, modality: str, pixel_values: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, tokens, H) of one image modality and, with the OSNet trunk, its (B, 256) ReID embedding and the
        trunk's stride-16 feature map."""
        if self.image_backbone is not None:
            feature_map, embedding = self.trunk(modality)(pixel_values)
            if modality == "ir" and self.thermal_gate is not None:  # near-infrared images read the shared trunk
                shared_map, shared_embedding = self.image_backbone(pixel_values)
                thermal = self.thermal_gate(pixel_values, shared_embedding)
                feature_map = torch.lerp(shared_map, feature_map, thermal[:, None, None, None])
                embedding = torch.lerp(shared_embedding, embedding, thermal[:, None])
            return self.image_tokenizers[modality](feature_map, embedding), embedding, feature_map
        return self.image_tokenizers[modality](pixel_values), None, None

    def trunk(self, modality: str) -> OSNet:
        """The OSNet trunk that reads `modality`: its own copy (`config.osnet_modality_trunks`) or the shared one."""
        if modality in self.modality_backbones:
            return self.modality_backbones[modality]
        return self.image_backbone

    def tokenize(self, modality_inputs: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Tokens (B, T_m, H) of each modality, with positions, and, with the OSNet tokenizer, each image's trunk
        embedding (B, 256) and feature map (B, C, 16, 8); computed once and reusable across query subsets."""
        tokens, image_globals, feature_maps = {}, {}, {}
        for modality, value in modality_inputs.items():
            if modality == "text":
                tokens["text"] = self.text_tokenizer(value)
            else:
                image_tokens, embedding, feature_map = self.image_tokens(modality, value)
                tokens[modality] = image_tokens + self.image_position_embeddings
                if embedding is not None:
                    image_globals[modality] = embedding
                    feature_maps[modality] = feature_map
        return tokens, image_globals, feature_maps

    def assemble(
        self, tokens: dict[str, torch.Tensor], text_attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The query sequence (B, 1+T, H): [CLS] then each present modality's tokens tagged with its modality
        embedding, in MODALITIES order; its attention mask (B, 1+T) and per-position modality ids (-1 = [CLS])."""
        batch_size = next(iter(tokens.values())).shape[0]
        device = self.cls_token.device
        sequences = [self.cls_token.expand(batch_size, -1, -1)]
        masks = [torch.ones(batch_size, 1, dtype=torch.long, device=device)]
        modality_ids = [torch.full((1,), -1, dtype=torch.long, device=device)]
        for index, modality in enumerate(MODALITIES):
            if modality not in tokens:
                continue
            value = tokens[modality]
            if modality == "text":
                mask = text_attention_mask.long()
            else:
                mask = torch.ones(value.shape[:2], dtype=torch.long, device=device)
            type_id = torch.tensor(index, device=device)
            sequences.append(value + self.modality_embeddings(type_id))
            masks.append(mask)
            modality_ids.append(type_id.repeat(value.shape[1]))
        return torch.cat(sequences, dim=1), torch.cat(masks, dim=1), torch.cat(modality_ids)


__all__ = ["AIOInstanceBatchNorm", "AIOConvStemTokenizer", "AIOOSNetAdapter", "AIOTextTokenizer", "AIOThermalGate",
           "AIOEmbeddings"]
