"""The residual stream's gradient fence: the same training numbers, and on XLA:CPU no fused
computation that grows with the depth of the model."""

import re

import keras
import numpy as np
import pytest
from conftest import TINY, images, logits_gradient, randomize

from vitbench.models import gradient_fence
from vitbench.models.vit import create_model

pytestmark = pytest.mark.backends


def trained_weights(monkeypatch, fenced):
    monkeypatch.setattr(gradient_fence, "on_cpu", lambda: fenced)
    keras.utils.set_random_seed(0)
    model = randomize(create_model(TINY.replace(num_layers=3), num_classes=3, image_size=24))
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(2):
        model.train_on_batch(images(4, 24, 24), np.array([0, 1, 2, 1]))
    return {w.path: np.asarray(w) for w in model.weights}


@pytest.mark.slow
def test_training_with_the_fence_gives_the_weights_training_without_it_gives(monkeypatch):
    start = {w.path: np.asarray(w) for w in
             randomize(create_model(TINY.replace(num_layers=3), num_classes=3,
                                    image_size=24)).weights}
    fenced = trained_weights(monkeypatch, True)
    plain = trained_weights(monkeypatch, False)
    assert fenced.keys() == plain.keys() == start.keys()
    for path, before in start.items():
        # Every weight moved (the gradients are real), but the key bias: softmax ignores it.
        assert (np.abs(fenced[path] - before).max() > 1e-4) != path.endswith("key/bias"), path
        np.testing.assert_allclose(fenced[path], plain[path], rtol=1e-5, atol=1e-6)


def largest_fusion(monkeypatch, depth, fenced):
    """Operands of the largest fused computation in the XLA-compiled gradient of a model."""
    import jax

    monkeypatch.setattr(gradient_fence, "on_cpu", lambda: fenced)
    model = create_model(TINY.replace(num_layers=depth), num_classes=3, image_size=24)
    step, trainable = logits_gradient(model, images(2, 24, 24))
    compiled = jax.jit(step).lower(trainable).compile().as_text()
    return max(match.group(1).count("%") for match in
               re.finditer(r"= \S+ fusion\((.*?)\), kind", compiled))


@pytest.mark.slow
def test_no_fused_computation_grows_with_depth_on_xla_cpu(monkeypatch):
    if keras.backend.backend() != "jax" or not gradient_fence.on_cpu():
        pytest.skip("XLA:CPU under JAX")
    shallow, deep = (largest_fusion(monkeypatch, depth, True) for depth in (2, 4))
    assert deep == shallow  # measured: 13 operands at depths 2, 4, 6 and 8
    # Without the fence the gradient's running sum is fused, whole, into each block's consumers
    # (measured: 50, 91, 131 and 173 operands at depths 2, 4, 6 and 8).
    assert largest_fusion(monkeypatch, 4, False) > 1.5 * largest_fusion(monkeypatch, 2, False)
