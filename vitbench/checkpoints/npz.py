"""The official ViT `.npz` layout <-> vitbench Keras weights.

The official files (gs://vit_models, written by `vit_jax`) are flat dicts of float32 arrays whose
keys are Flax parameter paths joined with '/', e.g.
`Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel` of shape (D, heads,
head_dim). vitbench's layers are named after those modules and Keras stores every kernel in the
same axis order, so the mapping is a renaming table and nothing is transposed.
"""

from __future__ import annotations

import collections
import json
import pathlib
import re
import zipfile

import numpy as np

from vitbench import files
from vitbench.models.lora import ADAPTER_WEIGHTS
from vitbench.models.zoo import ViTConfig, find_name

_OFFICIAL = ViTConfig("official", 1, 1, 1, 1, 1)

# Keras variable path -> official key, applied in order (each rule where it matches).
KERAS_TO_OFFICIAL = (
    (r"^(cls|reg)/\1$", r"\1"),
    (r"^(posembed_input|encoder_norm)/", r"Transformer/\1/"),
    (r"^(encoderblock_\d+)/(Dense_\d)/", r"Transformer/\1/MlpBlock_3/\2/"),
    (r"^(encoderblock_\d+)/", r"Transformer/\1/"),
    (r"/attention_output/", "/out/"),
    (r"/gamma$", "/scale"),
    (r"/beta$", "/bias"),
)
# Prefixes some published files carry around the same layout (old optimizer-wrapped saves).
STRIPPED_PREFIXES = ("opt/target/",)
POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
# The ViTConfig options a file's arrays do not show (GELU form, normalisation, ...), as JSON;
# written only where they differ from the official architecture's.
OPTIONS_KEY = "vitbench/options"
OPTION_FIELDS = ("classifier", "class_token", "pos_embed_prefix", "gelu", "final_norm",
                 "norm_epsilon", "normalization")
BLOCK_INDEX = re.compile(r"^Transformer/encoderblock_(\d+)/")


class CheckpointError(ValueError):
    """A checkpoint file does not fit the model; the message names the key and shapes."""


def official_key(keras_path: str) -> str:
    key = keras_path
    for pattern, replacement in KERAS_TO_OFFICIAL:
        key = re.sub(pattern, replacement, key)
    return key


def model_variables(model) -> dict[str, object]:
    """Official key -> Keras variable, for every weight of a vitbench ViT."""
    variables = {}
    for layer in model.layers:
        for variable in layer.weights:
            if variable.path.rsplit("/", 1)[-1] in ADAPTER_WEIGHTS:  # not a checkpoint's
                continue
            # Keep the path from this top-level layer on, whatever scope built the model.
            path = variable.path[variable.path.rfind(layer.name + "/"):]
            variables[official_key(path)] = variable
    return variables


def model_to_arrays(model) -> dict[str, np.ndarray]:
    """The model's weights as the official flat dict of float32 arrays.

    Args:
        model: a vitbench `VisionTransformer`.

    Returns:
        Official key (e.g. 'Transformer/encoder_norm/scale') -> float32 numpy array.
    """
    return {key: np.asarray(variable.numpy(), dtype=np.float32)
            for key, variable in model_variables(model).items()}


def save_npz(model, path) -> pathlib.Path:
    """Writes the model's weights in the official `.npz` layout, atomically.

    Args:
        model: a vitbench `VisionTransformer`.
        path: the file to write (as given: no '.npz' is appended); missing parent folders
            are made, and an existing file is replaced.

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        OSError: the file cannot be written.
    """
    arrays = model_to_arrays(model)
    options = {field: getattr(model.config, field) for field in OPTION_FIELDS
               if getattr(model.config, field) != getattr(_OFFICIAL, field)}
    options.pop("classifier", None)  # read off the arrays unless a class token is pooled away
    if options:
        options["classifier"] = model.config.classifier
        arrays[OPTIONS_KEY] = np.array(json.dumps(options))
    return write_npz(arrays, path)


