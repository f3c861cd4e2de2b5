"""What decides a fine-tuning run's numbers (`TrainConfig`) and the optimizer and loss it
trains with, TensorFlow-free: the fine-tuning loops and the benchmarks share them."""

from __future__ import annotations

import dataclasses

import keras

from vitbench.train import optimizers
from vitbench.train.schedules import WarmupCosine


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a fine-tuning run's numbers.

    Raises:
        ValueError: `batch_size` is not a multiple of `micro_batch_size`.
    """

    lr: float
    steps: int
    batch_size: int
    micro_batch_size: int
    warmup_steps: int = 0
    seed: int = 0
    momentum: float = 0.9
    grad_clip_norm: float = 1.0
    polyak: float = 0.0  # decay of the weights' moving average; 0: no averaging
    momentum_dtype: str = "float32"  # of the SGD trace (the official code: bfloat16)

    def __post_init__(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch size {self.batch_size} is not a multiple of the micro-batch "
                             f"size {self.micro_batch_size}")

    @property
    def accumulation(self) -> int:
        return self.batch_size // self.micro_batch_size


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """SGD with momentum as optax applies it (the official fine-tuning update), global-norm
    clipping and the warm-up/cosine schedule."""
    schedule = WarmupCosine(config.lr, config.steps, min(config.warmup_steps, config.steps),
                            config.accumulation)
    return optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, momentum_dtype=config.momentum_dtype,
        global_clipnorm=config.grad_clip_norm,
        gradient_accumulation_steps=config.accumulation if config.accumulation > 1 else None,
        use_ema=config.polyak > 0, ema_momentum=config.polyak or 0.99)


def compile_for_finetuning(model, config: TrainConfig):
    model.compile(optimizer=make_optimizer(config),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model
