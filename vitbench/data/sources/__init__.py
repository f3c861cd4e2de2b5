"""Where a task's examples come from: a TFDS dataset (default), a folder of class subfolders,
or a CSV file of image paths and labels.

Each source answers two questions: is the data there (`status`), and give me a split as a
tf.data.Dataset of example dicts with an `image` and a `label` (`read`). A split is a TFDS
split expression (`train[:800]+validation[:200]`), for folders too.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from vitbench.data import registry
from vitbench.data.sources.base import (  # noqa: F401  (the package's API)
    INVALID,
    MISSING,
    NEEDS_MANUAL,
    READY,
    WILL_DOWNLOAD,
    WILL_GENERATE,
    DownloadFailedError,
    ManualDownloadError,
    Source,
    Status,
    default_data_dir,
)
from vitbench.data.sources.image_files import (  # noqa: F401
    ImageFiles,
    ImageFilesSource,
    csv_images,
    folder_images,
)
from vitbench.data.sources.tfds_source import (  # noqa: F401
    TfdsSource,
    tfds_prepared_builder,
    tfds_status,
)

# A task's `source` field -> where its examples come from.
SOURCES: dict[str, Source] = {"tfds": TfdsSource(), "folder": ImageFilesSource(folder_images),
                              "csv": ImageFilesSource(csv_images)}


def get_source(kind: str) -> Source:
    if kind not in SOURCES:
        raise KeyError(f"unknown task source {kind!r}; valid: {', '.join(SOURCES)}")
    return SOURCES[kind]


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


def split_size(task, split, data_dir=None) -> int | None:
    """Examples of a split expression, never downloading: from the expression where its
    slices are absolute (`train[:800]+train[2754:2954]` is 1,000 images, known before any
    download), else from the data's metadata where the data is ready (image files, or a
    prepared TFDS dataset); None otherwise."""
    if task.source == "tfds":
        size = _absolute_size(tfds.core.ReadInstruction.from_spec(split))
        if size is not None or status(task, data_dir).state != READY:
            return size
    return num_examples(task, split, data_dir)


def _absolute_size(instruction) -> int | None:
    """The examples a parsed TFDS split expression names where every slice is absolute and
    bounded (`[a:b]`, `[:b]` with a, b >= 0), else None."""
    if hasattr(instruction, "left"):  # a sum of splits
        parts = [_absolute_size(instruction.left), _absolute_size(instruction.right)]
        return None if None in parts else sum(parts)
    start, stop = instruction.from_ or 0, instruction.to
    if instruction.unit != "abs" or stop is None or start < 0 or stop < start:
        return None
    return stop - start


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
