"""Benchmarks, reported as throughput ratios against a peer measured in the same process.

These machines are shared and noisy, so a single images/s figure says little; each benchmark
times what it measures next to a baseline (e.g. the raw read of the same examples) and reports
both and their ratio.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from typing import Callable, Dict

import tensorflow as tf

from vitbench.data import pipeline, registry, sources


@dataclasses.dataclass(frozen=True)
class Measurement:
    name: str
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def _time(name, batches, warmup, count, size_of) -> Measurement:
    iterator = iter(batches)
    for _ in range(warmup):  # fill caches, prefetch buffers and thread pools first
        next(iterator)
    start, images = time.perf_counter(), 0
    for batch in itertools.islice(iterator, count):
        images += size_of(batch)
    return Measurement(name, images, time.perf_counter() - start)


def pipeline_throughput(task, batch_size=64, batches=20, data_dir=None, warmup=3):
    """Images/s of the raw read, the eval pipeline and the train pipeline of one task."""
    # The peer: read and decode the same examples, nothing else (reduced to their heights so
    # that images of any size batch together).
    raw = sources.read(task, task.split("test"), data_dir).repeat()
    raw = raw.map(lambda example: tf.shape(registry.chain("decode")(example)["image"])[0],
                  num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    train = pipeline.train_dataset(task, "fit", batch_size, data_dir=data_dir)
    evaluation = pipeline.eval_dataset(task, "test", batch_size, data_dir=data_dir).repeat()
    return [
        _time("read and decode", raw.prefetch(tf.data.AUTOTUNE), warmup, batches, len),
        _time("eval pipeline", pipeline.as_numpy(evaluation), warmup, batches,
              lambda batch: len(batch["label"])),
        _time("train pipeline", pipeline.as_numpy(train), warmup, batches,
              lambda batch: len(batch["label"])),
    ]


def report(measurements, cores=None) -> str:
    """A table of images/s, per core, and the ratio to the first (the peer)."""
    from tabulate import tabulate

    cores = cores or os.cpu_count() or 1
    peer = measurements[0].images_per_second
    rows = [{"stage": m.name, "images": m.images, "images/s": m.images_per_second,
             "images/s per core": m.images_per_second / cores,
             f"ratio to {measurements[0].name}": m.images_per_second / peer}
            for m in measurements]
    return tabulate(rows, headers="keys", floatfmt=".2f")


MODES: Dict[str, Callable] = {"pipeline": pipeline_throughput}
