"""Fine-tuning as the ViT paper does it: SGD with momentum 0.9, no weight decay, gradients clipped
at global norm 1, linear warm-up then cosine decay, softmax cross-entropy on a zero-initialised
head, micro-batches accumulated into each update, optional Polyak averaging. A run with a
`workdir` saves there every `checkpoint_every` steps and resumes from its last save.

Design notes: docs/design/training.md.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import time

import keras
import numpy as np

from vitbench import files
from vitbench.models import vit  # noqa: F401  (registers the classes a saved checkpoint names)
from vitbench.train import execution, feed, interrupt, progress

# The run's settings, optimizer and compile step, here as the fine-tuning loop's API.
from vitbench.train.finetune_config import (  # noqa: F401
    TrainConfig,
    compile_for_finetuning,
    make_optimizer,
)

CHECKPOINT, STATE = "checkpoint_{step}.keras", "state.json"


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def _seed_states(model):
    """The random-number states of the dropout and drop-path layers (Keras does not save
    them with the model), in the model's variable order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def save_state(model, workdir: pathlib.Path, step: int, logs: dict) -> None:
    """Writes the checkpoint of `step` (`checkpoint_<step>.keras`), then the state file that
    names it and holds the step, the metrics and the random states, both atomically; then
    removes the older checkpoint. A stop at any point leaves a state file naming a whole
    checkpoint of its own step."""
    workdir.mkdir(parents=True, exist_ok=True)
    name = CHECKPOINT.format(step=step)
    temporary = workdir / f".{name}.{os.getpid()}.tmp.keras"  # Keras wants the suffix
    model.save(temporary)
    os.replace(temporary, workdir / name)
    state = {"step": step, "checkpoint": name, "logs": {k: float(v) for k, v in logs.items()},
             "seed_states": [np.asarray(v).tolist() for v in _seed_states(model)]}
    files.write_atomic(workdir / STATE, json.dumps(state))
    for older in [*workdir.glob(CHECKPOINT.format(step="*")),  # and a killed save's
                  *workdir.glob(f".{CHECKPOINT.format(step='*')}.*.tmp.keras")]:
        if older.name != name:
            older.unlink(missing_ok=True)


def read_state(workdir: pathlib.Path) -> dict:
    """`workdir`'s state file: step, checkpoint name, training metrics, random states."""
    return json.loads((workdir / STATE).read_text())


def checkpoint_path(workdir: pathlib.Path, state: dict | None = None) -> pathlib.Path:
    """The checkpoint that `workdir`'s state file (or `state`, read from it) names
    (`checkpoint.keras` in the state files of vitbench before checkpoints were named by their
    step)."""
    return workdir / (state or read_state(workdir)).get("checkpoint", "checkpoint.keras")


def load_state(workdir: pathlib.Path | None):
    """(model, step) saved in `workdir`, or (None, 0)."""
    if workdir is None or not (workdir / STATE).exists():
        return None, 0
    state = read_state(workdir)
    model = keras.saving.load_model(checkpoint_path(workdir, state))
    for variable, value in zip(_seed_states(model), state.get("seed_states", [])):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return model, state["step"]


def check_accumulation(restored, accumulation: int, workdir) -> None:
    """Raises if a saved run's optimizer accumulates another number of passes per update than
    `accumulation`: its saved state and the input's position belong to that number."""
    if restored is None:
        return
    saved = restored.optimizer.gradient_accumulation_steps or 1
    if saved != accumulation:
        raise ValueError(f"{workdir} was saved training with {saved} pass(es) per update, this "
                         f"run would make {accumulation}: resume it with a micro-batch of "
                         f"1/{saved} of the batch (--micro_batch_size)")


class _SaveAtEpochEnd(keras.callbacks.Callback):
    """Saves the training state at the end of every epoch (one epoch = `steps` updates) of a
    fit that starts at update `start_step`, epoch `initial_epoch`. The step is counted from
    there, not from the epoch's number: a run resumed with another save interval saves the
    step its weights are at."""

    def __init__(self, workdir: pathlib.Path, steps_per_epoch: int, last_step: int,
                 start_step: int, initial_epoch: int):
        super().__init__()
        self.workdir, self.steps_per_epoch, self.last_step = workdir, steps_per_epoch, last_step
        self.start_step, self.initial_epoch = start_step, initial_epoch

    def on_epoch_end(self, epoch, logs=None):
        if np.isfinite((logs or {}).get("loss", np.nan)):
            epochs_done = epoch + 1 - self.initial_epoch
            step = min(self.start_step + epochs_done * self.steps_per_epoch, self.last_step)
            save_state(self.model, self.workdir, step, logs)


class StopAfter(keras.callbacks.Callback):
    """Ends training after `batches` batches (the last epoch may be shorter than the others);
    Keras calls it once per `batches_per_call` batches (its `steps_per_execution`)."""

    def __init__(self, batches: int, batches_per_call: int = 1):
        super().__init__()
        self.batches, self.batches_per_call, self.seen = batches, batches_per_call, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += self.batches_per_call
        if self.seen >= self.batches:
            self.model.stop_training = True


