"""Learning-rate schedules, in optimizer updates, that stay exact under gradient accumulation."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vitbench")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `base_lr`, then cosine decay to 0 at `total_steps` (as vit_jax).

    Keras calls a schedule with the optimizer's micro-step counter; with gradient accumulation
    an update happens every `accumulation` micro-steps, so the update number is
    `floor(micro_step / accumulation)` and the schedule is the same for any split of a batch.
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, accumulation=1):
        self.base_lr, self.total_steps = float(base_lr), int(total_steps)
        self.warmup_steps, self.accumulation = int(warmup_steps), int(accumulation)

    def __call__(self, micro_step):
        step = ops.cast(ops.floor_divide(micro_step, self.accumulation), "float32")
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        lr = self.base_lr * 0.5 * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps:
            lr = lr * ops.minimum(1.0, step / self.warmup_steps)
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "accumulation": self.accumulation}
