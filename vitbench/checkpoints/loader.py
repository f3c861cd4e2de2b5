"""`load_model`: a ready Keras ViT from a checkpoint name, file or URL."""

from __future__ import annotations

import pathlib

import numpy as np

from vitbench.checkpoints import download, formats, hub, npz
from vitbench.checkpoints.registry import find_checkpoint, known_checkpoints
from vitbench.models.vit import VisionTransformer
from vitbench.models.zoo import ImageSize, ViTConfig, as_hw, get_config

ARCHITECTURE_FIELDS = ("hidden_size", "mlp_dim", "num_heads", "num_layers", "patch_size",
                       "classifier")
# A `vitbench pretrain` workdir's settings and exported weights (`vitbench.train.pretrain`).
PRETRAIN_CONFIG, PRETRAIN_FINAL = "pretrain.json", "final.npz"


def resolve(ckpt: str, progress: bool = True) -> pathlib.Path:
    """Local path of a checkpoint given by registry name, file path or URL (downloading it).

    Args:
        ckpt: a registry name or alias, a local file, a `vitbench pretrain` workdir, or an
            http(s):// or gs:// URL.
        progress: show a progress bar while downloading.

    Returns:
        The local file: the cached download, the file itself, or the workdir's `final.npz`.

    Raises:
        FileNotFoundError: no such name or file, or a workdir whose pretraining has not
            finished.
        vitbench.checkpoints.download.DownloadError: the download failed or is not allowed
            offline.
    """
    entry = find_checkpoint(str(ckpt))
    if entry is not None:
        return resolve(entry.url, progress) if hub.is_hub_id(entry.url) else \
            download.fetch(entry.url, entry.sha256, progress)
    if hub.is_hub_id(str(ckpt)):
        return hub.fetch(str(ckpt), progress)
    if download.is_remote(str(ckpt)):
        return download.fetch(str(ckpt), progress=progress)
    path = pathlib.Path(ckpt).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _pretrained(path)
    if path.suffix in (".npz", ".keras") or "/" in str(ckpt):
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    raise FileNotFoundError(
        f"checkpoint {str(ckpt)!r} is not a known name, an existing file or a URL. Known names: "
        f"{', '.join(known_checkpoints())} (see `vitbench checkpoints`).")


def _pretrained(workdir: pathlib.Path) -> pathlib.Path:
    """The exported weights of a `vitbench pretrain` workdir."""
    final = workdir / PRETRAIN_FINAL
    if final.is_file():
        return final
    if any((workdir / name).is_file() for name in formats.FOLDER_WEIGHTS):
        return workdir  # a Hugging Face, timm or open_clip checkpoint folder
    if (workdir / PRETRAIN_CONFIG).is_file():
        raise FileNotFoundError(f"pretraining in {workdir} has not finished (no {final.name}); "
                                "run the same `vitbench pretrain` command again to resume it")
    raise FileNotFoundError(f"{workdir} is a folder, not a checkpoint file, a `vitbench "
                            f"pretrain` workdir (no {PRETRAIN_FINAL}) or a checkpoint folder "
                            f"(none of {', '.join(formats.FOLDER_WEIGHTS)})")


