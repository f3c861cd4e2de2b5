"""Top-1 accuracy of a classifier on a task's split, and ImageNet-ReaL accuracy."""

from __future__ import annotations

import numpy as np

from vitbench.evaluate import prediction


def predictions(model, task, split: str, batch_size: int, data_dir=None, key="label"):
    """(predicted class, `key` target) arrays over one ordered pass of `split`."""
    predicted, labels = [], []
    for logits, batch in prediction.predict_split(model.predict_on_batch, task, split,
                                                  batch_size, model.image_dtype, data_dir):
        predicted.append(np.argmax(logits, axis=-1))
        labels.append(batch[key])
    return np.concatenate(predicted), np.concatenate(labels)


def top1_accuracy(model, task, split: str, batch_size: int, data_dir=None,
                  key="label") -> dict:
    """{'accuracy', 'examples'} of `model` on `split`: the top class is the `key` target (class
    ids), or one of the targets (multi-hot vectors: big_vision's `prec@1`).

    Args:
        model: a `VisionTransformer` with a head.
        task: the `vitbench.tasks.Task` whose eval pipeline reads the split.
        split: a role ('test', 'tune_val', ...) or a split name of the task.
        batch_size: images per prediction call (a short last batch is padded).
        data_dir: the TFDS data dir; None for TFDS' default.
        key: the target feature: class ids, or multi-hot vectors.

    Returns:
        {'accuracy': fraction of hits, 'examples': images scored}.

    Raises:
        KeyError: `task` has no split of that role or name.
        OSError, ValueError: the data is missing or unreadable (`vitbench.data.sources.read`).
    """
    return accuracy(*predictions(model, task, split, batch_size, data_dir, key))


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """{'accuracy', 'examples'}: the share of items `hits` counts right."""
    return {"accuracy": float(np.mean(hits(predicted, labels))), "examples": int(len(labels))}


def hits(predicted, labels) -> np.ndarray:
    """Whether each item's predicted class is its label (class ids) or one of its labels
    (multi-hot rows)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    return labels[np.arange(len(predicted)), predicted] > 0 if labels.ndim == 2 \
        else predicted == labels


def real_accuracy_of(model, task, batch_size: int, data_dir=None) -> dict:
    """ImageNet-ReaL accuracy of `model` on the task's ReaL test set (see Task.real_dataset).

    Args:
        model: a `VisionTransformer` with the task's head.
        task: a `vitbench.tasks.Task` with a `real_dataset`.
        batch_size: images per prediction call.
        data_dir: the TFDS data dir; None for TFDS' default.

    Returns:
        {'real_accuracy', 'real_examples'} (see `real_accuracy`).

    Raises:
        OSError, ValueError: the ReaL data is missing or unreadable.
    """
    real_task = task.real_labels_task()
    predicted, real = predictions(model, real_task, "test", batch_size, data_dir, key="labels")
    return real_accuracy(predicted, real)


def real_accuracy(predicted: np.ndarray, real_labels: np.ndarray) -> dict:
    """ImageNet-ReaL accuracy: a prediction is right if it is among the image's real labels.

    `real_labels` is multi-hot (examples x classes). Images with no real label are left out of
    both counts, as big_vision's evaluator does.
    """
    real_labels = np.asarray(real_labels)
    has_label = real_labels.max(axis=1) > 0
    hits = real_labels[np.arange(len(predicted)), np.asarray(predicted)] > 0
    counted = int(has_label.sum())
    return {"real_accuracy": float(hits[has_label].mean()) if counted else float("nan"),
            "real_examples": counted}
