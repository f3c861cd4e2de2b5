"""Models trained as one (JAX): their weights, optimizer and metric states stacked along a
leading axis, one compiled step (`jax.vmap` over Keras' own `train_step`) updating all of them
from one batch, each with its own learning rate. TensorFlow-free: the fine-tuning loop
(`stacked.fine_tune_stacked`) and the benchmarks use it.
Design notes: docs/design/training.md.
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
import jax.numpy as jnp
import keras
import numpy as np


class NotStackable(ValueError):
    """The runs cannot train together (another backend, a distribution, configs or saved
    states that differ in more than the learning rate and the seed)."""


def available() -> bool:
    """Stacked training runs here: the JAX backend, one device (no Keras distribution)."""
    return keras.backend.backend() == "jax" and keras.distribution.distribution() is None


def check_stackable(configs) -> None:
    """Raises NotStackable unless stacking is `available` and the configs differ in the
    learning rate and the seed only."""
    if not available():
        raise NotStackable("stacked runs need the JAX backend on one device")
    first = dataclasses.replace(configs[0], lr=0.0, seed=0)
    for config in configs[1:]:
        if dataclasses.replace(config, lr=0.0, seed=0) != first:
            raise NotStackable(f"runs differ in more than the learning rate and the seed: "
                               f"{configs[0]} and {config}")


@contextlib.contextmanager
def _base_lr(schedule, lr):
    """The schedule's base rate set to `lr` (a traced per-member value) while the step is
    traced, so that one traced function serves every member's rate."""
    fixed = schedule.base_lr
    schedule.base_lr = lr
    try:
        yield
    finally:
        schedule.base_lr = fixed


class Stack:
    """Compiled models trained as one: `step(batch)` updates every member from one batch.

    Args:
        models: compiled models built alike (same architecture and head), one per member.
        configs: their `finetune.TrainConfig`s, alike but for the rate and the seed
            (`check_stackable`).
        batch: an (images, labels) batch, to build the models, optimizers and metrics.
        own_batches: each member trains on a batch of its own (members of several seeds:
            `step` takes the batches stacked along a leading axis), not on one for all.
    """

    def __init__(self, models, configs, batch, own_batches: bool = False):
        check_stackable(configs)
        self.models = list(models)
        one = tuple(part[0] for part in batch) if own_batches else batch
        for model in self.models:
            model._symbolic_build(data_batch=one)  # noqa: SLF001  (as fit builds it)
        lead = self.models[0]
        schedule = lead.optimizer._learning_rate  # noqa: SLF001  (its WarmupCosine)

        def member_step(lr, state, batch):
            with _base_lr(schedule, lr):
                return lead.train_step(state, batch)

        batch_axis = 0 if own_batches else None
        self._step = jax.jit(jax.vmap(member_step, in_axes=(0, 0, batch_axis)),
                             donate_argnums=1)
        self.lrs = np.asarray([config.lr for config in configs], np.float32)
        self.state = _stack([_state(model) for model in self.models])

    def step(self, batch) -> dict:
        """One pass of every member on `batch` (with `own_batches`, member i on the i-th of
        the stacked batches); returns the stacked logs (on the device)."""
        logs, self.state = self._step(self.lrs, self.state, batch)
        return logs

    def reset_metrics(self) -> None:
        """Every member's running loss and accuracy restarted (as `fit` does each epoch)."""
        self.state = (*self.state[:3], jax.tree_util.tree_map(jnp.zeros_like, self.state[3]))

    def write_back(self, index: int):
        """Member `index`'s state written into its model's variables; returns the model."""
        model = self.models[index]
        _assign(model, _member(self.state, index))
        return model


def _state(model) -> tuple:
    """The arrays `train_step` takes, in Keras' order."""
    return tuple([v.value for v in variables] for variables in _variables(model))


def _variables(model) -> tuple:
    return (model.trainable_variables, model.non_trainable_variables,
            model.optimizer.variables, model.metrics_variables)


def _assign(model, state) -> None:
    """Writes `state` (one member's arrays) into the model's variables."""
    for variables, values in zip(_variables(model), state):
        for variable, value in zip(variables, values):
            variable.assign(value)


def _member(stacked, index: int):
    return jax.tree_util.tree_map(lambda array: array[index], stacked)


def _stack(states):
    return jax.tree_util.tree_map(lambda *arrays: jnp.stack(arrays), *states)