def split_options(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """(the weights, the ViTConfig options stored beside them by `save_npz`)."""
    if OPTIONS_KEY not in arrays:
        return arrays, {}
    arrays = dict(arrays)
    return arrays, json.loads(str(arrays.pop(OPTIONS_KEY)))


def write_npz(arrays: dict[str, np.ndarray], path) -> pathlib.Path:
    """Writes official-layout arrays to an `.npz` file, atomically.

    Args:
        arrays: official key -> array (e.g. from `model_to_arrays`).
        path: the file to write (as given); missing parent folders are made.

    Returns:
        The path written, as a `pathlib.Path`.

    Raises:
        OSError: the file cannot be written.
    """
    return files.write_atomic(path, lambda f: np.savez(f, **arrays))


def read_npz(path) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, read with pickles disabled and known prefixes removed.

    Args:
        path: the `.npz` file.

    Returns:
        Key -> numpy array, with a prefix every key shares (`STRIPPED_PREFIXES`) removed.

    Raises:
        CheckpointError: the file is not a readable `.npz`, or it holds pickled objects.
    """
    try:
        if not zipfile.is_zipfile(path):
            raise zipfile.BadZipFile("not a zip archive")
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CheckpointError(
            f"{path} is not a readable .npz file ({error}). If it came from the cache, delete "
            "it and load again to download a fresh copy.") from error
    except ValueError as error:
        raise CheckpointError(f"{path} holds pickled objects, which vitbench never loads: "
                              f"{error}") from error
    for prefix in STRIPPED_PREFIXES:
        if arrays and all(key.startswith(prefix) for key in arrays):
            arrays = {key[len(prefix):]: value for key, value in arrays.items()}
    return arrays


def head_and_resolution(path) -> tuple[int, int | None]:
    """(classes of the head, 0 without one; the image size its square position-embedding grid
    was made for, None for a grid that is not square) of an official-layout `.npz`, reading
    only the arrays that say so."""
    try:
        with np.load(path, allow_pickle=False) as data:
            prefix = next((p for p in STRIPPED_PREFIXES if f"{p}{POSEMB_KEY}" in data.files), "")
            head = next((data[prefix + key] for key in ("head/bias", "head/kernel")
                         if prefix + key in data.files), None)
            tokens = data[prefix + POSEMB_KEY].shape[1] - (prefix + "cls" in data.files)
            patch = data[prefix + "embedding/kernel"].shape[0]
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable official-layout .npz file ({error})"
                              ) from error
    side = int(round(tokens ** 0.5))
    return (int(head.shape[-1]) if head is not None and head.ndim else 0,
            side * int(patch) if side * side == tokens else None)


def _require(arrays, key, source, ndim):
    if key not in arrays:
        sample = ", ".join(sorted(arrays)[:6])
        raise CheckpointError(
            f"{source} is not a ViT checkpoint in the official layout: it has no {key!r} "
            f"(its keys start {sample}...). Hybrid ResNet+ViT and big_vision layouts are not "
            "supported.")
    if arrays[key].ndim != ndim:
        raise CheckpointError(f"{source}: {key!r} has shape {arrays[key].shape}, expected "
                              f"{ndim} dimensions")
    return arrays[key].shape


def _most_common_size(arrays, keys, source, ndim: int, axis: int) -> int:
    """The size of `axis` that most of the arrays `keys` (one per block) have, so that a single
    damaged array is the one the loader names, not all the others."""
    sizes = [arrays[key].shape[axis] for key in keys if key in arrays and arrays[key].ndim == ndim]
    if not sizes:
        _require(arrays, keys[0], source, ndim)  # raises, naming it
    return collections.Counter(sizes).most_common(1)[0][0]


def infer_architecture(arrays, source="checkpoint",
                       image_size: tuple[int, int] | None = None, options: dict | None = None
                       ) -> tuple[ViTConfig, int, tuple[int, int]]:
    """(config, num_classes, patch grid) read off the array shapes of an official-layout
    checkpoint; `options` are the ViTConfig fields the shapes do not show (`OPTION_FIELDS`).

    The depth counts up to the last `encoderblock_<i>` that holds at least half as many arrays
    as the fullest one, so that the strict loading names a block's missing arrays (even a
    whole block's) as missing and a stray array past the last block as unexpected. The files
    carry no grid shape: the grid is the one of `image_size` (height, width) where that has as
    many patches as the position embedding, else square."""
    patch, _, _, hidden = _require(arrays, "embedding/kernel", source, 4)
    per_block = collections.Counter(int(match.group(1))
                                    for match in map(BLOCK_INDEX.match, arrays) if match)
    fullest = max(per_block.values(), default=0)
    num_layers = max((index + 1 for index, count in per_block.items() if 2 * count >= fullest),
                     default=0)
    if not num_layers:
        _require(arrays, "Transformer/encoderblock_0/LayerNorm_0/scale", source, 1)
    blocks = [f"Transformer/encoderblock_{i}/" for i in range(num_layers)]
    num_heads = _most_common_size(
        arrays, [f"{b}MultiHeadDotProductAttention_1/query/kernel" for b in blocks], source, 3, 1)
    mlp_dim = _most_common_size(arrays, [f"{b}MlpBlock_3/Dense_0/kernel" for b in blocks],
                                source, 2, 1)
    options = dict(options or {})
    classifier = options.pop("classifier", "token" if "cls" in arrays else "gap")
    representation = arrays["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in arrays else None
    head = arrays.get("head/bias", arrays.get("head/kernel"))  # either names a missing other
    num_classes = head.shape[-1] if head is not None and head.ndim else 0
    layer_scale = any("/LayerScale_" in key for key in arrays)
    config = ViTConfig(**{
        "name": "vit", "hidden_size": int(hidden), "mlp_dim": int(mlp_dim),
        "num_heads": int(num_heads), "num_layers": num_layers, "patch_size": int(patch),
        "classifier": classifier, "representation_size": representation,
        "class_token": True if "cls" in arrays and classifier != "token" else None,
        "num_registers": int(arrays["reg"].shape[1]) if "reg" in arrays else 0,
        "layer_scale": 1e-5 if layer_scale else None, "pre_norm": "pre_norm/scale" in arrays,
        **options})
    tokens = _require(arrays, POSEMB_KEY, source, 3)[1] - config.posemb_prefix_tokens
    grid = image_size and tuple(side // int(patch) for side in image_size)
    return (config.replace(name=find_name(config) or "vit_custom"), int(num_classes),
            _patch_grid(tokens, grid, source, classifier))


def _patch_grid(tokens: int, grid, source, classifier: str) -> tuple[int, int]:
    if grid is not None and grid[0] * grid[1] == tokens:
        return tuple(grid)
    side = int(round(tokens ** 0.5))
    if side * side != tokens:
        no_cls = int(round((tokens - 1) ** 0.5)) ** 2 == tokens - 1 and classifier == "gap"
        raise CheckpointError(
            f"{source}: the position embedding has {tokens} patch rows, not a square grid, and "
            "the file does not say its shape: give the image size it was made for "
            f"(`image_size=(height, width)`, a grid of {tokens} patches)" + (
                f". Or is its 'cls' array missing? With a class token the grid is "
                f"{tokens - 1} patches, a square." if no_cls else "."))
    return side, side


def resample_position_embedding(posemb: np.ndarray, new_grid: tuple[int, int],
                                num_prefix_tokens: int,
                                old_grid: tuple[int, int] | None = None) -> np.ndarray:
    """Resizes a (1, prefix + rows*cols, D) position embedding from `old_grid` (default:
    square) to `new_grid`.

    As the official `interpolate_posembed`: the class-token row is kept as it is and the grid is
    zoomed with `scipy.ndimage.zoom(order=1)`, i.e. bilinear with corners aligned.
    """
    from scipy import ndimage

    prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    old_grid = old_grid or (int(round(len(grid) ** 0.5)),) * 2
    grid = grid.reshape(*old_grid, -1)
    zoom = (new_grid[0] / old_grid[0], new_grid[1] / old_grid[1], 1)
    grid = ndimage.zoom(grid, zoom, order=1).reshape(1, new_grid[0] * new_grid[1], -1)
    return np.concatenate([prefix, grid.astype(posemb.dtype)], axis=1)


def assign_arrays(model, arrays: dict[str, np.ndarray], source="checkpoint") -> None:
    """Loads official-layout arrays into a model; any missing, extra, misshapen or non-finite
    array raises.

    Args:
        model: a vitbench `VisionTransformer`; its variables are assigned in place.
        arrays: official key -> array, one for every weight of the model.
        source: what the arrays came from, for the error message.

    Raises:
        CheckpointError: an array is missing, unexpected, of the wrong shape or not finite
            (nothing is assigned then).
    """
    variables = model_variables(model)
    missing = [key for key in variables if key not in arrays]
    unexpected = sorted(key for key in arrays if key not in variables)
    problems = [f"missing {key!r} (expected shape {tuple(variables[key].shape)})"
                for key in missing]
    problems += [f"unexpected {key!r} with shape {arrays[key].shape}" for key in unexpected]
    problems += [f"{key!r} has shape {arrays[key].shape}, expected {tuple(variable.shape)}"
                 for key, variable in variables.items()
                 if key in arrays and arrays[key].shape != tuple(variable.shape)]
    problems += [f"{key!r} holds NaN or infinite values" for key in variables
                 if key in arrays and not np.isfinite(arrays[key]).all()]
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CheckpointError(f"{source} does not fit {model.name}:\n  {shown}{more}")
    for key, variable in variables.items():
        variable.assign(arrays[key].astype(variable.dtype))
