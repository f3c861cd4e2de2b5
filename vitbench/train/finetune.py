"""Fine-tuning as the ViT paper does it: SGD with momentum 0.9, no weight decay, gradients clipped
at global norm 1, linear warm-up then cosine decay, softmax cross-entropy on a zero-initialised
head. A batch is split into micro-batches whose gradients Keras' optimizer accumulates
(`gradient_accumulation_steps`), so the update equals the full batch's up to float rounding.

A run with a `workdir` saves its model and optimizer state there every `checkpoint_every`
steps (atomically) and continues from the last save when started again; the input pipeline is
a deterministic function of the seed, so it skips the batches already consumed.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import time
from typing import Optional

import keras
import numpy as np

from vitbench.data import pipeline
from vitbench.train.schedules import WarmupCosine

CHECKPOINT, STATE = "checkpoint.keras", "state.json"


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a fine-tuning run's numbers."""

    lr: float
    steps: int
    batch_size: int
    micro_batch_size: int
    warmup_steps: int = 0
    seed: int = 0
    momentum: float = 0.9
    grad_clip_norm: float = 1.0

    def __post_init__(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch size {self.batch_size} is not a multiple of the micro-batch "
                             f"size {self.micro_batch_size}")

    @property
    def accumulation(self) -> int:
        return self.batch_size // self.micro_batch_size


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """SGD with momentum, global-norm clipping and the warm-up/cosine schedule."""
    schedule = WarmupCosine(config.lr, config.steps, min(config.warmup_steps, config.steps),
                            config.accumulation)
    return keras.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, global_clipnorm=config.grad_clip_norm,
        gradient_accumulation_steps=config.accumulation if config.accumulation > 1 else None)


def compile_for_finetuning(model, config: TrainConfig):
    model.compile(optimizer=make_optimizer(config),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


def save_state(model, workdir: pathlib.Path, step: int, logs: dict) -> None:
    """Writes the checkpoint, then the state file that names its step; both atomically."""
    workdir.mkdir(parents=True, exist_ok=True)
    temporary = workdir / f".{CHECKPOINT}.tmp.keras"
    model.save(temporary)
    os.replace(temporary, workdir / CHECKPOINT)
    state = {"step": step, "logs": {k: float(v) for k, v in logs.items()}}
    temporary = workdir / f".{STATE}.tmp"
    temporary.write_text(json.dumps(state))
    os.replace(temporary, workdir / STATE)


def load_state(workdir: Optional[pathlib.Path]):
    """(model, step) saved in `workdir`, or (None, 0)."""
    if workdir is None or not (workdir / STATE).exists():
        return None, 0
    step = json.loads((workdir / STATE).read_text())["step"]
    return keras.saving.load_model(workdir / CHECKPOINT), step


def fine_tune(model, task, split: str, config: TrainConfig, *, data_dir=None,
              workdir: Optional[pathlib.Path] = None, checkpoint_every: int = 0,
              verbose: int = 0):
    """Trains `model` on `task`'s `split` (a role like 'fit' or a split name).

    Resets the global random seeds to `config.seed` first (see `keras.utils.set_random_seed`).

    Returns (model, summary): the trained model (restored from `workdir` when resuming) and a
    dict with the final training loss and accuracy, steps and images/s.
    """
    # The run's randomness (TF's shuffle seeds mix in the global seed, Keras' generators) is a
    # function of its seed alone, so a resumed run sees the same data as an unbroken one.
    keras.utils.set_random_seed(config.seed)
    restored, done = load_state(workdir)
    if restored is not None:
        model = restored
    else:
        compile_for_finetuning(model, config)
    chunk = checkpoint_every if (workdir and checkpoint_every) else config.steps
    batches = pipeline.as_numpy(pipeline.train_dataset(
        task, split, config.micro_batch_size, seed=config.seed, data_dir=data_dir,
        start_batch=done * config.accumulation))
    start, logs = time.perf_counter(), {}
    # One fit call per chunk over a single input stream: Keras reads a generator from where it
    # left off (a tf.data input would lose the batch Keras peeks at to build the model).
    for step in range(done, config.steps, chunk):
        micro_steps = min(chunk, config.steps - step) * config.accumulation
        feed = ((batch["image"], batch["label"]) for batch in itertools.islice(batches, micro_steps))
        history = model.fit(feed, epochs=1, steps_per_epoch=micro_steps, verbose=verbose,
                            shuffle=False, callbacks=[keras.callbacks.TerminateOnNaN()])
        logs = {key: values[-1] for key, values in history.history.items()}
        if not np.isfinite(logs.get("loss", np.nan)):
            raise DivergedError(f"{task.name}: the training loss became {logs.get('loss')} "
                                f"(lr {config.lr}); try a smaller learning rate")
        if workdir and checkpoint_every:
            save_state(model, workdir, step + micro_steps // config.accumulation, logs)
    seconds = time.perf_counter() - start
    trained_steps = config.steps - done
    summary = {"steps": config.steps, "resumed_from_step": done,
               "train_loss": logs.get("loss"), "train_accuracy": logs.get("accuracy"),
               "images_per_second": trained_steps * config.batch_size / seconds
               if trained_steps else None}
    return model, summary
