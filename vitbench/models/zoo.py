"""The ViT model zoo: every size x patch size as data, with analytic parameter and FLOP counts.

Sizes follow the paper (B, L, H; Table 1) and the official configs (Ti, S from DeiT/AugReg); see
`vit_jax/configs/models.py`. This module imports no deep-learning framework, so listing the zoo
is instant.
"""

from __future__ import annotations

import dataclasses

from vitbench.rules import is_whole_number

ImageSize = int | tuple[int, int]

# name -> (hidden size D, MLP dim, heads, layers). "mu" (micro) is vitbench's own, for the
# offline demo and tests on a CPU; the others are the paper's and DeiT/AugReg's.
SIZES = {
    "mu": (64, 128, 4, 4),
    "ti": (192, 768, 3, 12),
    "s": (384, 1536, 6, 12),
    "b": (768, 3072, 12, 12),
    "l": (1024, 4096, 16, 24),
    "h": (1280, 5120, 16, 32),
}
PATCH_SIZES = (32, 16, 14, 8)

# The official configs train L/16 and H/14 with dropout 0.1 and everything else with none.
OFFICIAL_DROPOUT = {"vit_l16": 0.1, "vit_h14": 0.1}

CLASSIFIERS = ("token", "gap")
GELU_FORMS = ("tanh", "exact", "quick")
FINAL_NORMS = ("tokens", "pooled")
# Which variables train (`ViTConfig.trainable`), by their path; the classifier head always
# does. "biases": BitFit (Zaken et al. 2022; VPT's `tinytl-bias`), every bias and every
# LayerNorm offset (`beta`: Keras' name for a LayerNorm's bias), no kernel, scale or token.
# "lora": the low-rank updates of the query and value projections (`models.lora`) only.
TRAINABLE = {"all": lambda path: True,
             "biases": lambda path: path.rsplit("/", 1)[-1] in ("bias", "beta"),
             "lora": lambda path: path.rsplit("/", 1)[-1] in ("lora_a", "lora_b"),
             "prompts": lambda path: path.rsplit("/", 1)[-1] == "prompts"}
