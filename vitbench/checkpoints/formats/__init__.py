"""Checkpoint files -> official-layout arrays plus the ViTConfig options the arrays do not show.

Formats: the official `.npz` (also vitbench's own), Keras `.keras`, PyTorch state dicts
(`.safetensors`, `.pth`, `.pt`, `.bin`) in timm's, Hugging Face transformers' or open_clip's
layout, and folders holding such a file beside its configuration (a Hugging Face or timm hub
repository, an open_clip one), whose preprocessing and architecture options are read from it.
docs/checkpoint_formats.md lists them.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import zipfile

from vitbench.checkpoints import npz
from vitbench.checkpoints.formats import layouts, tensors
from vitbench.models.zoo import ViTConfig, as_normalization

# The weights file of a folder, first found first: open_clip's where the folder has an
# open_clip configuration (its repositories also hold the two-tower model in transformers'
# layout as model.safetensors), the others' elsewhere.
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OTHER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
FOLDER_WEIGHTS = OPEN_CLIP_WEIGHTS + OTHER_WEIGHTS
# The transformers model types whose configuration `layouts.transformers` reads.
HF_MODEL_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers")
# A folder's configuration files, and what each may say.
FOLDER_CONFIGS = ("config.json", "preprocessor_config.json", OPEN_CLIP_CONFIG)
# Hugging Face `hidden_act` -> vitbench's gelu form.
HF_ACTIVATIONS = {"gelu": "exact", "quick_gelu": "quick", "gelu_new": "tanh",
                  "gelu_pytorch_tanh": "tanh"}


@dataclasses.dataclass(frozen=True)
class Weights:
    """What a checkpoint file holds, in the official layout."""

    arrays: dict
    options: dict  # ViTConfig fields the array shapes do not show
    format: str  # "official", "keras", "timm", "transformers", "open_clip"
    image_size: tuple[int, int] | None = None  # the resolution it was made for, where it says
    stored_config: ViTConfig | None = None  # a .keras file's whole config


def read_weights(path: pathlib.Path, num_heads: int | None = None) -> Weights:
    """The weights of a checkpoint file or folder, in the official layout.

    Args:
        path: an `.npz`, `.keras`, `.safetensors`, `.pth`/`.pt`/`.bin` file, or a folder with
            one of `FOLDER_WEIGHTS` and its configuration.
        num_heads: attention heads, for a state dict whose files do not say (timm's, at a
            width no public ViT has).

    Raises:
        vitbench.checkpoints.npz.CheckpointError: unreadable, or no layout vitbench knows
            (the message names the keys).
    """
    path = pathlib.Path(path)
    if path.is_dir():
        return _read_folder(path, num_heads)
    if path.suffix == ".keras":
        return _read_keras(path)
    if tensors.is_state_dict_file(path):
        return _from_state_dict(tensors.read_state_dict(path), {"num_heads": num_heads}, path)
    arrays, options = npz.split_options(npz.read_npz(path))
    return Weights(arrays, options, "official")


def _from_state_dict(arrays, hints: dict, source) -> Weights:
    layout, converted, options = layouts.convert(arrays, hints, str(source))
    for field in ("gelu", "norm_epsilon", "normalization"):
        if hints.get(field) is not None:
            options[field] = hints[field]
    return Weights(converted, options, layout, hints.get("image_size"))


def weights_names(open_clip: bool) -> tuple[str, ...]:
    """The weights files to look for, first first, in a folder with (or without) an open_clip
    configuration."""
    return OPEN_CLIP_WEIGHTS if open_clip else OTHER_WEIGHTS + OPEN_CLIP_WEIGHTS


def _read_folder(folder: pathlib.Path, num_heads: int | None) -> Weights:
    names = weights_names((folder / OPEN_CLIP_CONFIG).is_file())
    weights = next((folder / name for name in names if (folder / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(
            f"{folder} is a folder without a weights file ({', '.join(names)}): not a "
            "Hugging Face, timm or open_clip checkpoint folder")
    hints = folder_hints(folder)
    if num_heads:
        hints["num_heads"] = num_heads
    return _from_state_dict(tensors.read_state_dict(weights), hints, folder)


def folder_hints(folder: pathlib.Path) -> dict:
    """What a checkpoint folder's configuration files say: heads, activation, LayerNorm
    epsilon, input normalisation, resolution (the keys of `layouts` converters' `hints`)."""
    configs = {}
    for name in FOLDER_CONFIGS:
        if (folder / name).is_file():
            try:
                configs[name] = json.loads((folder / name).read_text())
            except json.JSONDecodeError as error:
                raise npz.CheckpointError(f"{folder / name} is not valid JSON ({error})"
                                          ) from error
    config = configs.get("config.json", {})
    hints = {}
    if config.get("model_type") in HF_MODEL_TYPES:  # Hugging Face transformers
        hints["num_heads"] = config.get("num_attention_heads")
        hints["gelu"] = HF_ACTIVATIONS.get(config.get("hidden_act", "gelu"))
        hints["norm_epsilon"] = config.get("layer_norm_eps")
        hints["image_size"] = config.get("image_size")
    pretrained = config.get("pretrained_cfg", {})  # a timm hub folder
    if "mean" in pretrained:
        hints["normalization"] = (pretrained["mean"], pretrained["std"])
        hints["image_size"] = pretrained.get("input_size", [None])[-1]
        hints["gelu"] = "quick" if "quickgelu" in config.get("architecture", "") else None
    processor = configs.get("preprocessor_config.json", {})
    if "image_mean" in processor:
        hints["normalization"] = (processor["image_mean"], processor["image_std"])
    elif config.get("model_type", "").startswith(("dinov2", "deit")):
        hints["normalization"] = "imagenet"  # their processors' defaults
    open_clip = configs.get(OPEN_CLIP_CONFIG, {})
    if open_clip:
        model = open_clip.get("model_cfg", {})
        if model.get("quick_gelu"):
            hints["gelu"] = "quick"
        vision = model.get("vision_cfg", {})
        if vision.get("width") and vision.get("head_width"):
            hints["num_heads"] = vision["width"] // vision["head_width"]
        hints["image_size"] = vision.get("image_size")
        preprocess = open_clip.get("preprocess_cfg", {})
        if "mean" in preprocess:
            hints["normalization"] = (preprocess["mean"], preprocess["std"])
    if hints.get("normalization") is not None:
        hints["normalization"] = as_normalization(hints["normalization"]) or "inception"
    size = hints.get("image_size")
    hints["image_size"] = (size, size) if isinstance(size, int) else None
    return {key: value for key, value in hints.items() if value is not None}


def _read_keras(path: pathlib.Path) -> Weights:
    import keras

    if not zipfile.is_zipfile(path):
        raise npz.CheckpointError(f"{path} is not a readable .keras file (not a zip "
                                  "archive; a download or copy cut short?)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if "config.json" not in names:  # a zip, not of a Keras model
        hint = (" It holds .npy arrays: is it an .npz file? Name it so." if names and all(
            name.endswith(".npy") for name in names) else "")
        raise npz.CheckpointError(f"{path} is not a Keras model file (a zip archive "
                                  f"without config.json).{hint}")
    saved = keras.saving.load_model(path, compile=False)
    config = getattr(saved, "config", None)
    options = {field: getattr(config, field) for field in npz.OPTION_FIELDS} if config else {}
    return Weights(npz.model_to_arrays(saved), options, "keras",
                   getattr(saved, "image_size", None), config)
