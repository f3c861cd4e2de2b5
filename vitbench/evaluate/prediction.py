"""Predicting batch after batch as every evaluation loop does (accuracy, ReaL, few-shot
features, `vitbench bench --mode infer`).

A short last batch is padded to a full one (one shape, one compilation), its padded rows
dropped from the outputs; the next batch is copied to the device during the current one.
Design notes: docs/design/evaluation.md.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator

import keras
import numpy as np


def padded(images, batch_size: int):
    """(`images` padded with zeros to `batch_size` rows, the number of real rows)."""
    count = len(images)
    if count < batch_size:
        images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]),
                                                  images.dtype)])
    return images, count


def _to_device(images):
    """`images` as a backend tensor on the device. Under a `keras.distribution` they stay on
    the host, for Keras to shard."""
    if keras.distribution.distribution() is not None:
        return images
    return keras.ops.convert_to_tensor(images)


def _outputs(predict: Callable, images, count: int):
    outputs = predict(images)
    return {name: np.asarray(value)[:count] for name, value in outputs.items()} \
        if isinstance(outputs, dict) else np.asarray(outputs)[:count]


def predict_batches(predict: Callable, batches: Iterable[dict], batch_size: int,
                    key: str = "image") -> Iterator[tuple[object, dict]]:
    """For each batch (a dict of numpy arrays), yields (`predict(batch[key])` as numpy, with
    the padded rows dropped, the batch); see the module docstring. The copies run on a
    thread of their own: JAX's copy from pageable host memory holds the calling thread for
    its whole length, and `predict` (Keras' `predict_on_batch`) blocks until the outputs are
    on the host.

    Args:
        predict: maps a full batch of images to an array or a dict of arrays.
        batches: dicts of numpy arrays, none longer than `batch_size`.
        batch_size: the rows every `predict` call gets.
        key: the feature of a batch that `predict` is given.

    Yields:
        (outputs as numpy, or a dict of them, for the batch's real rows; the batch).
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="copy") as copier:
        pending = None
        for batch in batches:
            images, count = padded(batch[key], batch_size)
            queued = (copier.submit(_to_device, images), count, batch)
            if pending is not None:
                yield _outputs(predict, pending[0].result(), pending[1]), pending[2]
            pending = queued
        if pending is not None:
            yield _outputs(predict, pending[0].result(), pending[1]), pending[2]


def predict_split(predict: Callable, task, split: str, batch_size: int, image_dtype: str,
                  data_dir=None) -> Iterator[tuple[object, dict]]:
    """`predict_batches` over one ordered pass of `task`'s `split` through its eval pipeline,
    the images in `image_dtype` (the model's compute dtype: `VisionTransformer.image_dtype`)."""
    from vitbench.data import pipeline  # TensorFlow: here, so that model benchmarks run without

    batches = pipeline.as_numpy(pipeline.eval_dataset(task, split, batch_size,
                                                      data_dir=data_dir,
                                                      image_dtype=image_dtype))
    return predict_batches(predict, batches, batch_size)