# Input normalisations by name: (mean, std) per RGB channel of [0, 1] pixels. The official ViT
# weights take [-1, 1] ("inception", the default, stored as None); timm's DeiT/DINO/MAE and
# Hugging Face's DINOv2 take "imagenet"; CLIP towers "clip".
NORMALIZATIONS = {
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
Normalization = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Architecture and regularisation of one Vision Transformer."""

    name: str
    hidden_size: int
    mlp_dim: int
    num_heads: int
    num_layers: int
    patch_size: int
    classifier: str = "token"  # "token": class token; "gap": mean of the patch tokens
    representation_size: int | None = None  # pre-logits Dense+tanh, as in the i21k checkpoints
    dropout: float = 0.0
    attention_dropout: float = 0.0
    stochastic_depth: float = 0.0  # drop-path rate of the last block; linear from 0 at the first
    gelu: str = "tanh"  # "tanh" as the official JAX code (flax default); "exact" (erf) as timm
    # Rematerialisation: keep only each encoder block's input for the backward pass and recompute
    # the rest (jax.checkpoint per block); same numbers, about one more forward pass of compute
    # for much less activation memory (e.g. ViT-H/14 at 384 px on one GPU).
    remat: bool = False
    # Options of ViTs released outside the official code (timm, Hugging Face, DINO, CLIP, ...);
    # the defaults are the official architecture. docs/checkpoint_formats.md says which uses which.
    class_token: bool | None = None  # None: a class token with the "token" classifier only
    num_registers: int = 0  # learned register tokens after the class token (DINOv2-reg)
    pos_embed_prefix: bool = True  # False: position embeddings for the patches only (DeiT III)
    layer_scale: float | None = None  # per-channel residual-branch scales, initialised to this
    pre_norm: bool = False  # a LayerNorm before the blocks, no patch-embedding bias (CLIP)
    final_norm: str = "tokens"  # "pooled": the final LayerNorm after pooling (timm's fc_norm)
    norm_epsilon: float = 1e-6
    # The pixels the weights expect: a NORMALIZATIONS name or (mean, std) per channel of [0, 1]
    # pixels; None is [-1, 1]. Applied inside the model, so pipelines always feed [-1, 1].
    normalization: str | Normalization | None = None
    # The variables that train (a TRAINABLE name): the others are frozen, with no gradients
    # and no optimizer state. Part of the config, so a model restored from a save freezes
    # the same ones.
    trainable: str = "all"
    # LoRA on every block's query and value projections (`models.lora`): the rank (0: none)
    # and alpha (the update is scaled by alpha / rank; None: alpha = rank).
    lora_rank: int = 0
    lora_alpha: float | None = None
    # Visual prompts (`models.prompts`): tokens after the prefix tokens, before the first block
    # ("shallow") or every block ("deep"), with dropout on them; 0: none.
    prompt_tokens: int = 0
    prompt_depth: str = "deep"
    prompt_dropout: float = 0.0

    def __post_init__(self):
        for field in ("hidden_size", "mlp_dim", "num_heads", "num_layers", "patch_size",
                      "representation_size"):
            value = getattr(self, field)
            if value is not None and (not is_whole_number(value) or value < 1):
                raise ValueError(f"{field} must be a positive whole number, not {value!r}")
        for field in ("dropout", "attention_dropout", "stochastic_depth", "prompt_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{field} is a rate in [0, 1), not {value!r}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier {self.classifier!r} is not one of {CLASSIFIERS}")
        if self.gelu not in GELU_FORMS:
            raise ValueError(f"gelu {self.gelu!r} is not one of {GELU_FORMS}")
        if not is_whole_number(self.lora_rank) or self.lora_rank < 0:
            raise ValueError(f"lora_rank must be a whole number >= 0, not {self.lora_rank!r}")
        if self.trainable == "lora" and not self.lora_rank:
            raise ValueError("trainable 'lora' needs a lora_rank")
        if not is_whole_number(self.prompt_tokens) or self.prompt_tokens < 0:
            raise ValueError(f"prompt_tokens must be a whole number >= 0, not "
                             f"{self.prompt_tokens!r}")
        if self.trainable == "prompts" and not self.prompt_tokens:
            raise ValueError("trainable 'prompts' needs prompt_tokens")
        if self.trainable not in TRAINABLE:
            raise ValueError(f"trainable {self.trainable!r} is not one of "
                             f"{', '.join(TRAINABLE)}")
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"final_norm {self.final_norm!r} is not one of {FINAL_NORMS}")
        if self.classifier == "token" and self.class_token is False:
            raise ValueError("the token classifier needs class_token")
        if not is_whole_number(self.num_registers) or self.num_registers < 0:
            raise ValueError(f"num_registers must be a whole number >= 0, not "
                             f"{self.num_registers!r}")
        for field in ("layer_scale", "norm_epsilon"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{field} must be a positive number, not {value!r}")
        object.__setattr__(self, "normalization", as_normalization(self.normalization))
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def has_class_token(self) -> bool:
        return self.classifier == "token" if self.class_token is None else self.class_token

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches': the class token and the registers."""
        return int(self.has_class_token) + self.num_registers

    @property
    def posemb_prefix_tokens(self) -> int:
        """Rows of the position embedding before the patch grid's."""
        return self.num_prefix_tokens if self.pos_embed_prefix else 0

    @property
    def normalization_name(self) -> str:
        """The input normalisation by name ('inception' is [-1, 1]), else its numbers."""
        values = self.normalization or NORMALIZATIONS["inception"]
        return next((name for name, known in NORMALIZATIONS.items() if known == values),
                    f"mean={list(values[0])} std={list(values[1])}")

    def replace(self, **changes) -> ViTConfig:
        """A copy with some fields changed; unknown field names raise a clear error."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise TypeError(f"unknown ViT option(s) {unknown}; valid: {sorted(fields)}")
        return dataclasses.replace(self, **changes)

    def grid(self, image_size: ImageSize) -> tuple[int, int]:
        """Patch grid (rows, cols) for an image size: whole patches only. As in the official
        code (a VALID convolution, stride = patch size), pixels past the last whole patch are
        not seen: ViT-H/14 at 384 px has 27 x 27 patches over the top-left 378 x 378 pixels."""
        height, width = as_hw(image_size)
        if height < self.patch_size or width < self.patch_size:
            raise ValueError(f"image size {height}x{width} is smaller than the patch size "
                             f"{self.patch_size} of {self.name}")
        return height // self.patch_size, width // self.patch_size

    @staticmethod
    def check_num_classes(num_classes) -> None:
        """0 (no head) or a positive whole number; anything else raises."""
        if not is_whole_number(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be a whole number >= 0 (0: no head), not "
                             f"{num_classes!r}")

    def num_tokens(self, image_size: ImageSize) -> int:
        rows, cols = self.grid(image_size)
        return rows * cols + self.num_prefix_tokens


def as_normalization(value) -> Normalization | None:
    """(mean, std) tuples from a NORMALIZATIONS name or numbers; None for [-1, 1] ("inception",
    the official one). Anything else raises, naming the valid names."""
    if isinstance(value, str):
        if value not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {value!r}; known: {', '.join(NORMALIZATIONS)}"
                             " or (mean, std) per RGB channel")
        value = NORMALIZATIONS[value]
    if value is None:
        return None
    try:
        mean, std = (tuple(float(v) for v in part) for part in value)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalization {value!r} is not (mean, std) of 3 channels each, "
                         "std > 0")
    return None if (mean, std) == NORMALIZATIONS["inception"] else (mean, std)


def as_hw(image_size: ImageSize) -> tuple[int, int]:
    """(height, width) from a positive int or a pair of them; anything else raises."""
    pair = (image_size, image_size) if is_whole_number(image_size) else image_size
    if isinstance(pair, str) or not hasattr(pair, "__len__") or len(pair) != 2 or not all(
            is_whole_number(side) and side > 0 for side in pair):
        raise ValueError(f"image size {image_size!r} is not a positive int or a (height, width) "
                         "pair of them")
    return int(pair[0]), int(pair[1])


def _build_zoo():
    zoo = {}
    for size, (hidden, mlp, heads, layers) in SIZES.items():
        for patch in PATCH_SIZES:
            name = f"vit_{size}{patch}"
            zoo[name] = ViTConfig(name, hidden, mlp, heads, layers, patch,
                                  dropout=OFFICIAL_DROPOUT.get(name, 0.0))
    return zoo


ZOO = _build_zoo()


def get_config(name: str, **overrides) -> ViTConfig:
    """Zoo config by name (e.g. 'vit_b16'), with optional field overrides.

    Args:
        name: a zoo name; case, '-' and '/' are ignored ('ViT-B/16' is 'vit_b16').
        **overrides: `ViTConfig` fields to change.

    Returns:
        The `ViTConfig`.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
        TypeError: an override that is not a `ViTConfig` field.
        ValueError: an invalid override value.
    """
    key = name.lower().replace("-", "_").replace("/", "")
    if key not in ZOO:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(ZOO)}")
    return ZOO[key].replace(**overrides) if overrides else ZOO[key]


def find_name(config: ViTConfig) -> str | None:
    """The zoo name whose architecture matches `config` (ignoring heads and regularisation)."""
    for name, known in ZOO.items():
        if _architecture(known) == _architecture(config):
            return name
    return None


def _architecture(config: ViTConfig):
    return (config.hidden_size, config.mlp_dim, config.num_heads, config.num_layers,
            config.patch_size)


def count_params(config: ViTConfig, image_size: ImageSize = 224, num_classes: int = 1000) -> int:
    """Exact number of parameters, computed from the shapes (no model is built).

    Args:
        config: the architecture.
        image_size: input size in pixels, an int or (height, width): it sets the number of
            position embeddings.
        num_classes: outputs of the head; 0 for no head.

    Returns:
        The parameter count.

    Raises:
        ValueError: the image size is not a positive int or pair, or is smaller than a patch.
    """
    d, m, p = config.hidden_size, config.mlp_dim, config.patch_size
    # The patch embedding's kernel, and its bias or (pre-norm, CLIP) the LayerNorm that replaces it.
    embedding = p * p * 3 * d + (2 * d if config.pre_norm else d)
    prefix_tokens = d * config.num_prefix_tokens
    rows, cols = config.grid(image_size)
    pos_embedding = (rows * cols + config.posemb_prefix_tokens) * d
    block = (4 * d  # two LayerNorms
             + 4 * (d * d + d)  # query, key, value, out projections
             + (d * m + m) + (m * d + d)  # MLP
             + (2 * d if config.layer_scale else 0))
    features = d
    pre_logits = 0
    if config.representation_size:
        pre_logits = d * config.representation_size + config.representation_size
        features = config.representation_size
    head = features * num_classes + num_classes if num_classes else 0
    return (embedding + prefix_tokens + pos_embedding + config.num_layers * block + 2 * d
            + pre_logits + head)


def count_macs(config: ViTConfig, image_size: ImageSize = 224, num_classes: int = 1000) -> int:
    """Multiply-accumulates of one forward pass (matmuls and the patch conv only).

    This is the quantity that timm and DeiT report as "FLOPs" (ViT-B/16 at 224 px: 17.6 G);
    `count_flops` doubles it. It counts the last block whole, as they do, although
    vitbench's token-classifier models compute it for the class token only (`vitbench.models.vit`;
    ViT-B/16: 7% fewer), so throughput in FLOP/s and MFU compare with other implementations'.

    Args:
        config: the architecture.
        image_size: input size in pixels, an int or (height, width).
        num_classes: outputs of the head; 0 for no head.

    Returns:
        Multiply-accumulates per image.

    Raises:
        ValueError: the image size is not a positive int or pair, or is smaller than a patch.
    """
    d, m, p = config.hidden_size, config.mlp_dim, config.patch_size
    rows, cols = config.grid(image_size)
    patches, tokens = rows * cols, config.num_tokens(image_size)
    embedding = patches * p * p * 3 * d
    block = (4 * tokens * d * d  # q, k, v, out projections
             + 2 * tokens * tokens * d  # scores and the weighted sum of values
             + 2 * tokens * d * m)  # MLP
    features = config.representation_size or d
    pre_logits = d * config.representation_size if config.representation_size else 0
    return embedding + config.num_layers * block + pre_logits + features * num_classes


def count_flops(config: ViTConfig, image_size: ImageSize = 224, num_classes: int = 1000) -> int:
    """Floating-point operations of one forward pass (2 per multiply-accumulate).

    Args:
        config: the architecture.
        image_size: input size in pixels, an int or (height, width).
        num_classes: outputs of the head; 0 for no head.

    Returns:
        FLOPs per image: twice `count_macs`.

    Raises:
        ValueError: the image size is not a positive int or pair, or is smaller than a patch.
    """
    return 2 * count_macs(config, image_size, num_classes)
