"""State-dict layouts -> the official layout: timm (also DINO, MAE, MoCo v3, DeiT releases),
Hugging Face transformers (ViT, DeiT, DINOv2) and open_clip / OpenAI CLIP image towers.

Each converter takes the state dict and the `hints` its sidecar files gave (`folders`), and
returns the official-layout arrays with the ViTConfig options the arrays do not show. What
each layout means is in docs/checkpoint_formats.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vitbench.checkpoints.formats.tensors import (
    StateDict,
    block_arrays,
    count_blocks,
    dense,
    patch_kernel,
    split_qkv,
)
from vitbench.checkpoints.npz import POSEMB_KEY, CheckpointError

# Heads of the widths public ViTs use (Ti, S, B, L, H, g, DINOv2-g, and vitbench's mu), for
# layouts whose files do not say: timm's state dicts.
HEADS_BY_WIDTH = {64: 4, 192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
CLIP_HEAD_WIDTH = 64  # open_clip and OpenAI's CLIP: heads = width // 64


@dataclasses.dataclass(frozen=True)
class Layout:
    """One state-dict layout: how to recognise it and how to convert it."""

    name: str
    matches: Callable[[dict], bool]
    convert: Callable[[StateDict, dict], tuple[dict, dict]]


def _heads(width: int, hints: dict, source: str) -> int:
    if hints.get("num_heads"):
        return int(hints["num_heads"])
    if width not in HEADS_BY_WIDTH:
        raise CheckpointError(
            f"{source}: the file does not say how many attention heads its width-{width} "
            "model has; give it (`vitbench.load_model(..., num_heads=N)`)")
    return HEADS_BY_WIDTH[width]


def _pair(weights: StateDict, prefix: str):
    return weights.take(prefix + "weight"), weights.take(prefix + "bias")


def _head(weights: StateDict, prefix: str, arrays: dict) -> None:
    if prefix + "weight" in weights:
        arrays["head/kernel"], arrays["head/bias"] = dense(weights.take(prefix + "weight")), \
            weights.take(prefix + "bias")


def _no_embed_class(posemb_rows: int, prefix: int) -> bool:
    """Whether a position embedding covers the patches only (timm's no_embed_class): its rows
    are a square grid, and the rows less the prefix tokens are not."""
    def square(n):
        return n > 0 and int(round(n ** 0.5)) ** 2 == n
    return prefix > 0 and square(posemb_rows) and not square(posemb_rows - prefix)


def timm(weights: StateDict, hints: dict) -> tuple[dict, dict]:
    """timm's `VisionTransformer` (and the DINO, MAE, MoCo v3, DeiT releases in its layout)."""
    # Self-supervised releases keep their projector heads, MAE its decoder and mask token.
    weights.drop("decoder", "mask_token", "head_dist.", "head.mlp.", "head.last_layer.",
                 *[f"head.{i}." for i in range(10)])
    kernel = weights.take("patch_embed.proj.weight")
    heads = _heads(kernel.shape[0], hints, weights.source)
    arrays = {"embedding/kernel": patch_kernel(kernel)}
    bias = weights.take_if("patch_embed.proj.bias")
    if bias is not None:
        arrays["embedding/bias"] = bias
    cls = weights.take_if("cls_token")
    registers = [token for token in (weights.take_if("dist_token"),
                                     weights.take_if("reg_token")) if token is not None]
    if cls is not None:
        arrays["cls"] = cls
    if registers:  # DeiT's distillation token is one more prefix token, right after the class's
        arrays["reg"] = np.concatenate(registers, axis=1)
    arrays[POSEMB_KEY] = weights.take("pos_embed")
    prefix = int(cls is not None) + sum(r.shape[1] for r in registers)
    if "norm_pre.weight" in weights:
        arrays["pre_norm/scale"], arrays["pre_norm/bias"] = _pair(weights, "norm_pre.")
    for i in range(count_blocks(weights.arrays, "blocks.")):
        b = f"blocks.{i}."
        arrays.update(block_arrays(
            i, heads, norm1=_pair(weights, b + "norm1."),
            qkv=split_qkv(weights.take(b + "attn.qkv.weight"),
                          weights.take_if(b + "attn.qkv.bias")),
            out=_pair(weights, b + "attn.proj."), norm2=_pair(weights, b + "norm2."),
            fc1=_pair(weights, b + "mlp.fc1."), fc2=_pair(weights, b + "mlp.fc2."),
            scales=(weights.take_if(b + "ls1.gamma"), weights.take_if(b + "ls2.gamma"))))
    pooled_norm = "fc_norm.weight" in weights
    arrays["Transformer/encoder_norm/scale"], arrays["Transformer/encoder_norm/bias"] = \
        _pair(weights, "fc_norm." if pooled_norm else "norm.")
    _head(weights, "head.", arrays)
    weights.check_used()
    # timm pools the class token unless the model has none or normalises after pooling
    # (fc_norm, its default with average pooling); its CLIP models (pre_norm) use torch's
    # LayerNorm epsilon, 1e-5, the others 1e-6.
    options = {"classifier": "token" if cls is not None and not pooled_norm else "gap",
               "final_norm": "pooled" if pooled_norm else "tokens",
               "pos_embed_prefix": not _no_embed_class(arrays[POSEMB_KEY].shape[1], prefix),
               "gelu": "exact", "norm_epsilon": 1e-5 if "pre_norm/scale" in arrays else 1e-6}
    if "pre_norm/scale" in arrays:
        options["normalization"] = "clip"
    return arrays, options


def transformers(weights: StateDict, hints: dict) -> tuple[dict, dict]:
    """Hugging Face transformers' ViT, DeiT and DINOv2 (with or without registers)."""
    for prefix in ("vit.", "deit.", "dinov2.", "dinov2_with_registers."):
        weights.strip(prefix)
    weights.drop("embeddings.mask_token", "distillation_classifier.")
    kernel = weights.take("embeddings.patch_embeddings.projection.weight")
    heads = _heads(kernel.shape[0], hints, weights.source)
    arrays = {"embedding/kernel": patch_kernel(kernel),
              "embedding/bias": weights.take("embeddings.patch_embeddings.projection.bias")}
    cls = weights.take("embeddings.cls_token")
    posemb = weights.take("embeddings.position_embeddings")
    distillation = weights.take_if("embeddings.distillation_token")
    registers = weights.take_if("embeddings.register_tokens")
    options = {"classifier": "token", "gelu": "exact",
               "norm_epsilon": float(hints.get("norm_epsilon", 1e-12))}
    if registers is not None:
        # DINOv2 with registers adds the class token's position embedding before inserting the
        # registers, which get none: the same as a class token with it folded in and position
        # embeddings for the patches only.
        cls, posemb = cls + posemb[:, :1], posemb[:, 1:]
        arrays["reg"], options["pos_embed_prefix"] = registers, False
    elif distillation is not None:
        arrays["reg"] = distillation
    arrays["cls"], arrays[POSEMB_KEY] = cls, posemb
    for i in range(count_blocks(weights.arrays, "encoder.layer.")):
        b = f"encoder.layer.{i}."
        dino = b + "norm1.weight" in weights
        norms = ("norm1.", "norm2.") if dino else ("layernorm_before.", "layernorm_after.")
        mlp = ("mlp.fc1.", "mlp.fc2.") if dino else ("intermediate.dense.", "output.dense.")
        arrays.update(block_arrays(
            i, heads, norm1=_pair(weights, b + norms[0]), norm2=_pair(weights, b + norms[1]),
            qkv=[_pair(weights, f"{b}attention.attention.{name}.")
                 for name in ("query", "key", "value")],
            out=_pair(weights, b + "attention.output.dense."),
            fc1=_pair(weights, b + mlp[0]), fc2=_pair(weights, b + mlp[1]),
            scales=(weights.take_if(b + "layer_scale1.lambda1"),
                    weights.take_if(b + "layer_scale2.lambda1"))))
    arrays["Transformer/encoder_norm/scale"], arrays["Transformer/encoder_norm/bias"] = \
        _pair(weights, "layernorm.")
    if "pooler.dense.weight" in weights:  # ViTModel's pooler: Dense + tanh on the class token
        arrays["pre_logits/kernel"] = dense(weights.take("pooler.dense.weight"))
        arrays["pre_logits/bias"] = weights.take("pooler.dense.bias")
    _head(weights, "cls_classifier." if "cls_classifier.weight" in weights else "classifier.",
          arrays)
    weights.check_used()
    return arrays, options


def open_clip(weights: StateDict, hints: dict) -> tuple[dict, dict]:
    """open_clip's and OpenAI's CLIP image tower (`visual.`; the text tower is dropped). The
    projection to the joint embedding is dropped too: features are the normed class token."""
    if any(key.startswith("visual.") for key in weights.arrays):
        weights.strip("visual.", keep_only=True)
    weights.drop("proj")
    kernel = weights.take("conv1.weight")
    width = kernel.shape[0]
    heads = int(hints.get("num_heads") or width // CLIP_HEAD_WIDTH)
    arrays = {"embedding/kernel": patch_kernel(kernel),
              "cls": weights.take("class_embedding").reshape(1, 1, width),
              POSEMB_KEY: weights.take("positional_embedding")[None]}
    arrays["pre_norm/scale"], arrays["pre_norm/bias"] = _pair(weights, "ln_pre.")
    for i in range(count_blocks(weights.arrays, "transformer.resblocks.")):
        b = f"transformer.resblocks.{i}."
        arrays.update(block_arrays(
            i, heads, norm1=_pair(weights, b + "ln_1."), norm2=_pair(weights, b + "ln_2."),
            qkv=split_qkv(weights.take(b + "attn.in_proj_weight"),
                          weights.take(b + "attn.in_proj_bias")),
            out=_pair(weights, b + "attn.out_proj."),
            fc1=_pair(weights, b + "mlp.c_fc."), fc2=_pair(weights, b + "mlp.c_proj."),
            scales=(weights.take_if(b + "ls_1.gamma"), weights.take_if(b + "ls_2.gamma"))))
    arrays["Transformer/encoder_norm/scale"], arrays["Transformer/encoder_norm/bias"] = \
        _pair(weights, "ln_post.")
    weights.check_used()
    # open_clip's `quick_gelu` (OpenAI's weights) comes as the folder's gelu hint.
    return arrays, {"classifier": "token", "gelu": "exact", "norm_epsilon": 1e-5,
                    "normalization": "clip"}


def _has_suffix(suffix: str) -> Callable[[dict], bool]:
    return lambda arrays: any(key.endswith(suffix) for key in arrays)


LAYOUTS = (
    Layout("timm", lambda arrays: "patch_embed.proj.weight" in arrays, timm),
    Layout("transformers", _has_suffix("embeddings.patch_embeddings.projection.weight"),
           transformers),
    Layout("open_clip", _has_suffix("conv1.weight"), open_clip),
)


def convert(arrays: dict[str, np.ndarray], hints: dict, source: str
            ) -> tuple[str, dict, dict]:
    """(layout name, official-layout arrays, ViTConfig options) of a state dict.

    Raises:
        CheckpointError: no known layout, or one with arrays missing or left over (named).
    """
    for layout in LAYOUTS:
        if layout.matches(arrays):
            converted, options = layout.convert(StateDict(arrays, layout.name, source), hints)
            return layout.name, converted, options
    sample = ", ".join(sorted(arrays)[:8])
    raise CheckpointError(
        f"{source} is not a ViT state dict vitbench knows: none of the layouts "
        f"{', '.join(layout.name for layout in LAYOUTS)} has its keys (they start {sample}...)."
        " docs/checkpoint_formats.md lists what each layout needs.")
