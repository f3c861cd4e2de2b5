"""Dropout whose masks cost a quarter of the random bits on JAX: Keras' `Dropout` layer, and
`random_dropout` the stateless op, with four 16-bit draws taken from each Threefry evaluation.

The rate is rounded to a multiple of 2**-16 (0.1 becomes 0.100006). On other backends, and for
masks with a `noise_shape`, this is `keras.random.dropout`.
Design notes: docs/design/models.md.
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
