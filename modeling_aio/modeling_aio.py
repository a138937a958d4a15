"""AIO: one frozen transformer encodes RGB, infrared, sketch and text queries (Li et al., CVPR 2024).

Per-modality tokenizers map every input into the encoder's token space; a learnable [CLS] token plus the tokens of
every modality present in a query form one sequence, encoded in one forward of the frozen shared encoder. Only the
tokenizers, embeddings, projection and heads train.

This file imports only transformers, torch and its siblings `configuration_aio`, `checks_aio`, `embeddings_aio`,
`text_alignment_aio`, `rgb_gallery_aio`, `losses` and `osnet`, so that `save_pretrained` copies them next to the
weights and `trust_remote_code=True` loading works anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .losses import identity_cross_entropy, masked_attribute_cross_entropy, supervised_contrastive_binding_loss
from .configuration_aio import IMAGE_MODALITIES, MODALITIES, OSNET_0267_CHANNELS, AIOConfig
from .checks_aio import PIXEL_KEYS, check_checkpoint_folder, finite_embeddings, query_inputs
from .embeddings_aio import AIOEmbeddings, AIOTextTokenizer
from .osnet import OSNet, OSNetTop
from .rgb_gallery_aio import AIORGBGalleryEncoder
from .text_alignment_aio import (  # noqa: F401 (ALIGNMENT_QUERY_KINDS: re-exported)
    ALIGNMENT_QUERY_KINDS, AIOTextAlignmentImageHead, AIOTextAlignmentTextHead, bidirectional_layer_mask,
)



@dataclass
class AIOModelOutput(ModelOutput):
    """
    Args:
        embeds (`(B, D + A + S)`): L2-normalised query embeddings, the vectors to search with: the ReID part (D,
            `embedding_size`) and, with `text_alignment_size` A > 0, the text-aligned part, each weighed by the
            query kind's share (`AIOModel.alignment_shares`); then, with `second_rgb_trunk_share`, the second RGB
            trunk's part (S = 256, zero for queries without an RGB image).
        features (`(B, D)`): the ReID part before normalisation (what BNNeck and the identity head see).
        last_hidden_state (`(B, 1 + T, H)`): encoder output; position 0 is [CLS].
        modality_ids (`(1 + T,)`): which modality each position came from (-1 for [CLS]; else index in MODALITIES).
        attention_mask (`(B, 1 + T)`): 1 where a position is real, 0 for text padding.
        hidden_states (`tuple`, *optional*): per-layer states of the frozen encoder.
        projected_cls (`(B, D)`): the [CLS] projection alone, before the skips are added.
        text_pooled_output (`(B, H)`, *optional*): mean of the encoder outputs at the text positions (queries with
            text, `config.text_embedding_skip`), the input of the text skip.
        aligned_embeds (`(B, A)`, *optional*): the unit-length text-aligned vector of queries with RGB or text
            (`config.text_alignment_size`), before its share is applied.
    """

    embeds: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    modality_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    projected_cls: torch.FloatTensor | None = None
    text_pooled_output: torch.FloatTensor | None = None
    aligned_embeds: torch.FloatTensor | None = None


@dataclass
class AIOReIdOutput(ModelOutput):
    """
    Args:
        loss: weighted sum of the enabled head losses (present when `labels` are given).
        identity_loss / binding_loss / masked_attribute_loss: each head's loss, for logging.
        logits (`(B, num_identities)`): identity logits of the fused query.
        embeds (`(B, D)`): L2-normalised embeddings of the fused query.
    """

    loss: torch.FloatTensor | None = None
    identity_loss: torch.FloatTensor | None = None
    binding_loss: torch.FloatTensor | None = None
    masked_attribute_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeds: torch.FloatTensor | None = None


class AIOSharedEncoder(nn.Module):
    """The frozen pre-trained transformer, run on token sequences built by `AIOEmbeddings`.

    Any transformers model whose `encoder` takes `(hidden_states, attention_mask)` fits (DINOv2, ViT, BERT, and
    CLIP vision through `vision_model`). Its own patch/word embeddings are bypassed; its final norm is kept."""

    def __init__(self, encoder_config):
        super().__init__()
        backbone = AutoModel.from_config(encoder_config)
        backbone = getattr(backbone, "vision_model", backbone)
        if not hasattr(backbone, "encoder"):
            raise ValueError(f"{type(backbone).__name__} has no `encoder` module to use as AIO's shared encoder.")
        self.pre_norm = getattr(backbone, "pre_layrnorm", None) or nn.Identity()
        self.layers = backbone.encoder
        self.final_norm = getattr(backbone, "layernorm", None) or getattr(backbone, "post_layernorm", None)
        self.final_norm = self.final_norm or nn.Identity()
        self.config = backbone.config

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        hidden_states = self.pre_norm(hidden_states)
        mask = bidirectional_layer_mask(self.config, hidden_states, attention_mask)
        outputs = self.layers(hidden_states, attention_mask=mask, output_hidden_states=output_hidden_states)
        return self.final_norm(outputs.last_hidden_state), outputs.hidden_states

    def lower_layers(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, count: int) -> torch.Tensor:
        """The outputs of the first `count` layers alone (no final norm): what tuned copies of the layers above
        read (`text_alignment_tuned_layers`)."""
        hidden_states = self.pre_norm(hidden_states)
        mask = bidirectional_layer_mask(self.config, hidden_states, attention_mask)
        for layer in self.layers.layer[:count]:
            hidden_states = layer(hidden_states, mask)
        return hidden_states


class AIOPreTrainedModel(PreTrainedModel):
    config_class = AIOConfig
    config: AIOConfig
    base_model_prefix = "aio"
    main_input_name = "pixel_values_rgb"
    _supports_sdpa = True
    _no_split_modules = ["AIOSharedEncoder"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, AIOModel):
            for name in ("skip_log_weights", "skip_log_scales"):
                if hasattr(module, name):
                    nn.init.zeros_(getattr(module, name))
        if isinstance(module, AIOEmbeddings):
            for parameter in (module.cls_token, module.image_position_embeddings):
                nn.init.trunc_normal_(parameter, std=std)
            nn.init.trunc_normal_(module.modality_embeddings.weight, std=std)
        elif isinstance(module, AIOTextTokenizer):
            nn.init.trunc_normal_(module.position_embeddings, std=std)
            nn.init.trunc_normal_(module.word_embeddings.weight, std=std)
        elif isinstance(module, nn.Conv2d) and not _inside_frozen_encoder(self, module):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and not _inside_frozen_encoder(self, module):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)) and \
                not _inside_frozen_encoder(self, module):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                module.num_batches_tracked.zero_()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict: bool = True, **kwargs):
        """Loads safetensors only (pickled `.bin`/`.pt` checkpoints can execute code, so they are refused), and
        strictly: a weights file that is cut short, holds non-float weights, lacks weights the model needs or has
        weights it does not know is an error naming the file, never a model with random or cast parts. Only the
        training heads of `AIOForReIdentification` may be missing (they start fresh for fine-tuning) or left over
        (loading `AIOModel` from a training checkpoint). `strict=False` loads anyway, with transformers' report."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False is not supported: AIO loads safetensors checkpoints only.")
        kwargs["use_safetensors"] = True
        location = Path(str(pretrained_model_name_or_path))
        if location.is_file():
            raise OSError(f"{location}: pass a checkpoint folder; AIO loads weights from model.safetensors only.")
        if location.is_dir():
            check_checkpoint_folder(location)
        elif location.is_absolute() or str(pretrained_model_name_or_path).startswith((".", "~")):
            raise OSError(f"checkpoint folder {location} does not exist.")
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                  **kwargs)
        except RuntimeError as error:  # transformers' shape-mismatch error points at a report, not at the cause
            if "mismatched_sizes" not in str(error):
                raise
            raise OSError(f"{pretrained_model_name_or_path}: weight shapes differ from what config.json builds (is its "
                          "encoder_config missing or from another checkpoint?); the checkpoint does not fit "
                          f"{cls.__name__}.") from None
        heads = ("bnneck.", "identity_classifier.", "attribute_head.")
        problems = {kind: [k for k in info[kind] if not k.startswith(heads)]
                    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        problems = {kind: keys for kind, keys in problems.items() if keys}
        if strict and (problems or info["error_msgs"]):
            listing = "; ".join(f"{kind.replace('_', ' ')} {len(keys)} (e.g. {keys[:3]})" for kind, keys in problems.items())
            raise OSError(f"{pretrained_model_name_or_path}: the weights do not fit {cls.__name__}: "
                          f"{listing or info['error_msgs'][:3]}; the checkpoint is incomplete or of another model "
                          "(pass strict=False to load it anyway).")
        return (model, info) if wants_info else model

    def train(self, mode: bool = True):
        """Frozen means frozen: the shared encoder, and any other part with no trainable parameter (e.g. the
        tokenizers when only heads train), stays in eval mode: no dropout, no running-statistics updates."""
        super().train(mode)
        for module in self.modules():
            parameters = list(module.parameters())
            if isinstance(module, AIOSharedEncoder) or (parameters and not any(p.requires_grad for p in parameters)):
                module.eval()
        return self


def _inside_frozen_encoder(model: nn.Module, module: nn.Module) -> bool:
    encoders = [m for m in model.modules() if isinstance(m, AIOSharedEncoder)]
    return any(module is sub for encoder in encoders for sub in encoder.modules())


class AIOModel(AIOPreTrainedModel):
    """Embeds a query made of any subset of {rgb, ir, sketch, text} into one L2-normalised vector."""

    def __init__(self, config: AIOConfig):
        super().__init__(config)
        self.embeddings = AIOEmbeddings(config)
        self.encoder = AIOSharedEncoder(config.encoder_config)
        self.projection = nn.Linear(config.hidden_size, config.embedding_size)
        if config.text_embedding_skip:
            self.text_skip = nn.Linear(config.hidden_size, config.embedding_size)
            self.skip_log_weights = nn.Parameter(torch.zeros(len(MODALITIES)))
        if config.osnet_embedding_skip:
            self.skip_log_scales = nn.Parameter(torch.zeros(len(MODALITIES)))
        if config.text_alignment_size:
            self.text_alignment_image = AIOTextAlignmentImageHead(config)
            self.text_alignment_text = AIOTextAlignmentTextHead(config)
            # Share of the text-aligned part in the squared length of each kind of query (ALIGNMENT_QUERY_KINDS),
            # chosen by `training.text_alignment` on held-out people; 0 until then.
            self.register_buffer("alignment_shares", torch.zeros(len(ALIGNMENT_QUERY_KINDS)))
        if config.second_rgb_trunk_share:
            self.second_rgb_trunk = OSNet(channels=OSNET_0267_CHANNELS)
        if config.text_alignment_size and config.text_alignment_trunk == "tuned":
            branch = config.text_alignment_trunk_from  # None: a whole trunk; else its top stages
            self.text_alignment_rgb_trunk = (OSNet(channels=OSNET_0267_CHANNELS) if branch is None
                                             else OSNetTop(branch, OSNET_0267_CHANNELS))
        if config.rgb_gallery_image_size:  # trained apart, by distillation from this model's RGB embedding
            self.rgb_gallery_encoder = AIORGBGalleryEncoder(config)
        self.post_init()
        self.freeze_encoder()

    def freeze_encoder(self) -> None:
        """Freezes the encoder, the OSNet trunk (unless `config.train_image_backbone`), the per-modality trunk
        copies (they train in a stage of their own) and the second RGB trunk (never trained); gradients still flow
        through the encoder."""
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        if self.embeddings.image_backbone is not None and not self.config.train_image_backbone:
            self.embeddings.image_backbone.requires_grad_(False)
            self.embeddings.image_backbone.eval()
        self.embeddings.modality_backbones.requires_grad_(False)
        self.embeddings.modality_backbones.eval()
        for name in ("second_rgb_trunk", "rgb_gallery_encoder"):
            if hasattr(self, name):
                getattr(self, name).requires_grad_(False)
                getattr(self, name).eval()
        if hasattr(self, "text_alignment_rgb_trunk"):  # trained in the text-alignment stage only
            self.text_alignment_rgb_trunk.requires_grad_(False)
            self.text_alignment_rgb_trunk.eval()
            self.text_alignment_text.tuned_layers.requires_grad_(False)

    def forward(
        self,
        pixel_values_rgb: torch.Tensor | None = None,
        pixel_values_ir: torch.Tensor | None = None,
        pixel_values_sketch: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> AIOModelOutput:
        if kwargs:
            raise TypeError(
                f"AIOModel got unexpected inputs {sorted(kwargs)}; expected any of "
                f"{sorted(PIXEL_KEYS.values()) + ['input_ids', 'attention_mask']}."
            )
        modality_inputs, attention_mask = query_inputs(
            self.config, pixel_values_rgb, pixel_values_ir, pixel_values_sketch, input_ids, attention_mask)
        tokens, image_globals, feature_maps = self.embeddings.tokenize(modality_inputs)
        feature_maps, second_rgb = self.second_rgb_outputs(modality_inputs, feature_maps)
        return self.encode_tokens(tokens, attention_mask, image_globals, output_hidden_states, feature_maps,
                                  second_rgb)

    def second_rgb_outputs(self, modality_inputs: dict[str, torch.Tensor], feature_maps: dict[str, torch.Tensor]
                           ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Runs the RGB trunks beside the shared one on the query's RGB image, those the model has: returns the
        feature maps that `encode_tokens` reads (the RGB map replaced by the one the text-aligned image head reads,
        when `config.text_alignment_trunk` is `"second_rgb"` or `"tuned"`) and the second trunk's embedding (None
        without an RGB image or a second trunk). A tuned trunk that branches (`text_alignment_trunk_from`) reads the
        second trunk's lower stages, computed once for both."""
        branch = self.config.text_alignment_trunk_from
        if hasattr(self, "text_alignment_rgb_trunk") and "rgb" in modality_inputs and branch is None:
            feature_maps = {**feature_maps, "rgb": self.text_alignment_rgb_trunk(modality_inputs["rgb"])[0]}
        if not hasattr(self, "second_rgb_trunk") or "rgb" not in modality_inputs:
            return feature_maps, None
        if branch is None:
            second_map, second_embedding = self.second_rgb_trunk(modality_inputs["rgb"])
        else:
            below = self.second_rgb_trunk.features_before(modality_inputs["rgb"], branch)
            second_map = self.second_rgb_trunk.feature_map_from(below, branch)
            second_embedding = self.second_rgb_trunk.embedding_of(second_map)
            feature_maps = {**feature_maps, "rgb": self.text_alignment_rgb_trunk(below)}
        if self.config.text_alignment_trunk == "second_rgb":
            feature_maps = {**feature_maps, "rgb": second_map}
        return feature_maps, second_embedding

    def encode_tokens(
        self, tokens: dict[str, torch.Tensor], attention_mask: torch.Tensor | None = None,
        image_globals: dict[str, torch.Tensor] | None = None, output_hidden_states: bool = False,
        feature_maps: dict[str, torch.Tensor] | None = None, second_rgb_embedding: torch.Tensor | None = None,
    ) -> AIOModelOutput:
        """Encodes one query from per-modality tokens (`embeddings.tokenize`), so training can tokenise a batch
        once and encode every modality subset from the same tokens. With `text_alignment_size`, an RGB image's
        text-aligned vector needs its trunk feature map (`feature_maps`); without it the RGB image adds none. With
        `second_rgb_trunk_share`, the second RGB trunk's embedding of the query's RGB image
        (`second_rgb_embedding`) fills its part; without it that part stays zero."""
        sequence_tokens, token_mask, modality_ids = self.embeddings.assemble(tokens, attention_mask)
        sequence, hidden_states = self.encoder(sequence_tokens, token_mask, output_hidden_states=output_hidden_states)
        projected_cls = self.projection(sequence[:, 0])
        skips: dict[str, torch.Tensor] = {}
        if self.config.osnet_embedding_skip and image_globals:
            skips.update({m: self.image_skip(image_globals[m], m)
                          for m in IMAGE_MODALITIES if m in tokens and m in image_globals})
        text_pooled = None
        if self.config.text_embedding_skip and "text" in tokens:
            text_pooled = self.pool_text(sequence, token_mask, modality_ids)
            skips["text"] = self.text_skip(text_pooled)
        features = projected_cls + self.combine_skips(skips) if skips else projected_cls
        embeds, aligned = F.normalize(features, dim=-1), None
        if self.config.text_alignment_size:
            aligned = self.aligned_vector(tokens, sequence, token_mask, modality_ids, feature_maps or {})
            embeds = self.join_aligned(embeds, aligned, tokens)
        if self.config.second_rgb_trunk_share:
            embeds = self.join_second_rgb(embeds, second_rgb_embedding)
        return AIOModelOutput(
            embeds=embeds,
            features=features,
            last_hidden_state=sequence,
            modality_ids=modality_ids,
            attention_mask=token_mask,
            hidden_states=hidden_states,
            projected_cls=projected_cls,
            text_pooled_output=text_pooled,
            aligned_embeds=aligned,
        )

    def aligned_vector(self, tokens: dict[str, torch.Tensor], sequence: torch.Tensor, token_mask: torch.Tensor,
                       modality_ids: torch.Tensor, feature_maps: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, A) unit-length text-aligned vector of a query: the mean of its RGB image's and its text's (each
        unit-length), or None when it has neither."""
        parts = []
        if "rgb" in tokens and "rgb" in feature_maps:
            parts.append(F.normalize(self.text_alignment_image(feature_maps["rgb"]), dim=-1))
        if "text" in tokens:
            text_positions = modality_ids == MODALITIES.index("text")
            text_mask = token_mask[:, text_positions]
            states = self.text_alignment_states(tokens["text"], sequence[:, text_positions], text_mask)
            parts.append(F.normalize(self.text_alignment_text(states, text_mask), dim=-1))
        return F.normalize(torch.stack(parts).sum(0), dim=-1) if parts else None

    def text_alignment_states(self, text_tokens: torch.Tensor, encoded_text: torch.Tensor, text_mask: torch.Tensor
                              ) -> torch.Tensor:
        """What the text head reads: the shared encoder's outputs at the caption's positions (`encoded_text`), or,
        with `text_alignment_tuned_layers` k, the caption's own pass (its word embeddings, `text_tokens`) through
        the frozen encoder's layers below the top k (the head runs its tuned copies of the top k)."""
        tuned = self.config.text_alignment_tuned_layers
        if not tuned:
            return encoded_text
        return self.encoder.lower_layers(text_tokens, text_mask, self.config.encoder_config.num_hidden_layers - tuned)

    def join_aligned(self, reid: torch.Tensor, aligned: torch.Tensor | None, tokens: dict[str, torch.Tensor]
                     ) -> torch.Tensor:
        """The search vector (B, D + A), unit length: the unit ReID part times sqrt(1 - share) and the aligned part
        times sqrt(share), with the share of the query's kind (`alignment_shares`): RGB (with or without text, as
        the gallery's side), text alone, or text with IR or a sketch (with both, the smaller share). A query with
        neither text nor RGB (or no aligned vector) keeps its ReID part whole, so its ranking of a gallery is what
        it was without the aligned part."""
        if aligned is None:
            return F.pad(reid, (0, self.config.text_alignment_size))
        if "rgb" in tokens or set(tokens) == {"text"}:
            kinds = ["rgb" if "rgb" in tokens else "text"]
        else:
            kinds = [f"text+{m}" for m in ("ir", "sketch") if m in tokens]
        shares = self.alignment_shares[[ALIGNMENT_QUERY_KINDS.index(kind) for kind in kinds]]
        share = shares.min().clamp(0.0, 1.0).to(reid.dtype)
        return torch.cat([reid * (1 - share).sqrt(), aligned * share.sqrt()], dim=-1)

    def join_second_rgb(self, embeds: torch.Tensor, second_rgb: torch.Tensor | None) -> torch.Tensor:
        """The search vector with the second RGB trunk's part (`config.second_rgb_trunk_share` s): the unit vector
        so far times sqrt(1 - s) and the unit second-trunk embedding times sqrt(s), so that an RGB query's dot
        product with an RGB photo is the weighted mean of the two cosine similarities. A query without an RGB image
        (`second_rgb` None) keeps its vector whole and pads zeros."""
        if second_rgb is None:
            return F.pad(embeds, (0, self.config.second_rgb_trunk_size))
        share = self.config.second_rgb_trunk_share
        return torch.cat([embeds * (1.0 - share) ** 0.5, F.normalize(second_rgb, dim=-1) * share ** 0.5], dim=-1)

    def image_skip(self, embedding: torch.Tensor, modality: str) -> torch.Tensor:
        """An image's skip: its OSNet ReID embedding, zero-padded to `embedding_size`, times its modality's scale
        (`skip_log_scales`, chosen after training on held-out people)."""
        padded = F.pad(embedding, (0, self.config.embedding_size - embedding.shape[-1]))
        if not hasattr(self, "skip_log_scales"):
            return padded
        return padded * self.skip_log_scales[MODALITIES.index(modality)].exp()

    def combine_skips(self, skips: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted mean of the query's skips, one weight per modality (`skip_log_weights`): how far to trust each
        modality when several are combined."""
        if not hasattr(self, "skip_log_weights"):
            return torch.stack(list(skips.values())).mean(0)
        weights = self.skip_log_weights[[MODALITIES.index(m) for m in skips]].exp()
        return (torch.stack(list(skips.values())) * (weights / weights.sum())[:, None, None]).sum(0)

    @staticmethod
    def pool_text(sequence: torch.Tensor, token_mask: torch.Tensor, modality_ids: torch.Tensor) -> torch.Tensor:
        """(B, H) mean of the encoder outputs over the real (unpadded) text positions (sentence-transformers'
        pooling)."""
        text_positions = modality_ids == MODALITIES.index("text")
        mask = token_mask[:, text_positions].to(sequence.dtype)[..., None]
        return (sequence[:, text_positions] * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    @torch.no_grad()
    def get_features(self, **inputs) -> torch.Tensor:
        """The (B, D) unit-length embedding of each query, for indexing and search; a query whose embedding is not
        finite (broken weights or inputs) is an error naming it, never a NaN vector in a gallery."""
        return finite_embeddings(self(**inputs).embeds)

    @torch.no_grad()
    def get_rgb_gallery_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, D) unit embeddings of RGB photos by the fast gallery encoder, in `get_features`' space; the pixels
        come from the image processor at `config.rgb_gallery_image_size`."""
        if not hasattr(self, "rgb_gallery_encoder"):
            raise ValueError("this checkpoint has no RGB gallery encoder (`config.rgb_gallery_image_size` is None).")
        return finite_embeddings(self.rgb_gallery_encoder(pixel_values))


class AIOForReIdentification(AIOPreTrainedModel):
    """AIO with its three training heads: identity CE behind a BNNeck, multimodal feature binding, and
    vision-guided masked attribute modelling. Returns a loss when `labels` are given, so `Trainer` can train it."""

    def __init__(self, config: AIOConfig):
        super().__init__(config)
        self.aio = AIOModel(config)
        dim = config.embedding_size
        if config.use_identity_head and config.num_identities > 0:
            self.bnneck = nn.BatchNorm1d(dim)
            self.bnneck.bias.requires_grad_(False)  # BNNeck (Luo et al. 2019): no shift before the classifier
            self.identity_classifier = nn.Linear(dim, config.num_identities, bias=False)
        if config.use_masked_attribute_head:
            hidden = config.hidden_size
            self.attribute_head = nn.Sequential(
                nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, len(config.attribute_words))
            )
        self.post_init()
        self.aio.freeze_encoder()

    @property
    def has_identity_head(self) -> bool:
        return hasattr(self, "identity_classifier")

    def get_features(self, **inputs) -> torch.Tensor:
        return self.aio.get_features(**inputs)

    def get_rgb_gallery_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.aio.get_rgb_gallery_features(pixel_values)

    def forward(
        self,
        pixel_values_rgb: torch.Tensor | None = None,
        pixel_values_ir: torch.Tensor | None = None,
        pixel_values_sketch: torch.Tensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        masked_input_ids: torch.LongTensor | None = None,
        attribute_labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> AIOReIdOutput:
        """Encodes every present modality alone (for binding and per-modality identity loss) and, with
        `fused_query_loss`, all of them together and text with each non-RGB image (so the composed queries that
        are asked, e.g. text + IR, are trained too; binding pulls them toward RGB like single ones).

        `masked_input_ids`/`attribute_labels` (B, L): the caption with attribute words masked and, at those
        positions, the index of the word in `config.attribute_words` (-100 elsewhere)."""
        if kwargs:
            raise TypeError(f"AIOForReIdentification got unexpected inputs {sorted(kwargs)}.")
        modality_inputs, attention_mask = query_inputs(
            self.config, pixel_values_rgb, pixel_values_ir, pixel_values_sketch, input_ids, attention_mask)
        tokens, image_globals, feature_maps = self.aio.embeddings.tokenize(modality_inputs)
        fused = self.aio.encode_tokens(tokens, attention_mask, image_globals, feature_maps=feature_maps)
        logits = self.identity_classifier(self.bnneck(fused.features)) if self.has_identity_head else None
        if labels is None:
            return AIOReIdOutput(logits=logits, embeds=fused.embeds)

        single = {m: fused.features if len(tokens) == 1 else
                  self.aio.encode_tokens({m: t}, attention_mask, image_globals).features for m, t in tokens.items()}
        config = self.config
        # Composed queries as they are asked: a description with one non-RGB image (RGB is the gallery's side).
        composed = {f"text+{m}": fused.features if set(tokens) == {"text", m} else self.aio.encode_tokens(
                        {"text": tokens["text"], m: tokens[m]}, attention_mask, image_globals).features
                    for m in ("ir", "sketch") if config.fused_query_loss and "text" in tokens and m in tokens}
        total = fused.features.new_zeros(())
        identity_loss = binding_loss = attribute_loss = None
        if self.has_identity_head:
            queries = list(single.values()) + list(composed.values()) + (
                [fused.features] if config.fused_query_loss and len(single) > 1 else [])
            identity_loss = identity_cross_entropy(queries, self.bnneck, self.identity_classifier, labels,
                                                 config.label_smoothing)
            total = total + config.identity_loss_weight * identity_loss
        if config.use_binding_head and "rgb" in single and len(single) > 1:
            rgb = single["rgb"]
            binding_loss = torch.stack([
                supervised_contrastive_binding_loss(f, rgb, labels, config.binding_temperature)
                for key, f in {**single, **composed}.items() if key != "rgb"
            ]).mean()
            total = total + config.binding_loss_weight * binding_loss
        if config.use_masked_attribute_head and masked_input_ids is not None and "rgb" in tokens:
            masked_tokens = {"rgb": tokens["rgb"], "text": self.aio.embeddings.text_tokenizer(masked_input_ids)}
            guided = self.aio.encode_tokens(masked_tokens, attention_mask)  # attribute head reads tokens only
            text_positions = guided.modality_ids == MODALITIES.index("text")
            attribute_logits = self.attribute_head(guided.last_hidden_state[:, text_positions])
            if attribute_labels is None or attribute_labels.shape != masked_input_ids.shape:
                raise ValueError("`attribute_labels` must be given with `masked_input_ids` and have its shape.")
            if (attribute_labels != -100).any():
                attribute_loss = masked_attribute_cross_entropy(attribute_logits, attribute_labels)
                total = total + config.masked_attribute_loss_weight * attribute_loss
        return AIOReIdOutput(
            loss=total,
            identity_loss=identity_loss,
            binding_loss=binding_loss,
            masked_attribute_loss=attribute_loss,
            logits=logits,
            embeds=fused.embeds,
        )


__all__ = ["AIOModel", "AIOForReIdentification", "AIOPreTrainedModel", "AIOModelOutput", "AIOReIdOutput",
           "AIOTextAlignmentImageHead", "AIOTextAlignmentTextHead", "ALIGNMENT_QUERY_KINDS"]
