"""How many training steps Keras runs per call of its compiled train function
(`steps_per_execution`): the host reads results (the loss for TerminateOnNaN, the progress
bar) once per call, not after every step. Used by every training loop and by `vitbench bench`,
which times training as the loops run it."""

from __future__ import annotations

import math

# Micro-batches per call at most: enough to hide the host round-trip, few enough that the
# progress bar and NaN checks stay timely.
MAX_BATCHES_PER_CALL = 8


def batches_per_call(epoch_batches: int, remaining: int) -> int:
    """Keras' `steps_per_execution` for a fit of `remaining` batches in epochs of
    `epoch_batches`: the largest number up to MAX_BATCHES_PER_CALL that divides both, so that
    every epoch end (a save, a metrics line) and the stop fall on a call boundary."""
    common = math.gcd(epoch_batches, remaining)
    return max(k for k in range(1, MAX_BATCHES_PER_CALL + 1) if common % k == 0)
