"""Where a task's examples come from: a TFDS dataset (default), a folder of class subfolders,
or a CSV file of image paths and labels.

Each source answers two questions: is the data there (`status`), and give me a split as a
tf.data.Dataset of example dicts with an `image` and a `label` (`read`). A split is a TFDS
split expression (`train[:800]+validation[:200]`), for folders too.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import posixpath
import types
import urllib.parse
from collections.abc import Callable

import tensorflow as tf
import tensorflow_datasets as tfds

from vitbench import offline
from vitbench.data import (
    builders,  # noqa: F401  (registers vitbench's own TFDS datasets)
    registry,
)

READY, WILL_GENERATE, WILL_DOWNLOAD, NEEDS_MANUAL, MISSING, INVALID = (
    "ready", "will generate", "will download", "needs manual files", "missing", "invalid")


class ManualDownloadError(OSError):
    """A dataset needs files the user must download; the message says which and where."""


class DownloadFailedError(OSError):
    """TFDS could not download a dataset; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Status:
    state: str  # READY, WILL_GENERATE, WILL_DOWNLOAD, NEEDS_MANUAL, MISSING or INVALID
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
    read: Callable  # (task, split, data_dir) -> tf.data.Dataset of examples, in order
    num_examples: Callable  # (task, split, data_dir) -> int, or None where unknown
    # task -> what identifies the data's content in a run's config, or None where the name
    # and version do (TFDS)
    fingerprint: Callable = lambda task: None
    # (task, data_dir) -> {feature: tf.TensorSpec} of a read example, or None where unknown
    features: Callable = lambda task, data_dir: None
    # (task, data_dir) -> the class names by class id, or None where the data names none
    class_names: Callable = lambda task, data_dir: None


SOURCES: dict[str, Source] = {}


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
    no_network = offline.is_offline()
    downloads = _downloads(builder) if no_network else []  # what it would fetch: offline only
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        manual = _manual_dir(builder)
        if not (manual.is_dir() and any(manual.iterdir())):
            return Status(NEEDS_MANUAL, _manual_message(task, builder))
        if not downloads:
            return Status(WILL_DOWNLOAD, f"will prepare from the files in {manual}")
    if no_network:
        return Status(MISSING, f"{task.name}: TFDS dataset {task.tfds_spec} is not prepared in "
                               f"{builder.data_dir_root} and {offline.VARIABLE} is set, so "
                               f"{', '.join(downloads) or 'it'} is not downloaded: prepare it "
                               f"where there is network (`tfds build {builder.name} "
                               "--data_dir DIR`, or every dataset of a suite with `vitbench "
                               "tasks --suite SUITE --prepare --data_dir DIR`) and copy "
                               f"DIR/{builder.name} into {builder.data_dir_root}")
    return Status(WILL_DOWNLOAD, f"TFDS downloads it into {builder.data_dir_root}")


def _downloads(builder) -> list:
    """The URLs that preparing the dataset downloads: those of its checksums file whose files
    are not in the manual-download folder (ImageNet-ReaL's label file beside the tar there)."""
    manual = _manual_dir(builder)
    present = {path.name for path in manual.iterdir()} if manual.is_dir() else set()
    return [url for url in (builder.url_infos or {})
            if posixpath.basename(urllib.parse.urlsplit(url).path) not in present]


def _manual_message(task, builder) -> str:
    instructions = " ".join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
    return (f"{task.name}: TFDS dataset {task.tfds_spec} cannot be downloaded automatically. "
            f"Put its files in {_manual_dir(builder)} (or pass --data_dir to use another "
            f"<data_dir>/downloads/manual). TFDS says: {instructions}")


# What a failed download raises: requests' and urllib's errors (OSErrors), TFDS's own for an
# HTTP error status and for a file whose checksum is not the one its checksums file records.
DOWNLOAD_ERRORS = (OSError, tfds.core.download.util.DownloadError,
                   tfds.core.download.download_manager.NonMatchingChecksumError)


def tfds_prepared_builder(task, data_dir=None):
    builder = _tfds_builder(task, data_dir)
    if not builder.is_prepared():
        status = tfds_status(task, data_dir)
        if status.state in (NEEDS_MANUAL, MISSING):
            raise ManualDownloadError(status.detail)
        try:
            builder.download_and_prepare()
        except DOWNLOAD_ERRORS as error:
            raise DownloadFailedError(
                f"{task.name}: TFDS could not download {task.tfds_spec} into "
                f"{builder.data_dir_root} ({error}). Check the network, or prepare the dataset "
                f"on a machine that has it (e.g. `tfds build {builder.name}`) and copy its "
                f"<data_dir>/{builder.name} folder into {builder.data_dir_root} (or pass "
                "--data_dir).") from error
    return builder


