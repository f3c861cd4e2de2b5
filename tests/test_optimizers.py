"""vitbench's optimizers: accumulated passes move the weights and the Polyak average as the
whole batch does, on every backend."""

import keras
import numpy as np
import pytest

from vitbench.train import optimizers

pytestmark = pytest.mark.backends


def trained_weights(optimizer, batch_size, accumulation, polyak):
    """A linear regression's weights after 2 epochs of `fit` on 16 examples; with `polyak`
    their moving average, which `fit` swaps in when it ends."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(loss="mse", optimizer=optimizer(
        learning_rate=0.1, gradient_accumulation_steps=accumulation, use_ema=bool(polyak),
        ema_momentum=polyak or 0.99))
    model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.parametrize("optimizer", [optimizers.SGD, optimizers.AdamW])
def test_accumulated_passes_move_the_weights_and_their_average_as_the_whole_batch(optimizer):
    whole = trained_weights(optimizer, 8, None, 0.5)
    for micro_batch, passes in ((4, 2), (2, 4)):
        for a, b in zip(trained_weights(optimizer, micro_batch, passes, 0.5), whole):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    unaveraged = trained_weights(optimizer, 8, None, 0.0)
    assert max(np.abs(a - b).max() for a, b in zip(whole, unaveraged)) > 1e-3  # it averages
