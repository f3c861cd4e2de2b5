"""Where a training run's batches come from: a small split kept on the device
(`vitbench.data.device_data`, JAX on one device) or the tf.data pipeline on the host, with
equal batches either way. The run's summary says which (`input`)."""

from __future__ import annotations

import jax
import keras

from vitbench.data import device_data as device_data_lib
from vitbench.data import pipeline

# --device_data: "auto" keeps the split on an accelerator (on a CPU, where the "device" is the
# same cores, tf.data's resize kernels are faster: docs/performance.md), "on" on any device.
DEVICE_DATA = ("auto", "on", "off")


def training_batches(task, split: str, config, *, data_dir=None, start_batch: int = 0,
                     image_dtype: str = "float32", device_data: str = "auto"):
    """(an iterator of (images, labels) micro-batches, a description of where they come
    from) for a run of `config` (a `TrainConfig`) from micro-batch `start_batch` on: the
    one stream of `seed_streams`."""
    streams, source = seed_streams(task, split, config, [config.seed], data_dir=data_dir,
                                   start_batch=start_batch, image_dtype=image_dtype,
                                   device_data=device_data)
    return streams[0], source


def seed_streams(task, split: str, config, seeds, *, data_dir=None, start_batch: int = 0,
                 image_dtype: str = "float32", device_data: str = "auto"):
    """(one iterator of (images, labels) micro-batches per seed, a description of where they
    come from) for runs of `config` (a `TrainConfig`) with those seeds, from micro-batch
    `start_batch` on; each stream is what a run of that seed alone reads.

    With `device_data` "on" (or "auto" on a GPU or TPU), on JAX with one device, the split is
    kept on the device where it fits (`device_data.load`), once for all seeds; else, or where
    it does not, the host pipeline feeds the runs and the description gives the reason.

    Raises:
        ValueError: `device_data` is not one of DEVICE_DATA.
        KeyError: `task` has no such split; OSError, ValueError: unreadable data.
    """
    if device_data not in DEVICE_DATA:
        raise ValueError(f"device_data {device_data!r} is not one of {', '.join(DEVICE_DATA)}")
    if device_data == "off":
        reason = "turned off (--device_data off)"
    elif keras.backend.backend() != "jax" or keras.distribution.distribution() is not None:
        reason = "the split is kept on the device with JAX on one device only"
    elif device_data == "auto" and jax.default_backend() == "cpu":
        reason = "on a CPU the tf.data pipeline is faster (--device_data on: in memory anyway)"
    else:
        try:
            data = device_data_lib.load(task, split, data_dir)
        except device_data_lib.Unsupported as unsupported:
            reason = str(unsupported)
        else:
            return _per_seed(seeds, lambda seed: device_data_lib.batches(
                data, config.micro_batch_size, seed, start_batch, image_dtype)), {
                "where": "device", "examples": len(data), "bytes": data.nbytes}

    def host(seed):
        batches = pipeline.as_numpy(pipeline.train_dataset(
            task, split, config.micro_batch_size, seed=seed, data_dir=data_dir,
            start_batch=start_batch, image_dtype=image_dtype))
        return ((batch["image"], batch["label"]) for batch in batches)

    return _per_seed(seeds, host), {"where": "host", "reason": reason}


def _per_seed(seeds, stream_of):
    """`stream_of(seed)` for each seed, each made under the global seeds a run of that seed
    sets (TensorFlow's shuffle seeds mix in the global one)."""
    streams = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        streams.append(stream_of(seed))
    return streams
