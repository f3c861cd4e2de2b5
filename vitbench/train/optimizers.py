"""Keras' SGD and AdamW whose gradient accumulation, on JAX, costs a pass one addition.

A pass that does not end a batch only adds its gradients to the accumulators; the pass that
ends it runs Keras' own update. On every backend the Polyak average moves once per update, not
once per pass. Weights, optimizer state and schedule are Keras' at every update.
Design notes: docs/design/training.md.
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
    """`keras.optimizers.SGD` with lean gradient accumulation (see the module docstring).

    Takes the arguments of `keras.optimizers.SGD`.
    """


@keras.saving.register_keras_serializable(package="vitbench")
class AdamW(LeanAccumulation, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with lean gradient accumulation (see the module docstring).

    Takes the arguments of `keras.optimizers.AdamW`.
    """
