"""Per-example outcomes: the class a run predicted for each item of each split it scored, in
the split's order, kept in a compact file beside the records so that intervals and paired
comparisons can be computed later from what was measured.

A run's file is `<results_dir>/runs/outcomes/<suite>/<config hash>.npz`: one unsigned integer
array per score ("test"; a few-shot probe's "<k>shot/seed<s>"), uint16 where the classes
allow (ImageNet's 50,000 test items: 100 kB before compression); beside each, whether each
item was right, as packed bits ("<score>:correct", n/8 bytes: intervals and paired tests need
no labels); and the sha256 of the ordered labels, so that two runs can be checked to be on the
same items. It is written atomically and
the record names it with its own sha256. No pickle is read (`read` refuses object arrays).
"""

from __future__ import annotations

import hashlib
import io
import pathlib

import numpy as np

from vitbench import files
from vitbench.evaluate import classification

FOLDER = pathlib.Path("runs") / "outcomes"
LABELS_KEY = "labels_sha256"
CORRECT = ":correct"  # suffix of a score's packed right/wrong bits


class OutcomesError(ValueError):
    """An outcomes file is missing, altered or not for the items asked about."""


def labels_sha256(labels) -> str:
    """sha256 of the ordered labels (class ids as int64, multi-hot rows as uint8)."""
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.ndim == 2 else np.int64
    digest = hashlib.sha256(str(labels.shape).encode())
    digest.update(np.ascontiguousarray(labels, dtype).tobytes())
    return digest.hexdigest()


def packed(predicted) -> np.ndarray:
    """Predicted class ids in the smallest unsigned dtype that holds them (uint16 up to
    65,535 classes, else uint32)."""
    predicted = np.asarray(predicted)
    if predicted.size and (predicted.min() < 0 or predicted.max() >= 2**32):
        raise ValueError("predicted class ids must be in [0, 2**32)")
    small = not predicted.size or predicted.max() < 2**16
    return predicted.astype(np.uint16 if small else np.uint32)


def relative_path(suite: str, config_hash: str) -> pathlib.Path:
    """Where a run's outcomes go, relative to the results dir."""
    return FOLDER / suite / f"{config_hash}.npz"


def write(results_dir, suite: str, config_hash: str, predictions: dict, labels) -> dict:
    """Writes the run's outcomes file atomically; returns what the record keeps of it.

    Args:
        results_dir: the results folder.
        suite, config_hash: name the file (`relative_path`).
        predictions: score name -> predicted class per item, each as long as `labels`.
        labels: the items' labels, in the same order (only their hash is stored).

    Returns:
        {'file': path relative to the results dir, 'sha256', 'examples', 'labels_sha256',
        'scores': the score names}.

    Raises:
        ValueError: a prediction array is not as long as the labels.
    """
    examples = len(labels)
    wrong = {name: len(p) for name, p in predictions.items() if len(p) != examples}
    if wrong:
        raise ValueError(f"predictions of another length than the {examples} labels: {wrong}")
    digest = labels_sha256(labels)
    arrays = {LABELS_KEY: np.asarray(digest)}
    for name, predicted in predictions.items():
        arrays.update({name: packed(predicted),
                       name + CORRECT: np.packbits(classification.hits(predicted, labels))})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    relative = relative_path(suite, config_hash)
    files.write_atomic(pathlib.Path(results_dir) / relative, data)
    return {"file": relative.as_posix(), "sha256": hashlib.sha256(data).hexdigest(),
            "examples": examples, LABELS_KEY: digest, "scores": sorted(predictions)}


def read(results_dir, entry: dict) -> dict[str, np.ndarray]:
    """The predictions a record's `outcomes` entry names, by score, checked against its
    sha256.

    Raises:
        OutcomesError: the file is missing, or not the one the record names.
    """
    return {name: array for name, array in _arrays(results_dir, entry).items()
            if not name.endswith(CORRECT)}


def read_correct(results_dir, entry: dict) -> dict[str, np.ndarray]:
    """Whether each item was right (booleans), by score, from the file `entry` names."""
    return {name[:-len(CORRECT)]: np.unpackbits(array, count=entry["examples"]).astype(bool)
            for name, array in _arrays(results_dir, entry).items() if name.endswith(CORRECT)}


def _arrays(results_dir, entry: dict) -> dict[str, np.ndarray]:
    path = pathlib.Path(results_dir) / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OutcomesError(f"the outcomes file {path} cannot be read: {error.strerror}") \
            from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise OutcomesError(f"{path} is not the file its record names (sha256 differs)")
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files if name != LABELS_KEY}


def check_same_items(first: dict, second: dict) -> None:
    """Raises OutcomesError unless two records' outcomes are on the same ordered items."""
    if (first["examples"], first[LABELS_KEY]) != (second["examples"], second[LABELS_KEY]):
        raise OutcomesError(f"the runs scored different items ({first['file']}: "
                            f"{first['examples']}, {second['file']}: {second['examples']}, "
                            "or their labels differ in order or value)")
