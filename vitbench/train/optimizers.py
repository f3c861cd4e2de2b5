"""Keras' SGD and AdamW whose gradient accumulation, on JAX, costs a pass one addition.

Keras' JAX optimizer accumulates gradients without a conditional around the update: at every
pass it runs the whole update (clipping, momentum or moments, weights, the Polyak average)
and then selects the old values unless the pass ends a batch. Two things follow:

- **Cost.** Every pass pays for an update: a few passes over every weight and its optimizer
  state. On the 2-core CPU (ViT-B/16, fp32, Keras fit, one process) 4 accumulated passes of 8
  images trained at 0.95x the images/s of updates on batches of 8; with the accumulation
  here, timed against Keras' alternately in one process, 1.04 and 0.92 against 0.94 and 0.95
  images/s: no difference this machine's noise lets one see.
- **The Polyak average.** Keras moves it at every pass, towards unchanged weights between
  updates, so with k passes per batch it decays k times per update.

Here the pass that does not end a batch only adds its gradients to the accumulators and counts
itself (`jax.lax.cond` runs one branch). The pass that ends a batch runs Keras' own update
unchanged, so weights, optimizer state and the learning-rate schedule are Keras' at every
update, and the average moves once per update, as with the whole batch in one pass (tested).
Other backends use Keras' accumulation (a conditional around the update), but for the Polyak
average, which Keras moves there at every pass: here it too moves only at the pass that ends a
batch (tested on TensorFlow).
"""

from __future__ import annotations

import keras


class LeanAccumulation:
    """Mixin for a Keras optimizer: on JAX, a pass that does not end a batch only accumulates;
    on every backend, the Polyak average moves only at the pass that ends a batch."""

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        steps = self.gradient_accumulation_steps
        if not steps or keras.backend.backend() != "jax":
            return super().stateless_apply(optimizer_variables, grads, trainable_variables)
        import jax

        position = {id(variable): i for i, variable in enumerate(self.variables)}
        count = position[id(self._iterations)]
        accumulators = [position[id(self._accumulated_gradients[self._get_variable_index(v)])]
                        for v in self._trainable_variables]
        passes = optimizer_variables[count]

        def accumulate():
            state = list(optimizer_variables)
            for index, gradient in zip(accumulators, grads):
                state[index] = state[index] + gradient
            state[count] = passes + 1
            return list(trainable_variables), state

        def update():
            weights, state = super(LeanAccumulation, self).stateless_apply(
                optimizer_variables, grads, trainable_variables)
            return list(weights), list(state)

        return jax.lax.cond((passes + 1) % steps == 0, update, accumulate)

    def _update_model_variables_moving_average(self, trainable_variables):
        # Keras' stateful `apply` (every backend but JAX) calls this at every pass, before it
        # counts the pass; JAX's update above reaches it only at the end of a batch.
        steps = self.gradient_accumulation_steps
        if not steps or keras.backend.backend() == "jax":
            return super()._update_model_variables_moving_average(trainable_variables)
        keras.ops.cond((self._iterations + 1) % steps == 0,
                       lambda: super(LeanAccumulation, self)
                       ._update_model_variables_moving_average(trainable_variables),
                       lambda: None)


@keras.saving.register_keras_serializable(package="vitbench")
class SGD(LeanAccumulation, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with lean gradient accumulation (see the module docstring)."""


@keras.saving.register_keras_serializable(package="vitbench")
class AdamW(LeanAccumulation, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with lean gradient accumulation (see the module docstring)."""