def training_callbacks(model, epoch_batches: int, remaining: int, run_bar, steps: int,
                       done: int, batch_size: int, accumulation: int, suite_bar=None):
    """Sets the model's steps per execution for this fit (`execution.batches_per_call`) and
    returns the callbacks every training loop uses: stop on a NaN loss, stop after `remaining`
    batches, advance the progress bars."""
    per_call = execution.batches_per_call(epoch_batches, remaining)
    model.steps_per_execution = per_call  # read when fit builds its train function
    return [keras.callbacks.TerminateOnNaN(), StopAfter(remaining, per_call),
            progress.TrainingProgress(run_bar, steps, done, batch_size, accumulation,
                                      suite_bar, batches_per_call=per_call)]


def fine_tune(model, task, split: str, config: TrainConfig, *, data_dir=None,
              workdir: pathlib.Path | None = None, checkpoint_every: int = 0,
              verbose: int = 0, suite_bar=None, device_data: str = "auto"):
    """Trains `model` on `task`'s `split` (a role like 'fit' or a split name).

    Resets the global random seeds to `config.seed` first (see `keras.utils.set_random_seed`).
    `verbose` shows a progress bar; `suite_bar` (a `progress.bar`) also advances with it.

    Args:
        model: the `VisionTransformer` to train, with the task's head; it is compiled here.
            Where `workdir` holds a saved state, the saved model is restored instead (with
            this model's remat setting).
        task: the `vitbench.tasks.Task` whose train pipeline feeds it.
        split: a role like 'fit' or a split name of the task.
        config: the run's `TrainConfig` (learning rate, steps, batch, micro-batch, ...).
        data_dir: the TFDS data dir; None for TFDS' default.
        workdir: where the training state is saved and resumed from; None saves nothing.
        checkpoint_every: save every this many steps (0: never).
        verbose: show a progress bar when nonzero.
        suite_bar: a `progress.bar` that advances with this run's.
        device_data: "auto", "on" or "off": keep the split on the device where it fits
            (`feed.training_batches`).

    Returns:
        (model, summary): the trained model (restored from `workdir` when resuming) and a
        dict with the training loss and accuracy (means over the last stretch between
        saves), steps, images/s and where the batches came from (`input`).

    Raises:
        DivergedError: the training loss became NaN or infinite.
        ValueError: `workdir` was saved with another number of micro-batches per update.
        KeyboardInterrupt: Ctrl-C, raised before the next train-function call (after any
            save due); running again resumes.
        KeyError: `task` has no such split.
    """
    # The run's randomness (TF's shuffle seeds mix in the global seed, Keras' generators) is a
    # function of its seed alone, so a resumed run sees the same data as an unbroken one.
    keras.utils.set_random_seed(config.seed)
    restored, done = load_state(workdir)
    check_accumulation(restored, config.accumulation, workdir)
    if restored is not None:
        model = restored.set_remat(model.config.remat)  # this run's memory setting
    else:
        compile_for_finetuning(model, config)
    saving = bool(workdir and checkpoint_every)
    chunk = checkpoint_every if saving else config.steps
    remaining = (config.steps - done) * config.accumulation
    batches, source = feed.training_batches(
        task, split, config, data_dir=data_dir, start_batch=done * config.accumulation,
        image_dtype=model.image_dtype, device_data=device_data)
    batches = (batch for batch in itertools.islice(batches, remaining))  # Keras: a generator
    start, logs = time.perf_counter(), {}
    run_bar = progress.bar(f"{task.name} {split}", config.steps * config.batch_size,
                           done * config.batch_size, position=1 if suite_bar else 0,
                           leave=suite_bar is None, enabled=bool(verbose))
    callbacks = training_callbacks(model, chunk * config.accumulation, remaining, run_bar,
                                   config.steps, done, config.batch_size, config.accumulation,
                                   suite_bar)
    if saving:
        callbacks.append(_SaveAtEpochEnd(workdir, chunk, config.steps, done, done // chunk))
    with run_bar:
        if remaining:
            with interrupt.deferred() as stop_on_ctrl_c:
                history = model.fit(batches, initial_epoch=done // chunk,
                                    epochs=-(-config.steps // chunk),
                                    steps_per_epoch=chunk * config.accumulation, verbose=0,
                                    shuffle=False, callbacks=callbacks + [stop_on_ctrl_c])
            logs = {key: values[-1] for key, values in history.history.items()}
        elif restored is not None:
            # killed after the last save: Keras swaps in the averaged weights at fit's end
            model.optimizer.finalize_variable_values(model.trainable_weights)
            logs = read_state(workdir)["logs"]
    return model, summarize(task, config, logs, done, time.perf_counter() - start, source)


def summarize(task, config: TrainConfig, logs: dict, done: int, seconds: float,
              source: dict) -> dict:
    """A run's summary: its last logs' loss and accuracy, its steps, the images/s of the
    steps trained from `done` on in `seconds`, and where its batches came from (`source`).

    Raises:
        DivergedError: the logs' loss is NaN or infinite (or missing).
    """
    if not np.isfinite(logs.get("loss", np.nan)):
        raise DivergedError(f"{task.name}: the training loss became {logs.get('loss')} "
                            f"(lr {config.lr}); try a smaller learning rate")
    trained_steps = config.steps - done
    return {"steps": config.steps, "resumed_from_step": done,
            "train_loss": logs.get("loss"), "train_accuracy": logs.get("accuracy"),
            "images_per_second": trained_steps * config.batch_size / seconds
            if trained_steps else None, "input": source}
