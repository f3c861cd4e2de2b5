"""Learning-rate schedules, in optimizer updates, that stay exact under gradient accumulation.

Both are linear warm-up to the base rate followed by a decay to 0 at the last step, as vit_jax
and big_vision define them: `cosine` (fine-tuning, ImageNet-1k pretraining) and `linear`
(ImageNet-21k and JFT pretraining, paper Table 3). `SCHEDULES` maps those names to classes.
`EpochWarmupCosine` is the VPT protocol's: the same shape, stepped once per epoch
(`epoch_factor`).
"""

from __future__ import annotations

import math

import keras
from keras import ops


def epoch_factor(epoch: int, epochs: int, warmup_epochs: int) -> float:
    """The VPT protocol's factor of the base rate in `epoch` (0-based; KMnP/vpt
    `WarmupCosineSchedule`, stepped per epoch): `epoch / warmup_epochs` during the warm-up
    (epoch 0 trains at rate 0), then a cosine from 1 to 0 over the remaining epochs."""
    if epoch < warmup_epochs:
        return epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    return max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))


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


@keras.saving.register_keras_serializable(package="vitbench")
class EpochWarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """`base_lr` times `epoch_factor` of the update's epoch, `steps_per_epoch` updates an
    epoch (the rate holds for a whole epoch, as VPT's scheduler steps once per epoch); exact
    under gradient accumulation, as `WarmupDecay`."""

    def __init__(self, base_lr, epochs, warmup_epochs, steps_per_epoch, accumulation=1):
        self.base_lr, self.epochs, self.warmup_epochs = float(base_lr), int(epochs), \
            int(warmup_epochs)
        self.steps_per_epoch, self.accumulation = int(steps_per_epoch), int(accumulation)
        self.factors = [epoch_factor(e, self.epochs, self.warmup_epochs)
                        for e in range(self.epochs)]

    def __call__(self, micro_step):
        step = ops.floor_divide(micro_step, self.accumulation)
        epoch = ops.minimum(ops.floor_divide(step, self.steps_per_epoch), self.epochs - 1)
        return self.base_lr * ops.take(ops.convert_to_tensor(self.factors, "float32"),
                                       ops.cast(epoch, "int32"))

    def get_config(self):
        return {"base_lr": self.base_lr, "epochs": self.epochs,
                "warmup_epochs": self.warmup_epochs, "steps_per_epoch": self.steps_per_epoch,
                "accumulation": self.accumulation}