def tfds_read(task, split, data_dir=None) -> tf.data.Dataset:
    builder = tfds_prepared_builder(task, data_dir)
    return builder.as_dataset(split=split, shuffle_files=False)


def tfds_num_examples(task, split, data_dir=None):
    try:
        return tfds_prepared_builder(task, data_dir).info.splits[split].num_examples
    except KeyError:  # metadata without split sizes (e.g. mocked data)
        return None


def tfds_features(task, data_dir=None):
    """The decoded examples' features, from the dataset's code or its prepared metadata."""
    try:
        return _tfds_builder(task, data_dir).info.features.get_tensor_spec()
    except Exception:  # noqa: BLE001  (no metadata to check against: the run will tell)
        return None


SOURCES["tfds"] = Source(tfds_status, tfds_read, tfds_num_examples, features=tfds_features)


# --- Image files of your own: a folder of class subfolders, or a CSV file ----------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # as TFDS's ImageFolder


class ImageFiles:
    """Image paths and class ids by split, read with TFDS split expressions
    (`train[:90%]+test`, resolved with `tfds.core.ReadInstruction`).

    `splits` come sorted (by class folder and file name, or by CSV path); each is shuffled by
    `random.Random(split name)`, as TFDS's ImageFolder does, into a fixed order. Slices
    therefore mix the classes whatever the order of the files on disk or of the CSV rows.
    """

    def __init__(self, task, where: pathlib.Path, splits: dict[str, list],
                 names: list | None = None):
        import random

        if not any(splits.values()):
            raise FileNotFoundError(f"{task.name}: no images in {where} "
                                    f"({', '.join(IMAGE_SUFFIXES)} files; a folder holds "
                                    "<split>/<class name>/<image>)")
        self.where, self.splits, self.names = where, {}, names  # names: by class id
        for name, pairs in splits.items():
            pairs = list(pairs)
            random.Random(name).shuffle(pairs)
            self.splits[name] = pairs

    def examples(self, split: str):
        """(path, label) pairs of a split expression."""
        sizes = {name: types.SimpleNamespace(num_examples=len(items))
                 for name, items in self.splits.items()}
        try:
            instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(sizes)
        except (ValueError, AssertionError, KeyError) as error:
            raise ValueError(f"{self.where}: bad split {split!r} (splits: "
                             f"{', '.join(sorted(self.splits))}): {error}") from None
        return [pair for i in instructions for pair in self.splits[i.splitname][i.from_:i.to]]


def _check_classes(task, where, names) -> None:
    """Class names must be as many as the task's classes."""
    if len(names) != task.num_classes:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(f"{task.name}: {where} has {len(names)} classes ({shown}), the task "
                         f"says num_classes = {task.num_classes}")


def folder_images(task) -> ImageFiles:
    """`<dataset>/<split>/<class name>/<image>`: classes are the class folders of all splits,
    numbered in sorted order."""
    root = pathlib.Path(task.dataset).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{task.name}: image folder {root} does not exist; expected "
            f"{root}/<split>/<class name>/<image files>")
    folders = {split.name: sorted(d for d in split.iterdir() if d.is_dir())
               for split in root.iterdir() if split.is_dir()}
    names = sorted({folder.name for classes in folders.values() for folder in classes})
    splits = {split: [(str(path), names.index(folder.name)) for folder in classes
                      for path in sorted(folder.iterdir())
                      if path.suffix.lower() in IMAGE_SUFFIXES]
              for split, classes in folders.items()}
    files = ImageFiles(task, root, splits, names)
    _check_classes(task, root, names)
    return files


def csv_images(task) -> ImageFiles:
    """A CSV file with a header naming `path`, `label` and optionally `split`. Paths are
    relative to the CSV's folder; labels are class ids (below the task's `num_classes`), or
    class names (as many as its classes, numbered in sorted order); rows without a split
    column belong to `train`."""
    import csv

    path = pathlib.Path(task.dataset).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{task.name}: CSV file {path} does not exist (rows of "
                                "path,label[,split])")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"path", "label"} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{path}: needs a header with 'path' and 'label' columns "
                         f"(and optionally 'split'); missing {sorted(missing)}")
    labels, names = [row["label"] for row in rows], None
    if all(label.isdigit() for label in labels):
        ids = [int(label) for label in labels]
        if ids and max(ids) >= task.num_classes:
            raise ValueError(f"{task.name}: {path} has class id {max(ids)}, the task says "
                             f"num_classes = {task.num_classes} (ids 0 to "
                             f"{task.num_classes - 1})")
    else:
        names = sorted(set(labels))
        _check_classes(task, path, names)
        ids = [names.index(label) for label in labels]
    splits: dict[str, list] = {}
    for row, label in sorted(zip(rows, ids), key=lambda pair: (pair[0]["path"], pair[1])):
        splits.setdefault(row.get("split") or "train", []).append(
            (str(path.parent / row["path"]), label))
    return ImageFiles(task, path, splits, names)


