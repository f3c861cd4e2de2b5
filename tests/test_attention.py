"""Padded fused attention and late-normalised CPU attention: the same numbers as plain
attention, only the kernel differs."""

import keras
import numpy as np
import pytest
from conftest import TINY, randomize
from keras import ops

from vitbench.models import attention
from vitbench.models.vit import create_model

pytestmark = pytest.mark.backends


def qkv(tokens, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, tokens, 3, 8)).astype("float32") for _ in range(3)]


@pytest.mark.parametrize("tokens,multiple", [(197, 64), (5, 4), (8, 4)])
def test_padded_attention_equals_plain_attention(tokens, multiple):
    q, k, v = qkv(tokens)
    plain = ops.dot_product_attention(q, k, v, scale=0.3)
    padded = attention.padded_attention(q, k, v, 0.3, multiple=multiple)
    assert tuple(padded.shape) == (2, tokens, 3, 8)
    np.testing.assert_allclose(np.asarray(padded), np.asarray(plain), atol=1e-5)


@pytest.mark.parametrize("tokens", [197, 5])
def test_late_normalised_attention_equals_plain_attention(tokens):
    q, k, v = qkv(tokens, seed=2)
    q = q * 4  # peaked weights: the max subtraction matters
    plain = ops.dot_product_attention(q, k, v, scale=0.3)
    late = attention.late_normalised_attention(q, k, v, 0.3)
    assert tuple(late.shape) == (2, tokens, 3, 8)
    np.testing.assert_allclose(np.asarray(late), np.asarray(plain), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", [lambda q, k, v: attention.padded_attention(q, k, v, 0.3, 4),
                                    lambda q, k, v: attention.late_normalised_attention(
                                        q, k, v, 0.3)],
                         ids=["padded", "late_normalised"])
def test_the_kernels_have_the_same_gradients(kernel):
    if keras.backend.backend() != "jax":
        pytest.skip("gradient check written with jax.grad")
    import jax

    q, k, v = qkv(7)
    weights = np.linspace(-1, 1, 8).astype("float32")

    def loss(fn):
        return lambda q, k, v: (fn(q, k, v) * weights).sum()

    plain = jax.grad(loss(lambda q, k, v: ops.dot_product_attention(q, k, v, scale=0.3)),
                     argnums=(0, 1, 2))(q, k, v)
    fast = jax.grad(loss(kernel), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.slow
def test_the_model_on_a_cpu_computes_attention_late_normalised(monkeypatch):
    if not attention.on_cpu():
        pytest.skip("runs where the backend computes on the CPU")
    model = randomize(create_model(TINY, num_classes=3, image_size=24))
    images = np.random.default_rng(1).uniform(-1, 1, (2, 24, 24, 3)).astype("float32")
    calls = []
    late_normalised_attention = attention.late_normalised_attention

    def spy(*args):
        calls.append(args[0].shape[1])
        return late_normalised_attention(*args)

    monkeypatch.setattr(attention, "late_normalised_attention", spy)
    fast = np.asarray(model(images, training=True))
    # The last block computes only the class token's query (see vitbench.models.vit).
    assert calls == [10] * (TINY.num_layers - 1) + [1]
    monkeypatch.setattr(attention, "on_cpu", lambda: False)  # Keras' own attention
    np.testing.assert_allclose(fast, np.asarray(model(images, training=True)), atol=1e-5)


def test_the_model_trains_through_the_padded_path_with_unchanged_outputs(monkeypatch):
    model = randomize(create_model(TINY, num_classes=3, image_size=24))  # 9 patches + cls
    images = np.random.default_rng(1).uniform(-1, 1, (2, 24, 24, 3)).astype("float32")
    plain = np.asarray(model(images, training=True))
    calls = []
    padded_attention = attention.padded_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape[1])
        return padded_attention(*args, **kwargs)

    monkeypatch.setattr(attention, "on_cpu", lambda: False)
    monkeypatch.setattr(attention, "fused_attention_available", lambda dtype: True)
    monkeypatch.setattr(attention, "padded_attention", spy)
    padded = np.asarray(model(images, training=True))
    # Every layer but the last, on the 10 real tokens; the last block's single class-token
    # query runs late-normalised (nothing to fuse).
    assert calls == [10] * (TINY.num_layers - 1)
    np.testing.assert_allclose(padded, plain, atol=1e-5)
    calls.clear()
    model(images, training=False)  # inference runs fused at any length: no padding
    assert not calls


def test_the_fused_kernel_needs_jax_on_a_gpu_and_half_precision():
    assert not attention.fused_attention_available("float32")
    on_gpu = keras.backend.backend() == "jax" and __import__("jax").devices()[0].platform == "gpu"
    assert attention.fused_attention_available("bfloat16") == on_gpu
