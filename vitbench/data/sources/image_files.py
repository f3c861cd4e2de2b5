"""Image files of the user's: a folder of class subfolders, or a CSV file of paths and
labels, read with TFDS split expressions."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pathlib
import random
import types
from collections.abc import Callable

import tensorflow as tf
import tensorflow_datasets as tfds

from vitbench.data.sources.base import INVALID, MISSING, READY, Source, Status

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


class ImageFilesSource(Source):
    """Image files of the user's, listed by `load(task) -> ImageFiles` (a folder of class
    subfolders, or a CSV file)."""

    def __init__(self, load: Callable):
        self.load = load

    def status(self, task, data_dir=None):
        try:
            files = self.load(task)
            for split in task.splits.values():  # a bad split expression, before training
                files.examples(split)
            return Status(READY, str(files.where))
        except FileNotFoundError as error:
            return Status(MISSING, str(error))
        except ValueError as error:
            return Status(INVALID, str(error))

    def read(self, task, split, data_dir=None):
        pairs = self.load(task).examples(split)
        dataset = tf.data.Dataset.from_tensor_slices({
            "path": tf.constant([path for path, _ in pairs], tf.string),
            "label": tf.constant([label for _, label in pairs], tf.int64)})
        return dataset.map(lambda e: {"image": tf.io.read_file(e["path"]),
                                      "label": e["label"]})

    def num_examples(self, task, split, data_dir=None):
        return len(self.load(task).examples(split))

    def fingerprint(self, task):
        """sha256 of every split's (path, size, label) listing: added, removed, relabelled or
        rewritten (resized) images make a new config; None while the files are not there."""
        try:
            files = self.load(task)
        except (OSError, ValueError):
            return None
        root = files.where if files.where.is_dir() else files.where.parent
        listing = {split: [(os.path.relpath(path, root), os.path.getsize(path), label)
                           for path, label in sorted(pairs)]
                   for split, pairs in sorted(files.splits.items())}
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()

    def features(self, task, data_dir=None):
        return {"image": tf.TensorSpec([], tf.string), "label": tf.TensorSpec([], tf.int64)}

    def class_names(self, task, data_dir=None):
        return self.load(task).names