def _image_files_source(load: Callable) -> Source:
    """The Source of image files listed by `load(task) -> ImageFiles`."""

    def file_status(task, data_dir=None) -> Status:
        try:
            files = load(task)
            for split in task.splits.values():  # a bad split expression, before training
                files.examples(split)
            return Status(READY, str(files.where))
        except FileNotFoundError as error:
            return Status(MISSING, str(error))
        except ValueError as error:
            return Status(INVALID, str(error))

    def file_read(task, split, data_dir=None) -> tf.data.Dataset:
        pairs = load(task).examples(split)
        dataset = tf.data.Dataset.from_tensor_slices({
            "path": tf.constant([path for path, _ in pairs], tf.string),
            "label": tf.constant([label for _, label in pairs], tf.int64)})
        return dataset.map(lambda e: {"image": tf.io.read_file(e["path"]),
                                      "label": e["label"]})

    def file_num_examples(task, split, data_dir=None) -> int:
        return len(load(task).examples(split))

    def file_fingerprint(task) -> str | None:
        """sha256 of every split's (path, size, label) listing: added, removed, relabelled or
        rewritten (resized) images make a new config; None while the files are not there."""
        import hashlib
        import json

        try:
            files = load(task)
        except (OSError, ValueError):
            return None
        root = files.where if files.where.is_dir() else files.where.parent
        listing = {split: [(os.path.relpath(path, root), os.path.getsize(path), label)
                           for path, label in sorted(pairs)]
                   for split, pairs in sorted(files.splits.items())}
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()

    def file_features(task, data_dir=None):
        return {"image": tf.TensorSpec([], tf.string), "label": tf.TensorSpec([], tf.int64)}

    def file_class_names(task, data_dir=None) -> list | None:
        return load(task).names

    return Source(file_status, file_read, file_num_examples, file_fingerprint, file_features,
                  file_class_names)


SOURCES["folder"] = _image_files_source(folder_images)
SOURCES["csv"] = _image_files_source(csv_images)


def class_names(task, data_dir=None) -> list | None:
    """The task's class names by class id (a folder task's class folders, a CSV task's
    class names), or None where its data names none or cannot be read."""
    try:
        return get_source(task.source).class_names(task, data_dir)
    except (OSError, ValueError):
        return None


def status(task, data_dir=None) -> Status:
    """Whether the task's data is ready, will be downloaded, or needs the user's files; and
    `INVALID` where its preprocessing cannot apply to the data's examples."""
    source = get_source(task.source)
    state = source.status(task, data_dir)
    if state.usable:
        problem = _preprocessing_problem(task, source.features(task, data_dir))
        if problem:
            return Status(INVALID, problem)
    return state


def _preprocessing_problem(task, features) -> str | None:
    """Why the task's train or eval preprocessing fails on examples with `features` (traced,
    not run: a label op naming a feature the data lacks, say), or None."""
    if features is None:
        return None
    seed = {"_rng": tf.TensorSpec([2], tf.int64)}  # the train pipeline's per-example seed
    for phase, spec in ("train", {**features, **seed}), ("eval", features):
        try:
            tf.function(registry.chain(task.pp(phase)), autograph=False).get_concrete_function(
                spec)
        except Exception as error:  # noqa: BLE001  (whatever the tracing raised, named below)
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            return (f"{task.name}: its {phase} preprocessing {task.pp(phase)!r} does not apply "
                    f"to the data's examples (features: {', '.join(sorted(features))}): "
                    f"{type(error).__name__}: {message}")
    return None


def num_examples(task, split, data_dir=None) -> int | None:
    """Number of examples of a split expression, or None where the metadata does not say."""
    return get_source(task.source).num_examples(task, split, data_dir)


def fingerprint(task) -> str | None:
    """What identifies the task's data beyond its name (image files' listing), or None."""
    return get_source(task.source).fingerprint(task)


def read(task, split, data_dir=None) -> tf.data.Dataset:
    """Raw examples of a split, in the dataset's order."""
    return get_source(task.source).read(task, split, data_dir)


def check_ready(tasks, data_dir=None) -> None:
    """Raises one error listing every task whose data cannot be had (before any work starts)."""
    problems = [status(task, data_dir) for task in tasks]
    blocked = [problem.detail for problem in problems if not problem.usable]
    if blocked:
        raise ManualDownloadError("some tasks' data is missing or unusable:\n  "
                                  + "\n  ".join(blocked))