def load_model(ckpt: str | pathlib.Path, num_classes: int | None = None,
               image_size: ImageSize | None = None,
               model: str | ViTConfig | None = None, progress: bool = True,
               num_heads: int | None = None, new_head: bool = False, **options):
    """A Keras ViT with the weights of `ckpt`, mapping float NHWC images in [-1, 1] to logits.

    Args:
        ckpt: a registry name or alias (`vitbench checkpoints`), a local file (official
            `.npz`, `.keras`, or a timm / Hugging Face / open_clip state dict in
            `.safetensors`, `.pth`, `.bin`), a Hugging Face, timm or open_clip checkpoint
            folder, an `hf://org/name` id, a `vitbench pretrain` workdir (its `final.npz`),
            or an http(s):// or gs:// URL (downloaded into the cache). See
            docs/checkpoint_formats.md.
        num_classes: None keeps the checkpoint's head. A different number starts a new zero
            head and, as the official fine-tuning code does, drops the pre-logits layer. 0
            removes the head and keeps the pre-logits layer: the model then returns the
            features.
        image_size: None keeps the checkpoint's resolution; another (int or (h, w)) resamples
            the position-embedding grid as the official code does (bilinear, class token
            kept). An `.npz` file does not store its grid: it is read as square, or as the
            grid of `image_size` where that has as many patches (a non-square model's file).
        model: a zoo name or ViTConfig; its architecture must match the arrays (else an error
            names the difference) and its training options (dropout, ...) are used. By
            default the architecture is read off the array shapes.
        progress: show a progress bar while downloading.
        num_heads: attention heads of a timm state dict whose width no public ViT has.
        new_head: start a new zero head of `num_classes` and drop the pre-logits layer even
            where the checkpoint's head has that many classes, as the official fine-tuning
            does for every task (vitbench's fine-tuning loads this way).
        **options: ViTConfig fields to override, e.g. `gelu="exact"`,
            `normalization="imagenet"` or `stochastic_depth=0.1`.

    Returns:
        The `VisionTransformer`, named after its zoo config, with the weights assigned.

    Raises:
        FileNotFoundError: `ckpt` is no known name, existing file or finished workdir.
        vitbench.checkpoints.download.DownloadError: the download failed or is not allowed
            offline (`ChecksumError`: the file is not the registry's).
        vitbench.checkpoints.npz.CheckpointError: the file is unreadable, not in the official
            layout, or does not match `model`.
        KeyError: `model` is an unknown zoo name.
        TypeError: an option is not a ViTConfig field.
        ValueError: an invalid `num_classes`, `image_size` or option value.
    """
    if num_classes is not None:
        ViTConfig.check_num_classes(num_classes)
    if new_head and not num_classes:
        raise ValueError(f"a new head needs its number of classes, not {num_classes}")
    path = resolve(ckpt, progress)
    source = str(ckpt)
    weights, config, file_classes, file_grid = read_architecture(path, source, image_size,
                                                                 num_heads)
    arrays = weights.arrays
    base = get_config(model) if isinstance(model, str) else (model or weights.stored_config)
    if base is not None:
        config = _merge(base, config, source)
    keep_head = not new_head and num_classes in (None, file_classes)
    if not keep_head:
        arrays = _without(arrays, "head/")
    if not keep_head and num_classes:
        # A new task: drop pre-logits and start the head at zero, as the official fine-tuning.
        arrays = _without(arrays, "pre_logits/")
        config = config.replace(representation_size=None)
        arrays["head/kernel"] = np.zeros((config.hidden_size, num_classes), np.float32)
        arrays["head/bias"] = np.zeros((num_classes,), np.float32)
    config = config.replace(**options)
    size = as_hw(image_size) if image_size is not None else \
        tuple(side * config.patch_size for side in file_grid)
    grid = config.grid(size)
    if grid != file_grid:
        arrays[npz.POSEMB_KEY] = npz.resample_position_embedding(
            arrays[npz.POSEMB_KEY], grid, num_prefix_tokens=config.posemb_prefix_tokens,
            old_grid=file_grid)
    vit = VisionTransformer(config, num_classes=file_classes if keep_head else num_classes,
                            image_size=size, name=config.name)
    npz.assign_arrays(vit, arrays, source)
    return vit


def read_architecture(path: pathlib.Path, source: str, image_size: ImageSize | None = None,
                      num_heads: int | None = None):
    """(weights, config, head classes, patch grid) of a checkpoint file or folder, read
    without building the model (`formats.read_weights`, `npz.infer_architecture`); the grid of
    a non-square file is the one of the size it stores, else of `image_size`."""
    weights = formats.read_weights(path, num_heads)
    hint = weights.image_size or image_size
    config, classes, grid = npz.infer_architecture(
        weights.arrays, source, as_hw(hint) if hint is not None else None, weights.options)
    return weights, config, classes, grid


def _without(arrays, prefix: str):
    return {key: value for key, value in arrays.items() if not key.startswith(prefix)}


def _merge(requested: ViTConfig, inferred: ViTConfig, source: str) -> ViTConfig:
    """`requested`'s options on the architecture read from the file; mismatches raise."""
    wrong = [f"{field} {getattr(requested, field)} (the file has {getattr(inferred, field)})"
             for field in ARCHITECTURE_FIELDS
             if getattr(requested, field) != getattr(inferred, field)]
    if wrong:
        raise npz.CheckpointError(f"{source} does not hold a {requested.name}: "
                                  f"{'; '.join(wrong)}")
    options = {field: getattr(inferred, field) for field in npz.OPTION_FIELDS
               if field not in ARCHITECTURE_FIELDS}
    return requested.replace(representation_size=inferred.representation_size,
                             num_registers=inferred.num_registers,
                             layer_scale=inferred.layer_scale, pre_norm=inferred.pre_norm,
                             **options)
