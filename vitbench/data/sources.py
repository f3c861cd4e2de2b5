"""Where a task's examples come from: a TFDS dataset (default) or a folder of class subfolders.

Each source answers two questions: is the data there (`status`), and give me a split as a
tf.data.Dataset of example dicts with an `image` and a `label` (`read`). A split is a TFDS
split expression (`train[:800]+validation[:200]`), for folders too.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Dict, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from vitbench.data import builders  # noqa: F401  (registers vitbench's own TFDS datasets)

READY, WILL_GENERATE, WILL_DOWNLOAD, NEEDS_MANUAL, MISSING = (
    "ready", "will generate", "will download", "needs manual files", "missing")


class ManualDownloadError(OSError):
    """A dataset needs files the user must download; the message says which and where."""


@dataclasses.dataclass(frozen=True)
class Status:
    state: str  # READY, WILL_GENERATE, WILL_DOWNLOAD, NEEDS_MANUAL or MISSING
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.state in (READY, WILL_GENERATE, WILL_DOWNLOAD)


def default_data_dir() -> str:
    """$TFDS_DATA_DIR, else TFDS's own default (~/tensorflow_datasets)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class Source:
    status: Callable  # (task, data_dir) -> Status
    builder: Callable  # (task, data_dir) -> a prepared tfds builder
    read: Callable  # (task, split, data_dir) -> tf.data.Dataset


SOURCES: Dict[str, Source] = {}


def get_source(kind: str) -> Source:
    if kind not in SOURCES:
        raise KeyError(f"unknown task source {kind!r}; valid: {', '.join(SOURCES)}")
    return SOURCES[kind]


# --- TFDS ---------------------------------------------------------------------------------

def _tfds_builder(task, data_dir):
    return tfds.builder(task.tfds_spec, data_dir=data_dir or default_data_dir())


def _manual_dir(builder) -> pathlib.Path:
    return pathlib.Path(builder.data_dir_root) / "downloads" / "manual"


def tfds_status(task, data_dir=None) -> Status:
    builder = _tfds_builder(task, data_dir)
    if builder.is_prepared():
        return Status(READY, builder.data_dir)
    if getattr(builder, "GENERATED_LOCALLY", False):
        return Status(WILL_GENERATE, f"vitbench renders it into {builder.data_dir_root}")
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        manual = _manual_dir(builder)
        if manual.is_dir() and any(manual.iterdir()):
            return Status(WILL_DOWNLOAD, f"will prepare from the files in {manual}")
        return Status(NEEDS_MANUAL, _manual_message(task, builder))
    return Status(WILL_DOWNLOAD, f"TFDS downloads it into {builder.data_dir_root}")


def _manual_message(task, builder) -> str:
    instructions = " ".join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
    return (f"{task.name}: TFDS dataset {task.tfds_spec} cannot be downloaded automatically. "
            f"Put its files in {_manual_dir(builder)} (or pass --data_dir to use another "
            f"<data_dir>/downloads/manual). TFDS says: {instructions}")


def tfds_prepared_builder(task, data_dir=None):
    builder = _tfds_builder(task, data_dir)
    if not builder.is_prepared():
        status = tfds_status(task, data_dir)
        if status.state == NEEDS_MANUAL:
            raise ManualDownloadError(status.detail)
        builder.download_and_prepare()
    return builder


def tfds_read(task, split, data_dir=None) -> tf.data.Dataset:
    builder = tfds_prepared_builder(task, data_dir)
    return builder.as_dataset(split=split, shuffle_files=False)


SOURCES["tfds"] = Source(tfds_status, tfds_prepared_builder, tfds_read)


# --- A folder of class subfolders: <dataset>/<split>/<class>/<image> -------------------------

def _folder_builder(task, data_dir=None):
    root = pathlib.Path(task.dataset).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{task.name}: image folder {root} does not exist; expected "
            f"{root}/<split>/<class name>/<image files>")
    return tfds.ImageFolder(str(root))


def folder_status(task, data_dir=None) -> Status:
    root = pathlib.Path(task.dataset).expanduser()
    if root.is_dir() and any(path.is_dir() for path in root.iterdir()):
        return Status(READY, str(root))
    return Status(MISSING, f"{task.name}: no image folder at {root} (expected "
                           f"{root}/<split>/<class name>/<image files>)")


def folder_read(task, split, data_dir=None) -> tf.data.Dataset:
    builder = _folder_builder(task)
    return builder.as_dataset(split=split, shuffle_files=False, decoders={
        "image": tfds.decode.SkipDecoding()})


SOURCES["folder"] = Source(folder_status, _folder_builder, folder_read)


def status(task, data_dir=None) -> Status:
    """Whether the task's data is ready, will be downloaded, or needs the user's files."""
    return get_source(task.source).status(task, data_dir)


def num_examples(task, split, data_dir=None) -> Optional[int]:
    """Number of examples of a split expression, or None where the metadata does not say."""
    builder = get_source(task.source).builder(task, data_dir)
    try:
        return builder.info.splits[split].num_examples
    except KeyError:
        return None


def read(task, split, data_dir=None) -> tf.data.Dataset:
    """Raw examples of a split, in the dataset's order."""
    return get_source(task.source).read(task, split, data_dir)


def check_ready(tasks, data_dir=None) -> None:
    """Raises one error listing every task whose data cannot be had (before any work starts)."""
    problems = [status(task, data_dir) for task in tasks]
    blocked = [problem.detail for problem in problems if not problem.usable]
    if blocked:
        raise ManualDownloadError("some tasks' data is missing:\n  " + "\n  ".join(blocked))
