"""LoRA as the literature defines it (Hu et al. 2021; Hugging Face peft's `LoraConfig` with
`target_modules=["query", "value"]`): a projection's output plus `alpha / rank` times a
rank-`rank` update `x A B` of the whole projection (D -> heads x head size), A drawn from
U(-1/sqrt(D), 1/sqrt(D)) and B zero, so the model starts exactly as the checkpoint. Not
Keras' `enable_lora`, which factorises each head's kernel on its own and leaves the biases
trainable (../shared/spec/peft_protocols.md 2.3).

The update's variables (`ADAPTER_WEIGHTS`) are not the checkpoint's: loading one leaves them
at their start, and `initialize` draws A from a seed.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

# Variable names of weights a checkpoint does not hold (the adapters a method adds).
ADAPTER_WEIGHTS = ("lora_a", "lora_b", "prompts")


class LowRankUpdate(layers.Layer):
    """`base(x) + (alpha / rank) * (x A) B` for an `EinsumDense` projection `base` of
    D -> (heads, head size): A [D, rank], B [rank, heads, head size]. Built by its owner
    (`attention.MultiHeadDotProductAttention`), which its config rebuilds.

    Computed as one projection by the merged kernel `W + (alpha / rank) A B` (equal up to
    rounding): on a CPU the two skinny products of rank 8 cost more than the merge, which
    is one D x rank x D product a step (ViT-Ti/16 LoRA training at batch 16: 1.41x full
    fine-tuning's images/s merged, 0.81x factored; docs/performance.md)."""

    def __init__(self, base, rank: int, alpha: float, **kwargs):
        super().__init__(**kwargs)
        self.base, self.rank, self.alpha = base, int(rank), float(alpha)

    def build(self, input_shape):
        if self.base.activation is not keras.activations.linear:
            raise ValueError("LoRA wraps a projection without an activation")
        width, out = input_shape[-1], tuple(self.base.kernel.shape[1:])
        bound = 1.0 / np.sqrt(width)  # peft's kaiming_uniform(a=sqrt(5)) of a (rank, D) weight
        self.lora_a = self.add_weight(
            name="lora_a", shape=(width, self.rank),
            initializer=keras.initializers.RandomUniform(-bound, bound))
        self.lora_b = self.add_weight(name="lora_b", shape=(self.rank, *out),
                                      initializer="zeros")

    def call(self, x):
        update = ops.einsum("dr,rnh->dnh", self.lora_a, self.lora_b)
        kernel = self.base.kernel + ops.cast(self.alpha / self.rank, update.dtype) * update
        y = ops.einsum(self.base.equation, x, ops.cast(kernel, x.dtype))
        return y if self.base.bias is None else y + ops.cast(self.base.bias, y.dtype)


def initialize(model, seed: int) -> None:
    """Draws every LoRA A of `model` from U(-1/sqrt(D), 1/sqrt(D)) with numpy's generator of
    `seed` (in the model's layer order) and sets every B to zero: the start a run's seed
    decides, whatever Keras' global random state."""
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        name = variable.path.rsplit("/", 1)[-1]
        if name == "lora_a":
            bound = 1.0 / np.sqrt(variable.shape[0])
            variable.assign(rng.uniform(-bound, bound, variable.shape).astype("float32"))
        elif name == "lora_b":
            variable.assign(np.zeros(variable.shape, "float32"))
