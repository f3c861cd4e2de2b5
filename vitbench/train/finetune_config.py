"""What decides a fine-tuning run's numbers (`TrainConfig`) and the optimizer and loss it
trains with, TensorFlow-free: the fine-tuning loops and the benchmarks share them."""

from __future__ import annotations

import dataclasses

import keras

from vitbench.train import optimizers
from vitbench.train.schedules import EpochWarmupCosine, WarmupCosine


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
    grad_clip_norm: float | None = 1.0  # global norm; None: no clipping
    polyak: float = 0.0  # decay of the weights' moving average; 0: no averaging
    momentum_dtype: str = "float32"  # of the SGD trace (the official code: bfloat16)
    optimizer: str = "sgd"  # an `OPTIMIZERS` name
    # AdamW's decoupled decay, SGD's L2 on the gradient (biases and LayerNorms exempt)
    weight_decay: float = 0.0
    epsilon: float = 1e-6  # AdamW's
    # Updates per epoch where the rate is stepped once per epoch (`EpochWarmupCosine`: steps
    # and warm-up steps are then whole epochs of them); 0: per update (`WarmupCosine`).
    steps_per_epoch: int = 0

    def __post_init__(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch size {self.batch_size} is not a multiple of the micro-batch "
                             f"size {self.micro_batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} is not one of "
                             f"{', '.join(OPTIMIZERS)}")

    @property
    def accumulation(self) -> int:
        return self.batch_size // self.micro_batch_size


def schedule_of(config: TrainConfig):
    """The run's learning-rate schedule: warm-up and cosine, per update or per epoch."""
    if config.steps_per_epoch:
        return EpochWarmupCosine(config.lr, config.steps // config.steps_per_epoch,
                                 config.warmup_steps // config.steps_per_epoch,
                                 config.steps_per_epoch, config.accumulation)
    return WarmupCosine(config.lr, config.steps, min(config.warmup_steps, config.steps),
                        config.accumulation)


def _sgd(config: TrainConfig, **common) -> keras.optimizers.Optimizer:
    """SGD with momentum as optax applies it (the official fine-tuning update); a weight
    decay is L2 on the gradient of the weights (not biases), as torch's SGD."""
    return optimizers.SGD(momentum=config.momentum, momentum_dtype=config.momentum_dtype,
                          l2=config.weight_decay, **common)


def _adamw(config: TrainConfig, **common) -> keras.optimizers.Optimizer:
    """AdamW (beta 0.9, 0.999) with decoupled weight decay, biases and LayerNorms exempt."""
    return optimizers.AdamW(weight_decay=config.weight_decay, epsilon=config.epsilon,
                            beta_1=0.9, beta_2=0.999, decay_vectors=False, **common)


OPTIMIZERS = {"sgd": _sgd, "adamw": _adamw}


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The run's optimizer (`OPTIMIZERS`), with its schedule, its global-norm clipping, its
    gradient accumulation and Polyak averaging."""
    return OPTIMIZERS[config.optimizer](
        config, learning_rate=schedule_of(config), global_clipnorm=config.grad_clip_norm,
        gradient_accumulation_steps=config.accumulation if config.accumulation > 1 else None,
        use_ema=config.polyak > 0, ema_momentum=config.polyak or 0.99)


def compile_for_finetuning(model, config: TrainConfig):
    model.compile(optimizer=make_optimizer(config),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model
