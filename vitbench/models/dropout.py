"""Dropout whose masks cost a quarter of the random bits on JAX: Keras' `Dropout` layer, and
`random_dropout` the stateless op, with four 16-bit draws taken from each Threefry evaluation.

Why: on JAX, Keras draws a dropout mask with `jax.random.bernoulli`, one Threefry-2x32
evaluation (20 rounds of integer arithmetic) per element, of whose 64 bits it keeps 32. The
models that train with dropout (ViT-L/16 and ViT-H/14: rate 0.1, three masks per block, one
of them on the MLP's hidden layer, four times as wide) spend much of a step there: 19 ms of
ViT-L/16's 136 ms training step on an H200 (batch 128, bf16, profiled with Keras' masks), and
on the 2-core CPU a (16, 197, 4096) mask took 155 ms more than the multiplication it masks
(40 ms here). On a GPU the quarter draws did not shorten the step: on an H100 (2026-11-27)
ViT-L/16 still trained 19 ms a step slower with dropout than without (914 against 1060 img/s).
Either the time is not in the Threefry arithmetic there, or XLA, which on a GPU gets Threefry
as unrolled arithmetic and fuses it into its consumers, evaluates it for every element anyway;
`benchmarks/variants.py dropout` tells these apart.

How: here each evaluation of JAX's own Threefry-2x32 (`jax.extend.random.threefry2x32_p`)
yields 64 bits, read as four 16-bit uniform draws for four neighbouring elements of the last
axis. An element is kept when its draw is below `keep = round((1 - rate) * 2**16)` (at least
1), and kept values are scaled by `2**16 / keep`, so the expected output is the input exactly;
the rate itself is rounded to a multiple of 2**-16 (0.1 becomes 0.100006). The counters are
each element's position, so a batch-sharded model draws only its own shard, and the masks do
not depend on how the batch is split over devices. The same seed gives the same mask, and a
layer's seed generator advances as Keras' does, so a resumed run repeats its random stream.

Elsewhere Keras decides: on other backends, and for masks with a `noise_shape` (drop-path's
one draw per example), this is `keras.random.dropout`.
"""

from __future__ import annotations

import math

import keras

_DRAW_BITS = 16
_DRAWS_PER_EVALUATION = 4  # 64 bits of one Threefry-2x32 evaluation, in 16-bit draws


def keep_threshold(rate: float) -> int:
    """The 16-bit draws below which an element is kept at dropout `rate`."""
    return max(1, round((1.0 - rate) * 2 ** _DRAW_BITS))


def _threefry_words(seed, counter_shape):
    """The two 32-bit words of Threefry-2x32 under `seed` for each position of
    `counter_shape`, counted in row-major order."""
    import jax.numpy as jnp
    from jax import lax
    from jax.extend.random import threefry2x32_p

    position, stride = jnp.zeros(counter_shape, jnp.uint32), 1
    for axis in reversed(range(len(counter_shape))):
        position += lax.broadcasted_iota(jnp.uint32, counter_shape, axis) * jnp.uint32(stride)
        stride *= counter_shape[axis]
    return threefry2x32_p.bind(seed[0], seed[1], position, jnp.zeros_like(position))


def kept_elements(shape, keep: int, seed):
    """Which elements of an array of `shape` a dropout keeps under the drawn `seed`: those
    whose 16-bit draw is below `keep` (`keep_threshold`)."""
    import jax.numpy as jnp
    from jax import lax

    *leading, width = shape
    counter_shape = (*leading, -(-width // _DRAWS_PER_EVALUATION))
    if math.prod(counter_shape) >= 2 ** 32:
        raise ValueError(f"dropout of {tuple(shape)}: more than 2**34 elements")
    words = _threefry_words(seed, counter_shape)
    draws = lax.bitcast_convert_type(jnp.stack(words, axis=-1), jnp.uint16)
    return draws.reshape(*leading, -1)[..., :width].astype(jnp.int32) < keep


def apply_mask(inputs, kept, keep: int):
    """`inputs` with the elements not `kept` zeroed and the kept ones scaled by 2**16 / `keep`
    (`keep_threshold`), so that the expected output is the input."""
    import jax.numpy as jnp

    return jnp.where(kept, inputs * (2 ** _DRAW_BITS / keep), jnp.zeros((), inputs.dtype))


def _threefry_16_bit_dropout(inputs, rate, seed):
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    keep = keep_threshold(rate)
    return apply_mask(inputs, kept_elements(inputs.shape, keep, seed), keep)


# Backend -> dropout without a noise shape: (inputs, rate, seed) -> outputs.
_FAST_DROPOUT = {"jax": _threefry_16_bit_dropout}


def random_dropout(inputs, rate, noise_shape=None, seed=None):
    """`keras.random.dropout`, with the cheaper masks described above where they apply; `seed`
    is a `keras.random.SeedGenerator` or a seed it drew."""
    fast = _FAST_DROPOUT.get(keras.backend.backend())
    if fast is None or seed is None or noise_shape is not None or not 0 < rate < 1:
        return keras.random.dropout(inputs, rate, noise_shape, seed=seed)
    return fast(inputs, rate, seed)


@keras.saving.register_keras_serializable(package="vitbench")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` drawing its masks with `random_dropout` above; the same
    configuration, seed generator and variable names."""

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return random_dropout(inputs, self.rate, self.noise_shape, seed=self.seed_generator)
        return inputs
