"""tf.data input pipelines: a task's split -> batches of NHWC float images in [-1, 1] and labels.

Training: endless full batches, shuffled with the run's seed and augmented reproducibly.
Evaluation: one ordered pass, the last batch possibly short. Images come in `image_dtype` (the
model's compute dtype); each process of a multi-host job reads its own shard.
Design notes: docs/design/data.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import tensorflow as tf
import tensorflow_datasets as tfds

from vitbench.data import registry, sources

CACHE_MAX_EXAMPLES = 20_000  # decoded splits up to this size are kept in memory
SHUFFLE_BUFFER = 10_000


def _process_shard(dataset, process_index: int, process_count: int):
    return dataset.shard(process_count, process_index) if process_count > 1 else dataset


def _preprocess(task, mode: str, image_dtype: str):
    """The task's `mode` preprocessing chain, images cast to `image_dtype` at its end."""
    chain = registry.chain(task.pp(mode))

    def apply(example):
        example = chain(example)
        return {**example, "image": tf.cast(example["image"], image_dtype)}

    return apply


def train_dataset(task, split: str, batch_size: int, *, seed: int = 0, data_dir=None,
                  process_index: int = 0, process_count: int = 1,
                  cache: bool | None = None, start_batch: int = 0,
                  image_dtype: str = "float32") -> tf.data.Dataset:
    """Endless shuffled, augmented batches of `split` (a role like 'fit' or a split name).

    `start_batch` resumes the stream: the result equals this pipeline's batches from that
    index on, and the skipped examples are not augmented.

    Args:
        task: the `vitbench.tasks.Task`; its 'train' preprocessing chain is applied.
        split: a role ('fit', 'tune_train', ...) or a split name of the task.
        batch_size: images per batch (this process's share in a multi-host job).
        seed: decides the shuffle and the augmentation.
        data_dir: the TFDS data dir; None for TFDS' default.
        process_index: this process's index in a multi-host job.
        process_count: the job's processes; each reads every `process_count`-th example.
        cache: keep decoded examples in memory; None does so for splits of at most
            `CACHE_MAX_EXAMPLES`.
        start_batch: the batch to start from.
        image_dtype: the dtype images are cast to (the model's compute dtype).

    Returns:
        An endless `tf.data.Dataset` of {'image', 'label' (or 'labels')} batches.

    Raises:
        KeyError: `task` has no split of that role or name.
        OSError, ValueError: the data is missing or unreadable (`vitbench.data.sources.read`).
    """
    expression = task.split(split)
    dataset = _process_shard(sources.read(task, expression, data_dir), process_index,
                             process_count)
    if cache is None:
        size = sources.num_examples(task, expression, data_dir)
        cache = size is not None and size <= CACHE_MAX_EXAMPLES
    if cache:
        dataset = dataset.cache()
    dataset = shuffled(dataset, seed, start_batch * batch_size, process_index)
    dataset = dataset.map(lambda example, rng: {**example, "_rng": rng})
    dataset = dataset.map(_preprocess(task, "train", image_dtype),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def shuffled(dataset: tf.data.Dataset, seed: int, skip: int = 0, process_index: int = 0
             ) -> tf.data.Dataset:
    """Endless (example, rng) pairs: `dataset` reshuffled every epoch with `seed`, each
    example with a stateless seed of shape (2,) of its own (so augmentation is reproducible
    from the run's seed), from the `skip`-th pair on. The order depends on the seed and the
    number of examples only, not on what they hold."""
    dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=seed + process_index).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).skip(skip)


def eval_dataset(task, split: str, batch_size: int, *, data_dir=None, process_index: int = 0,
                 process_count: int = 1, image_dtype: str = "float32") -> tf.data.Dataset:
    """One ordered pass over `split`, preprocessed for evaluation, in batches.

    Args:
        task: the `vitbench.tasks.Task`; its 'eval' preprocessing chain is applied.
        split: a role ('test', 'tune_val', ...) or a split name of the task.
        batch_size: images per batch; the last batch may be shorter.
        data_dir: the TFDS data dir; None for TFDS' default.
        process_index: this process's index in a multi-host job.
        process_count: the job's processes; each reads every `process_count`-th example.
        image_dtype: the dtype images are cast to (the model's compute dtype).

    Returns:
        A `tf.data.Dataset` of {'image', 'label' (or 'labels')} batches.

    Raises:
        KeyError: `task` has no split of that role or name.
        OSError, ValueError: the data is missing or unreadable (`vitbench.data.sources.read`).
    """
    dataset = _process_shard(sources.read(task, task.split(split), data_dir), process_index,
                             process_count)
    dataset = dataset.map(_preprocess(task, "eval", image_dtype),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def as_numpy(dataset: tf.data.Dataset) -> Iterator[dict]:
    """Batches as dicts of numpy arrays (what Keras on any backend takes).

    Args:
        dataset: a dataset of dict batches (`train_dataset`, `eval_dataset`).

    Returns:
        An iterator of dicts of numpy arrays.
    """
    return iter(tfds.as_numpy(dataset))
