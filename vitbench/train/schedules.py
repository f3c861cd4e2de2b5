"""Learning-rate schedules, in optimizer updates, that stay exact under gradient accumulation.

Both are linear warm-up to the base rate followed by a decay to 0 at the last step, as vit_jax
and big_vision define them: `cosine` (fine-tuning, ImageNet-1k pretraining) and `linear`
(ImageNet-21k and JFT pretraining, paper Table 3). `SCHEDULES` maps those names to classes.
"""

from __future__ import annotations

import math

import keras
from keras import ops


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `base_lr` over `warmup_steps`, then `decay(progress)` times `base_lr`.

    Keras calls a schedule with the optimizer's micro-step counter; with gradient accumulation
    an update happens every `accumulation` micro-steps, so the update number is
    `floor(micro_step / accumulation)` and the schedule is the same for any split of a batch.
    """

    def __init__(self, base_lr, total_steps, warmup_steps=0, accumulation=1):
        self.base_lr, self.total_steps = float(base_lr), int(total_steps)
        self.warmup_steps, self.accumulation = int(warmup_steps), int(accumulation)

    @staticmethod
    def decay(progress):
        """The multiplier of the base rate at `progress` in [0, 1] of the decay phase."""
        raise NotImplementedError

    def __call__(self, micro_step):
        step = ops.cast(ops.floor_divide(micro_step, self.accumulation), "float32")
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        lr = self.base_lr * self.decay(progress)
        if self.warmup_steps:
            lr = lr * ops.minimum(1.0, step / self.warmup_steps)
        return lr

    def get_config(self):
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "accumulation": self.accumulation}


@keras.saving.register_keras_serializable(package="vitbench")
class WarmupCosine(WarmupDecay):
    """Warm-up, then cosine decay to 0 (vit_jax's `cosine`)."""

    @staticmethod
    def decay(progress):
        return 0.5 * (1.0 + ops.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="vitbench")
class WarmupLinear(WarmupDecay):
    """Warm-up, then linear decay to 0 (vit_jax's `linear`)."""

    @staticmethod
    def decay(progress):
        return 1.0 - progress


SCHEDULES = {"cosine": WarmupCosine, "linear": WarmupLinear}
