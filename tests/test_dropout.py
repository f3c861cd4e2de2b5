"""Dropout masks: the configured rate, an exact expectation, independent draws, the same masks
for the same seeds, and on JAX a quarter of Keras' Threefry evaluations."""

import re

import keras
import numpy as np
import pytest
from conftest import TINY, images

from vitbench.models.dropout import Dropout, random_dropout
from vitbench.models.vit import create_model

pytestmark = pytest.mark.backends


def mask(shape, rate, seed=3):
    """Where `random_dropout` keeps ones of `shape`, and the value kept there."""
    dropped = keras.ops.convert_to_numpy(
        random_dropout(keras.ops.ones(shape), rate, seed=keras.random.SeedGenerator(seed)))
    return dropped > 0, dropped[dropped > 0]


def assert_fraction(observed, expected, trials):
    """`observed` is within five standard deviations of a binomial fraction `expected`."""
    assert abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / trials), observed


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_masks_drop_the_rate_and_keep_the_expected_value(rate):
    kept, values = mask((16, 50, 67), rate)  # 67: a width that four does not divide
    assert_fraction(1 - kept.mean(), rate, kept.size)
    np.testing.assert_allclose(values, 1 / (1 - rate), rtol=1e-4)  # rate rounded to 2**-16
    for axis in range(3):  # no row, column or channel is favoured
        assert_fraction(1 - kept.mean(axis=tuple(a for a in range(3) if a != axis)).min(),
                        rate, kept.size / kept.shape[axis])


def test_neighbouring_elements_and_successive_calls_draw_independently():
    rate = 0.5
    kept, _ = mask((8, 64, 128), rate)
    # The four draws of one Threefry evaluation are neighbours on the last axis.
    for offset in (1, 2, 3, 4):
        both = (~kept[..., :-offset] & ~kept[..., offset:]).mean()
        assert_fraction(both, rate * rate, kept[..., offset:].size)
    both = (~kept[:, :-1] & ~kept[:, 1:]).mean()
    assert_fraction(both, rate * rate, kept[:, 1:].size)
    generator = keras.random.SeedGenerator(5)
    ones = keras.ops.ones((8, 64, 128))
    first, second = (keras.ops.convert_to_numpy(random_dropout(ones, rate, seed=generator)) > 0
                     for _ in range(2))
    assert_fraction((first == second).mean(), rate * rate + (1 - rate) ** 2, first.size)


def test_the_same_seed_gives_the_same_mask_and_the_generator_advances_as_keras_does():
    x = images(4, 8, 8)
    ours, theirs = Dropout(0.3, seed=11), keras.layers.Dropout(0.3, seed=11)
    first = keras.ops.convert_to_numpy(ours(x, training=True))
    theirs(x, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours.seed_generator.state),
                                  keras.ops.convert_to_numpy(theirs.seed_generator.state))
    again = Dropout(0.3, seed=11)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(x, training=True)), first)
    assert not np.array_equal(keras.ops.convert_to_numpy(again(x, training=True)), first)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(x)), x)  # inference


def test_a_noise_shape_drops_whole_examples():
    dropped = keras.ops.convert_to_numpy(random_dropout(
        keras.ops.ones((64, 5, 6)), 0.5, noise_shape=(64, 1, 1),
        seed=keras.random.SeedGenerator(2)))
    per_example = dropped.reshape(64, -1)
    assert set(np.unique(per_example.min(1) == per_example.max(1))) == {True}
    assert 0 < (per_example[:, 0] == 0).sum() < 64


def test_the_gradient_is_the_mask_times_the_scale():
    if keras.backend.backend() != "jax":
        pytest.skip("jax.grad")
    import jax
    import jax.numpy as jnp

    seed = jnp.array([7, 1], jnp.uint32)
    x = jnp.asarray(images(2, 8, 8))
    gradient = jax.grad(lambda x: jnp.sum(random_dropout(x, 0.25, seed=seed)))(x)
    np.testing.assert_allclose(gradient, random_dropout(jnp.ones_like(x), 0.25, seed=seed))


@pytest.mark.slow
def test_a_training_model_draws_a_quarter_of_the_threefry_evaluations_keras_would():
    if keras.backend.backend() != "jax":
        pytest.skip("the Threefry masks are the JAX path")
    import jax

    model = create_model(TINY, num_classes=3, image_size=24, dropout=0.1)
    variables = [v.value for v in model.trainable_variables], \
        [v.value for v in model.non_trainable_variables]
    jaxpr = str(jax.make_jaxpr(lambda t, n: model.stateless_call(t, n, images(2, 24, 24),
                                                                   training=True))(*variables))
    evaluations = [np.prod([int(d) for d in shape.split(",")]) for shape in
                   re.findall(r"u32\[([\d,]+)\] \w+:u32\[[\d,]+\] = threefry2x32", jaxpr)]
    tokens, width, mlp = 1 + (24 // TINY.patch_size) ** 2, TINY.hidden_size, TINY.mlp_dim
    # The embedding, then per block: attention output, MLP hidden and MLP output; the last
    # block computes the class token only.
    elements = 2 * (tokens * width + (TINY.num_layers - 1) * tokens * (2 * width + mlp)
                    + (2 * width + mlp))
    assert sum(evaluations) == elements // 4


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_masks_keep_the_input_dtype(dtype):
    dropped = random_dropout(keras.ops.ones((4, 9, 12), dtype=dtype), 0.1,
                             seed=keras.random.SeedGenerator(1))
    assert keras.backend.standardize_dtype(dropped.dtype) == dtype
    values = np.unique(keras.ops.convert_to_numpy(keras.ops.cast(dropped, "float32")))
    assert values[0] == 0 and values[-1] == pytest.approx(1 / 0.9, rel=1e-2)  # 8 bits: bf16
