"""PyTorch releases' state dicts as numpy arrays, and the pieces every layout's converter uses.

`.safetensors` files are read with `safetensors` (no PyTorch needed); pickled `.pth`/`.pt`/
`.bin` files with `torch.load(weights_only=True)`, which refuses arbitrary objects and needs
PyTorch installed.
"""

from __future__ import annotations

import pathlib

import numpy as np

from vitbench.checkpoints.npz import CheckpointError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
# The dicts releases wrap their weights in (MAE: model, MoCo v3: state_dict, DINO: teacher),
# and the prefixes their keys carry (DDP's module., MoCo v3's base_encoder., DINO's backbone.).
CONTAINER_KEYS = ("state_dict", "model", "teacher", "model_ema", "module")
KEY_PREFIXES = ("module.", "encoder.")
# The ViT inside a self-supervised training state, beside its momentum copy, predictor or
# projector head (MoCo v3, DINO): only these keys are kept.
BACKBONE_PREFIXES = ("base_encoder.", "backbone.")


def is_state_dict_file(path: pathlib.Path) -> bool:
    return path.suffix in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES


def read_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Name -> array of a `.safetensors` or torch-pickled weights file, unwrapped.

    Raises:
        CheckpointError: the file is unreadable, holds no tensors, or (a pickle) PyTorch is
            not installed.
    """
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return unwrap(load_file(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error})"
                                  ) from error
    try:
        import torch
    except ImportError as error:
        raise CheckpointError(
            f"{path} is a PyTorch pickle: reading it needs PyTorch (`pip install torch`), or "
            "save the weights as .safetensors, which vitbench reads without it") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad or unsafe pickle
        raise CheckpointError(f"{path} is not a readable PyTorch weights file ({error})"
                              ) from error
    return unwrap(loaded)


def unwrap(loaded) -> dict[str, np.ndarray]:
    """The tensors of a loaded state dict as float arrays: container dicts opened, shared key
    prefixes removed."""
    while isinstance(loaded, dict):
        container = next((key for key in CONTAINER_KEYS if isinstance(loaded.get(key), dict)),
                         None)
        if container is None:
            break
        loaded = loaded[container]
    arrays = {key: _to_numpy(value) for key, value in (loaded or {}).items()
              if hasattr(value, "shape")}
    if not arrays:
        raise CheckpointError("the file holds no tensors")
    for prefix in KEY_PREFIXES:
        if all(key.startswith(prefix) for key in arrays):
            arrays = strip_prefix(arrays, prefix)
    for prefix in BACKBONE_PREFIXES:
        if any(key.startswith(prefix) for key in arrays):
            arrays = strip_prefix(arrays, prefix, keep_only=True)
    return arrays


def strip_prefix(arrays: dict, prefix: str, keep_only: bool = False) -> dict:
    """`arrays` with `prefix` removed from the keys that have it (`keep_only`: without the
    others)."""
    return {key[len(prefix):] if key.startswith(prefix) else key: value
            for key, value in arrays.items() if key.startswith(prefix) or not keep_only}


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no numpy dtype
        return value.detach().float().numpy() if value.is_floating_point() else \
            value.detach().numpy()
    return np.asarray(value)


class StateDict:
    """A state dict read key by key: `take` removes what a converter uses, so that
    `check_used` can name what no rule placed, and a missing key is named with the layout."""

    def __init__(self, arrays: dict[str, np.ndarray], layout: str, source: str):
        self.arrays, self.layout, self.source = dict(arrays), layout, source
        self.keys = tuple(arrays)  # as read, before any is taken

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def take(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            missing = [key] + [other for other in self.missing_in_blocks() if other != key]
            shown = ", ".join(repr(k) for k in missing[:8]) + (
                f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise CheckpointError(f"{self.source} ({self.layout} layout) has no {shown}")
        return np.asarray(self.arrays.pop(key), np.float32)

    def missing_in_blocks(self) -> list[str]:
        """Keys some numbered blocks (`<name>.<i>.`) have and others lack: a partial file's
        missing arrays, named all at once."""
        blocks = {}
        for key in self.keys:
            parts = key.split(".")
            index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
            if index is not None:
                prefix, rest = ".".join(parts[:index]), ".".join(parts[index + 1:])
                blocks.setdefault(prefix, {}).setdefault(int(parts[index]), set()).add(rest)
        missing = []
        for prefix, members in blocks.items():
            every = set().union(*members.values())
            missing += [f"{prefix}.{i}.{rest}" for i in range(max(members) + 1)
                        for rest in sorted(every - members.get(i, set()))]
        return missing

    def take_if(self, key: str) -> np.ndarray | None:
        return self.take(key) if key in self.arrays else None

    def strip(self, prefix: str, keep_only: bool = False) -> None:
        """Removes `prefix` from the keys that have it (`keep_only`: drops the others)."""
        self.arrays = strip_prefix(self.arrays, prefix, keep_only)
        self.keys = tuple(self.arrays)

    def drop(self, *prefixes: str) -> None:
        """Removes the keys starting with `prefixes` (parts vitbench does not use)."""
        self.arrays = {key: value for key, value in self.arrays.items()
                       if not key.startswith(prefixes)}

    def check_used(self) -> None:
        """Raises naming the keys no rule placed: a layout vitbench cannot load exactly."""
        if self.arrays:
            left = sorted(self.arrays)
            shown = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
            raise CheckpointError(
                f"{self.source} ({self.layout} layout) has arrays vitbench's ViT has no place "
                f"for: {shown}. Loading without them would change the model's outputs.")


def dense(out_in: np.ndarray) -> np.ndarray:
    """A torch Linear weight (out, in) as a Keras/Flax kernel (in, out)."""
    return out_in.T


def heads_kernel(out_in: np.ndarray, heads: int) -> np.ndarray:
    """A query/key/value Linear weight (heads * head_dim, in) as the official (in, heads,
    head_dim) kernel."""
    return out_in.T.reshape(out_in.shape[1], heads, -1)


def out_kernel(out_in: np.ndarray, heads: int) -> np.ndarray:
    """An attention output Linear weight (out, heads * head_dim) as (heads, head_dim, out)."""
    return out_in.T.reshape(heads, -1, out_in.shape[0])


def patch_kernel(weight: np.ndarray) -> np.ndarray:
    """A Conv2d weight (out, in, h, w) as a Keras kernel (h, w, in, out)."""
    return weight.transpose(2, 3, 1, 0)


def block_arrays(index: int, heads: int, *, norm1, qkv, out, norm2, fc1, fc2,
                 scales=(None, None)) -> dict[str, np.ndarray]:
    """One encoder block in the official layout from torch-shaped parts: each of norm1, out,
    norm2, fc1, fc2 a (weight, bias) pair, qkv three of them, `scales` the layer-scale
    vectors (or None)."""
    o = f"Transformer/encoderblock_{index}/"
    arrays = {}
    for name, (weight, bias) in zip(("LayerNorm_0", "LayerNorm_2"), (norm1, norm2)):
        arrays[f"{o}{name}/scale"], arrays[f"{o}{name}/bias"] = weight, bias
    for name, (weight, bias) in zip(("query", "key", "value"), qkv):
        arrays[f"{o}MultiHeadDotProductAttention_1/{name}/kernel"] = heads_kernel(weight, heads)
        arrays[f"{o}MultiHeadDotProductAttention_1/{name}/bias"] = bias.reshape(heads, -1)
    arrays[f"{o}MultiHeadDotProductAttention_1/out/kernel"] = out_kernel(out[0], heads)
    arrays[f"{o}MultiHeadDotProductAttention_1/out/bias"] = out[1]
    for name, (weight, bias) in zip(("Dense_0", "Dense_1"), (fc1, fc2)):
        arrays[f"{o}MlpBlock_3/{name}/kernel"] = dense(weight)
        arrays[f"{o}MlpBlock_3/{name}/bias"] = bias
    for name, scale in zip(("LayerScale_1", "LayerScale_3"), scales):
        if scale is not None:
            arrays[f"{o}{name}/scale"] = scale
    return arrays


def split_qkv(weight: np.ndarray, bias: np.ndarray | None):
    """A fused (3 * D, D) qkv projection as three (weight, bias) pairs."""
    weights = np.split(weight, 3)
    biases = np.split(bias, 3) if bias is not None else [np.zeros(len(w), np.float32)
                                                        for w in weights]
    return list(zip(weights, biases))


def count_blocks(arrays, prefix: str) -> int:
    """How many `<prefix><i>.` blocks a state dict has."""
    indices = {int(key[len(prefix):].split(".", 1)[0]) for key in arrays
               if key.startswith(prefix) and key[len(prefix):].split(".", 1)[0].isdigit()}
    return max(indices) + 1 if indices else 0
