"""The training updates of the official code, as Keras optimizers whose gradient
accumulation, on JAX, costs a pass one addition.

`SGD` takes optax's momentum rule, which the official ViT fine-tuning (vit_jax/train.py:
`optax.sgd(lr_fn, momentum=0.9)`) applies; `AdamW` takes optax's Adam, which big_vision's
pretraining applies (epsilon added after the bias correction), with decoupled weight decay
multiplied by the learning rate. Keras' own SGD and Adam differ from both (see each class).

A pass that does not end a batch only adds its gradients to the accumulators; the pass that
ends it runs the update. On every backend the Polyak average moves once per update, not once
per pass. Design notes: docs/design/training.md.
"""

from __future__ import annotations

import keras
from keras import ops

# The rules `SGD` and `AdamW` apply, named in every training run's config: runs recorded before
# (Keras' own momentum and Adam rules: no such key) count as other runs.
UPDATE_RULE = "optax"


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
    """SGD with momentum as optax applies it: the trace `m = g + momentum * m` of the raw
    gradients, then `w -= lr * m`, the whole trace scaled by the current rate.

    Keras' own SGD keeps `m = momentum * m - lr * g` (each gradient scaled by the rate of the
    step it enters), which lags a warm-up or decaying schedule and drops the gradients of
    updates at rate 0. The trace is kept in `momentum_dtype` (the official fine-tuning code
    keeps it in bfloat16; float32 by default here); the update uses the trace before it is
    cast, as optax's `trace(accumulator_dtype=...)` does. With momentum 0 it is plain SGD.
    `l2` adds `l2 * w` to the gradient of every weight of two axes or more before the trace
    (torch's SGD `weight_decay`, as VPT's prompt tuning applies it, biases exempt).

    Takes the arguments of `keras.optimizers.SGD` but `nesterov`, and `momentum_dtype`, `l2`.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, momentum_dtype="float32", l2=0.0,
                 **kwargs):
        if kwargs.pop("nesterov", False):
            raise ValueError("vitbench's SGD has no Nesterov momentum")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.momentum_dtype, self.l2 = momentum_dtype, l2

    def build(self, variables):
        if self.built:
            return
        super(keras.optimizers.SGD, self).build(variables)  # Keras' base: counters, EMA
        self.momentums = [] if self.momentum == 0 else [
            self.add_variable(variable.shape, dtype=self.momentum_dtype,
                              name=f"{variable.path.replace('/', '_')}_momentum")
            for variable in variables]

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(gradient, variable.dtype)
        if self.l2 and len(variable.shape) > 1:  # torch's SGD weight_decay, biases exempt
            step = ops.add(step, ops.multiply(variable, ops.cast(self.l2, variable.dtype)))
        if self.momentum != 0:
            trace = self.momentums[self._get_variable_index(variable)]
            # momentum * trace in the trace's dtype, as optax multiplies it
            step = ops.add(step, ops.cast(ops.multiply(trace, self.momentum), variable.dtype))
            self.assign(trace, ops.cast(step, trace.dtype))
        self.assign_sub(variable, ops.multiply(step, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.pop("nesterov", None)
        return {**config, "momentum_dtype": self.momentum_dtype, "l2": self.l2}


@keras.saving.register_keras_serializable(package="vitbench")
class AdamW(LeanAccumulation, keras.optimizers.AdamW):
    """Adam with decoupled weight decay as optax's `scale_by_adam` (big_vision's pretraining)
    applies it: `w -= lr * (m_hat / (sqrt(v_hat) + epsilon) + weight_decay * w)`, with the
    bias-corrected moments `m_hat`, `v_hat`.

    Keras' own Adam adds epsilon to the uncorrected `sqrt(v)`, which makes it
    `1 / sqrt(1 - beta_2 ** t)` times larger in effect: 31.6x at the first update with
    beta_2 = 0.999, still 1.26x at update 1000. The decay uses the weights before the update
    (Keras' `_apply_weight_decay`, as optax's `add_decayed_weights`).

    With `decay_vectors=False`, variables of one axis or none (biases, LayerNorm scales and
    offsets) are not decayed, as the fine-tuning recipes of timm and the PEFT literature
    exempt them; kept in the optimizer's config, so a resumed run decays what it decayed.

    Takes the arguments of `keras.optimizers.AdamW` but `amsgrad`, and `decay_vectors`.
    """

    def __init__(self, *args, decay_vectors: bool = True, **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("vitbench's AdamW has no AMSGrad variant")
        super().__init__(*args, **kwargs)
        self.decay_vectors = decay_vectors

    def _use_weight_decay(self, variable):
        if not self.decay_vectors and len(variable.shape) <= 1:
            return False
        return super()._use_weight_decay(variable)

    def get_config(self):
        return {**super().get_config(), "decay_vectors": self.decay_vectors}

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        count = ops.cast(self.iterations + 1, dtype)  # updates, not accumulated passes
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
        m_hat = ops.divide(m, 1 - ops.power(beta_1, count))
        v_hat = ops.divide(v, 1 - ops.power(beta_2, count))
        self.assign_sub(variable, ops.multiply(
            ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon)), learning_rate))
