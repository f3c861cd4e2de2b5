"""What a checkpoint is before it is loaded: its identity in a run's config and record, its
released head, and the checks that refuse one that cannot be had."""

from __future__ import annotations

import functools
import hashlib
import pathlib
from collections.abc import Sequence

from vitbench.checkpoints import download, formats, hub, npz, registry
from vitbench.checkpoints.loader import read_architecture, resolve
from vitbench.models import zoo

SCRATCH_PREFIX = "scratch:"


def is_scratch(ckpt: str) -> bool:
    """A randomly initialised zoo model (`scratch:vit_b16`), not a checkpoint."""
    return ckpt.startswith(SCRATCH_PREFIX)


def scratch_model(ckpt: str) -> str:
    """The zoo name of a scratch model."""
    return ckpt[len(SCRATCH_PREFIX):]


def is_published(ckpt: str) -> bool:
    """A registry name or a URL: known by its name, whatever its bytes."""
    return (registry.find_checkpoint(ckpt) is not None or download.is_remote(ckpt)
            or hub.is_hub_id(ckpt))


def content_key(ckpt: str) -> str | None:
    """What identifies a checkpoint's weights in a run's config, beside its name.

    A local file is identified by its content (sha256): the same path trained again is a new
    checkpoint. A published checkpoint (registry name or URL) is identified by its name alone,
    so that a plan can be checked before anything is downloaded; records hold its hash too.
    """
    if is_scratch(ckpt) or is_published(ckpt):
        return None
    path = pathlib.Path(ckpt).expanduser()
    return file_sha256(resolve(ckpt, progress=False)) if path.exists() else None


def file_sha256(path: pathlib.Path) -> str:
    """sha256 of a file, computed once per (path, size, modification time); of a checkpoint
    folder, the sha256 of its weights and configuration files' names and hashes."""
    if path.is_dir():
        parts = [f"{name}:{file_sha256(path / name)}"
                 for name in sorted(formats.FOLDER_WEIGHTS + formats.FOLDER_CONFIGS)
                 if (path / name).is_file()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return download.sha256_of(pathlib.Path(path))


def checkpoint_id(ckpt: str, normalization: str | None = None) -> dict:
    """Name, path, content hash and input of the checkpoint (for the record); `normalization`
    replaces the one the checkpoint says (`vitbench run --normalization`)."""
    given = checkpoint_input(ckpt)
    if normalization:
        given = {**given, "normalization": normalization, "normalization_given": True}
    if is_scratch(ckpt):
        return {"name": ckpt, "sha256": None, "input": given}
    path = resolve(ckpt, progress=False)
    return {"name": ckpt, "path": str(path), "sha256": file_sha256(path), "input": given}


def checkpoint_input(ckpt: str) -> dict:
    """The preprocessing that travels with a checkpoint: its file format, the input
    normalisation it applies to the [-1, 1] images pipelines feed (a `zoo.NORMALIZATIONS`
    name or its numbers), and the resolution it was made for (None where not known)."""
    entry = registry.find_checkpoint(ckpt)
    if entry is not None:
        return {"format": entry.format, "normalization": entry.normalization,
                "resolution": entry.resolution}
    if is_scratch(ckpt):
        return {"format": "scratch", "normalization": "inception", "resolution": None}
    path = resolve(ckpt, progress=False)
    stat = path.stat()
    return dict(_file_input(str(path.resolve()), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _file_input(path: str, size: int, mtime_ns: int) -> tuple:
    weights, config, _, grid = read_architecture(pathlib.Path(path), path)
    return (("format", weights.format), ("normalization", config.normalization_name),
            ("resolution", grid[0] * config.patch_size if grid[0] == grid[1] else None))


def released_head(ckpt: str) -> tuple[int, int | None] | None:
    """(head classes, resolution) of a registry checkpoint or a local `.npz` (also a pretrain
    workdir's), read without loading the model; None where only loading tells (a scratch
    model, a `.keras` file, a URL not in the registry)."""
    entry = registry.find_checkpoint(ckpt)
    if entry is not None:
        return entry.num_classes, entry.resolution
    if is_scratch(ckpt) or download.is_remote(ckpt) or hub.is_hub_id(ckpt):
        return None
    path = resolve(ckpt, progress=False)  # a missing file raises, naming it
    return npz.head_and_resolution(path) if path.suffix == ".npz" else None


def check_checkpoint(ckpt: str, resolutions: Sequence[int] = (), scored: Sequence = ()) -> None:
    """Fails, before any work, on a checkpoint that cannot be had (an unknown scratch model,
    a local file that is not there, a download in offline mode), whose patch is larger than
    one of the `resolutions` (for zoo and registry models, whose patch size is known without
    reading the file), or whose head cannot score the `scored` tasks as released (a scratch
    model, another number of classes)."""
    entry = registry.find_checkpoint(ckpt)
    if scored and is_scratch(ckpt):
        raise ValueError(f"{ckpt} is untrained: scoring a head as released needs a trained "
                         "checkpoint")
    known = released_head(ckpt) if scored else None  # read once for all the tasks
    if known is not None:
        for task in scored:
            check_head(ckpt, known[0], task)
    if is_scratch(ckpt):
        model = scratch_model(ckpt)
    elif entry is not None:
        check_fetchable(entry.url)  # offline and not cached: refused here
        model = entry.model
    elif hub.is_hub_id(ckpt):
        hub.check_fetchable(ckpt)
        return
    elif download.is_remote(ckpt):
        download.check_fetchable(ckpt)
        return
    else:
        resolve(ckpt, progress=False)  # a missing file raises, naming it
        return
    config = zoo.get_config(model)  # an unknown name lists the valid ones
    for resolution in resolutions:
        config.grid(resolution)  # smaller than a patch: raises, naming both


def check_fetchable(url: str) -> None:
    """Raises in offline mode unless the file or hub repository `url` is cached."""
    (hub.check_fetchable if hub.is_hub_id(url) else download.check_fetchable)(url)


def check_head(ckpt: str, head_classes: int, task) -> None:
    """Raises unless a checkpoint's head has the `task`'s classes (scoring it as released)."""
    if head_classes != task.num_classes:
        what = "no head" if not head_classes else f"a {head_classes}-class head"
        raise ValueError(f"{ckpt} has {what} and {task.name} has {task.num_classes} classes: "
                         "scoring as released needs a checkpoint fine-tuned on the task's "
                         "label space (e.g. an ImageNet-1k fine-tune for imagenet); fine-tune "
                         "this one instead (without --as_released)")
