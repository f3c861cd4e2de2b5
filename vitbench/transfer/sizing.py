"""What a run's training step costs on this machine: the micro-batch that fits, the images/s."""

from __future__ import annotations

import time

import numpy as np

from vitbench import tasks as tasks_lib
from vitbench.train import distribute, execution, finetune, stack
from vitbench.transfer.models import load_for_task
from vitbench.transfer.plan import check_batches


def fitting_micro_batch(ckpt: str, task: tasks_lib.Task, try_step=None,
                        remat: bool = False) -> int:
    """The largest micro-batch whose training step fits: the default pass
    (`execution.pass_size`: the whole batch on an accelerator, cache-sized passes on a CPU,
    where a larger pass is only slower), halved while it divides (and still splits over the
    data-parallel devices), until a step runs.

    Args:
        ckpt, task: the model and the task (its batch and resolution) to size for.
        try_step: `try_step(micro)` runs one training step at that size and raises on
            out-of-memory; by default it trains the model (rematerialised with `remat`) on
            zeros.
    Returns:
        The micro-batch size.
    Raises:
        ValueError: a batch that does not split over the devices; any error of a step that
            is not out-of-memory, or out-of-memory at a size that cannot be halved.
    """
    check_batches([task])
    model = load_for_task(ckpt, task, remat)
    try_step = try_step or (lambda micro: _zero_batch_trainer(model, task, micro)())
    ways = distribute.replicas()
    micro = execution.pass_size(model.config, model.image_size, task.protocol.batch_size, ways)
    return execution.halving_until_it_fits(try_step, micro, ways)[1]


def _zero_batch_trainer(model, task: tasks_lib.Task, micro: int):
    """A function running one training step of `model` on a batch of zeros at the task's
    resolution."""
    finetune.compile_for_finetuning(model, finetune.TrainConfig(0.0, 1, micro, micro))
    size = task.protocol.resolution
    images = np.zeros((micro, size, size, 3), np.float32)
    labels = np.zeros((micro,), np.int64)
    return lambda: model.train_on_batch(images, labels)


def measure_throughput(ckpt: str, task: tasks_lib.Task, micro_batch_size: int,
                       probe_steps: int = 3, remat: bool = False) -> float:
    """Training images/s of this model at the task's resolution on this machine (zero data),
    from passes of at most 8 images per data-parallel device."""
    batch = min(micro_batch_size, 8 * distribute.replicas())
    step = _zero_batch_trainer(load_for_task(ckpt, task, remat), task, batch)
    step()  # compile
    start = time.perf_counter()
    for _ in range(probe_steps):
        step()
    return probe_steps * batch / (time.perf_counter() - start)


def measure_stacked_throughput(ckpt: str, task: tasks_lib.Task, micro_batch_size: int,
                               members: int, probe_steps: int = 3,
                               remat: bool = False) -> float:
    """Training images/s of each member of a stack of `members` runs
    (`stack.Stack`) of this model at the task's resolution (zero data), from passes of at
    most 8 images in all (8 // members per member, at least 1: the activation memory of
    `measure_throughput`'s pass, which on a CPU is what bounds it)."""
    batch = max(1, min(micro_batch_size, 8) // members)
    size = task.protocol.resolution
    images = np.zeros((batch, size, size, 3), np.float32)
    labels = np.zeros((batch,), np.int64)
    configs = [finetune.TrainConfig(0.001 * (i + 1), 1, batch, batch) for i in range(members)]
    models = [finetune.compile_for_finetuning(load_for_task(ckpt, task, remat), config)
              for config in configs]
    stacked = stack.Stack(models, configs, (images, labels))
    np.asarray(stacked.step((images, labels))["loss"])  # compile
    start = time.perf_counter()
    for _ in range(probe_steps):
        logs = stacked.step((images, labels))
    np.asarray(logs["loss"])
    return probe_steps * batch / (time.perf_counter() - start)
