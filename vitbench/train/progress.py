"""Progress bars (tqdm) for training runs and whole suites: images done, images/s, time to go.

A run's bar counts images (one update adds the global batch) and shows the step and the running
loss and accuracy; reading those from the device is a host sync, so it happens at most once a
second. A suite's bar counts the images of all runs still to do.
"""

from __future__ import annotations

import sys
import time

import keras
from tqdm.auto import tqdm


def bar(description: str, total_images: int, done_images: int = 0, position: int = 0,
        leave: bool = True, enabled: bool = True, unit: str = "img"):
    """A progress bar counting images (or other `unit`s, unscaled), on stderr.

    Args:
        description: the bar's label.
        total_images: the images the whole run (or suite) trains on.
        done_images: those already done (a resumed run).
        position: the bar's line (0: the first), for a run's bar under a suite's.
        leave: keep the bar on screen when it closes.
        enabled: False gives a bar that shows nothing.

    Returns:
        A `tqdm` bar (a context manager).
    """
    return tqdm(total=total_images, initial=done_images, desc=description, unit=unit,
                unit_scale=unit == "img", dynamic_ncols=True, position=position, leave=leave,
                disable=not enabled, file=sys.stderr, smoothing=0.1)


class TrainingProgress(keras.callbacks.Callback):
    """Advances `run_bar` (and `suite_bar`, if any) by the global batch at every update.

    Keras calls it once per `batches_per_call` micro-batches (its `steps_per_execution`)."""

    def __init__(self, run_bar, steps: int, done_steps: int, batch_size: int,
                 accumulation: int, suite_bar=None, refresh_seconds: float = 1.0,
                 batches_per_call: int = 1):
        super().__init__()
        self.run_bar, self.suite_bar = run_bar, suite_bar
        self.steps, self.step, self._first_step = steps, done_steps, done_steps
        self.batch_size, self.accumulation = batch_size, accumulation
        self.batches_per_call = batches_per_call
        self.refresh_seconds, self._micro, self._shown = refresh_seconds, 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        self._micro += self.batches_per_call
        step = self._first_step + self._micro // self.accumulation
        if step == self.step:
            return
        for progress in (self.run_bar, self.suite_bar):
            if progress is not None:
                progress.update((step - self.step) * self.batch_size)
        self.step = step
        now = time.monotonic()
        if logs and (now - self._shown >= self.refresh_seconds or self.step == self.steps):
            self._shown = now
            shown = {"step": f"{self.step}/{self.steps}"}
            shown.update({key: f"{float(value):.4f}" for key, value in logs.items()
                          if key in ("loss", "accuracy")})
            self.run_bar.set_postfix(shown)
