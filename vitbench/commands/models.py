"""`vitbench models`: the model zoo with parameter counts and FLOPs."""

from __future__ import annotations

from tabulate import tabulate

from vitbench.commands import command
from vitbench.models import zoo


def _define(fv):
    from absl import flags

    flags.DEFINE_integer("image_size", 224, "Resolution (pixels) the counts are computed at.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("num_classes", 1000, "Classes of the head the counts include.",
                         lower_bound=0, flag_values=fv)


def zoo_rows(image_size: int, num_classes: int):
    """One row per zoo model: architecture, parameters and compute at `image_size`."""
    rows = []
    for name, config in zoo.ZOO.items():
        if config.patch_size > image_size:
            continue  # not one patch fits
        rows.append({
            "model": name, "width": config.hidden_size, "depth": config.num_layers,
            "heads": config.num_heads, "mlp": config.mlp_dim, "patch": config.patch_size,
            "tokens": config.num_tokens(image_size),
            "params": zoo.count_params(config, image_size, num_classes),
            "GMACs": zoo.count_macs(config, image_size, num_classes) / 1e9,
            "GFLOPs": zoo.count_flops(config, image_size, num_classes) / 1e9,
        })
    return rows


@command("models", _define)
def run(fv):
    """List every ViT config with parameter count and compute (the zoo table).

    Parameters include a `--num_classes` head (no pre-logits layer) and the position embedding at
    `--image_size`. GMACs counts multiply-accumulates of the matmuls and the patch convolution,
    the figure timm and DeiT call "FLOPs"; GFLOPs is twice that.
    """
    rows = zoo_rows(fv.image_size, fv.num_classes)
    if not rows:
        raise ValueError(f"no zoo model has a patch of {fv.image_size} px or less; the "
                         f"smallest patch is {min(zoo.PATCH_SIZES)} px")
    print(f"ViT zoo at {fv.image_size}x{fv.image_size} px, {fv.num_classes}-class head\n")
    print(tabulate(rows, headers="keys", intfmt=",", floatfmt=".2f"))
    too_large = sorted({p for p in zoo.PATCH_SIZES if p > fv.image_size})
    if too_large:
        print(f"\n(models with patch sizes {too_large} are left out: larger than the image)")
    cropped = sorted({p for p in zoo.PATCH_SIZES if fv.image_size % p} - set(too_large))
    if cropped:
        print(f"\n(patch sizes {cropped}: {fv.image_size} px is not a multiple of them, so the "
              "pixels past the last whole patch are not seen, as in the official code)")
    return 0
