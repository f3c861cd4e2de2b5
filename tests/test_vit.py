"""The Keras ViT: shapes, dtypes, heads, features, attention, training options, saving."""

import keras
import numpy as np
import pytest
from conftest import TINY, images, logits_gradient, randomize

from vitbench.models import zoo
from vitbench.models.vit import VisionTransformer, create_model

pytestmark = pytest.mark.backends


@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 48, (32, 48)])
@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_forward_shape_and_dtype(size, classifier):
    model = create_model(TINY.replace(classifier=classifier), num_classes=7, image_size=size)
    height, width = zoo.as_hw(size)
    logits = keras.ops.convert_to_numpy(model(images(3, height, width)))
    assert logits.shape == (3, 7) and logits.dtype == np.float32
    tokens = (height // 8) * (width // 8) + (classifier == "token")
    assert model.get_layer("posembed_input").pos_embedding.shape == (1, tokens, 32)


@pytest.mark.slow
def test_instantiated_params_equal_the_analytic_count():
    for config, size, classes in [(zoo.get_config("vit_ti16"), 224, 1000),
                                  (TINY.replace(representation_size=24), 48, 5),
                                  (TINY.replace(classifier="gap"), 32, 0)]:
        model = create_model(config, num_classes=classes, image_size=size)
        assert model.count_params() == zoo.count_params(config, size, classes)


def test_head_is_zero_initialised():
    model = create_model(TINY, num_classes=4, image_size=32)
    assert np.all(keras.ops.convert_to_numpy(model(images())) == 0)


@pytest.mark.slow
def test_feature_extractor_returns_pre_logits_and_logits():
    model = randomize(create_model(TINY.replace(representation_size=16), 5, 32))
    out = model.feature_extractor()(images())
    assert out["pre_logits"].shape == (2, 16) and out["logits"].shape == (2, 5)
    np.testing.assert_allclose(out["logits"], model(images()), atol=1e-6)
    assert np.abs(keras.ops.convert_to_numpy(out["pre_logits"])).max() <= 1  # tanh


def test_headless_model_returns_features():
    model = randomize(create_model(TINY, num_classes=0, image_size=32))
    assert model(images()).shape == (2, 32)
    assert set(model.feature_extractor()(images())) == {"pre_logits"}


def test_attention_maps_are_distributions_and_logits_agree():
    model = randomize(create_model(TINY, 3, 32))
    logits, attention = model.attention_maps(images())
    assert len(attention) == TINY.num_layers
    weights = keras.ops.convert_to_numpy(attention[0])
    assert weights.shape == (2, TINY.num_heads, 17, 17)
    np.testing.assert_allclose(weights.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(logits, model(images()), atol=1e-5)


def test_gelu_form_changes_outputs_slightly():
    tanh = randomize(create_model(TINY, 3, 32))
    exact = create_model(TINY.replace(gelu="exact"), 3, 32)
    exact.set_weights(tanh.get_weights())
    difference = np.abs(keras.ops.convert_to_numpy(tanh(images()) - exact(images()))).max()
    assert 0 < difference < 1e-2


@pytest.mark.slow
def test_dropout_and_drop_path_act_only_in_training():
    model = randomize(create_model(TINY.replace(dropout=0.3, stochastic_depth=0.5), 3, 32))
    x = images()
    np.testing.assert_array_equal(model(x), model(x))
    assert not np.allclose(model(x, training=True), model(x))


def test_drop_path_rate_grows_linearly_to_the_configured_rate():
    model = create_model(TINY.replace(num_layers=3, stochastic_depth=0.2), 3, 32)
    rates = [model.get_layer(f"encoderblock_{i}").drop_path for i in range(3)]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.slow
def test_mixed_precision_logits_are_float32_and_match_the_float32_path():
    reference = randomize(create_model(TINY, 10, 32), scale=0.1)
    batch = images(16)
    expected = keras.ops.convert_to_numpy(reference(batch))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = create_model(TINY, 10, 32)
        model.set_weights(reference.get_weights())
        logits = keras.ops.convert_to_numpy(model(batch))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == np.float32
    # bf16 keeps 8 significant bits: ~0.4% per rounding, a few percent after the layers.
    np.testing.assert_allclose(logits, expected, atol=0.03 * np.abs(expected).max())
    assert np.abs(logits - expected).max() > 0  # the bf16 path really ran
    assert (logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.8


@pytest.mark.slow
def test_native_keras_saving_round_trip(tmp_path):
    model = randomize(create_model(TINY.replace(representation_size=16), 5, (32, 48)))
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(restored, VisionTransformer) and restored.config == model.config
    x = images(2, 32, 48)
    np.testing.assert_array_equal(restored(x), model(x))


def test_pixels_past_the_last_whole_patch_are_not_seen():
    # ViT-H/14 at 384 px, as the official code runs it: 27 x 27 patches of the top-left 378 px.
    cropped = randomize(create_model(TINY, 3, 32))
    model = create_model(TINY, 3, (36, 39))
    model.set_weights(cropped.get_weights())  # the same 4 x 4 grid: the same arrays
    x = images(2, 36, 39)
    np.testing.assert_allclose(model(x), cropped(x[:, :32, :32]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="smaller than the patch size 8"):
        create_model(TINY, 3, (32, 7))


def _gradients_and_seed_states(model, images):
    import jax

    step, trainable = logits_gradient(model, images)
    return jax.jit(step)(trainable), str(jax.make_jaxpr(step)(trainable))


@pytest.mark.slow
def test_remat_recomputes_each_block_with_the_same_gradients_and_random_stream():
    if keras.backend.backend() != "jax":
        pytest.skip("checked on jax.checkpoint")
    results = {}
    for remat in (False, True):
        keras.utils.set_random_seed(0)  # the same weights and dropout seeds for both
        model = create_model(TINY, num_classes=3, image_size=24, remat=remat, dropout=0.1,
                             stochastic_depth=0.2)
        results[remat] = _gradients_and_seed_states(model, images(2, 24, 24))
    (plain, plain_seeds), plain_jaxpr = results[False]
    (remat, remat_seeds), remat_jaxpr = results[True]
    assert "remat" not in plain_jaxpr and remat_jaxpr.count("remat") >= TINY.num_layers
    for a, b in zip(plain, remat):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(plain_seeds) == 2 * TINY.num_layers  # dropout and drop-path, per block
    for a, b in zip(plain_seeds, remat_seeds):  # the generators advanced alike
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_remat_survives_saving_and_can_be_switched(tmp_path):
    model = create_model(TINY, num_classes=3, image_size=24, remat=True)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.config.remat and all(block.remat for block in restored._blocks)
    restored.set_remat(False)
    assert not restored.config.remat and not any(block.remat for block in restored._blocks)
    with pytest.raises(ValueError, match="attention_dropout"):
        create_model(TINY, remat=True, attention_dropout=0.1)


def _full_last_block(monkeypatch):
    """Makes every block compute all its tokens, the last one included."""
    from vitbench.models.vit import EncoderBlock

    call = EncoderBlock.call
    monkeypatch.setattr(EncoderBlock, "call",
                        lambda self, x, class_token_only=False, **kwargs: call(self, x, **kwargs))


@pytest.mark.slow
def test_the_last_block_computes_only_the_class_token_with_unchanged_logits_and_gradients(
        monkeypatch):
    if keras.backend.backend() != "jax":
        pytest.skip("gradients and FLOPs checked with jax")
    import jax

    model = randomize(create_model(TINY, num_classes=3, image_size=32))
    last = model.get_layer(f"encoderblock_{TINY.num_layers - 1}")
    assert tuple(last.output.shape) == (None, 1, TINY.hidden_size)
    assert tuple(model.get_layer("encoderblock_0").output.shape) == (None, 17, TINY.hidden_size)

    def measured():
        step, trainable = logits_gradient(model, images())
        forward = jax.jit(lambda x: model.stateless_call(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables], x)[0])
        flops = forward.lower(images()).compile().cost_analysis()["flops"]
        return np.asarray(model(images())), jax.jit(step)(trainable)[0], flops

    logits, gradients, flops = measured()
    _full_last_block(monkeypatch)
    full_logits, full_gradients, full_flops = measured()
    np.testing.assert_allclose(logits, full_logits, atol=1e-5)
    for a, b in zip(gradients, full_gradients):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    # Skipped for 16 of 17 tokens: the last block's query and output projections and its MLP,
    # 16 x (2 x 32 x 32 + 2 x 32 x 64) multiply-adds in matmuls alone (XLA counts 29% of this
    # model's forward FLOPs saved, the elementwise work included).
    skipped = 2 * 16 * (2 * 32 * 64 + 2 * 32 * 32)
    assert full_flops - flops >= 0.9 * skipped


def test_a_gap_model_keeps_every_token_in_the_last_block():
    model = create_model(TINY.replace(classifier="gap"), num_classes=3, image_size=32)
    last = model.get_layer(f"encoderblock_{TINY.num_layers - 1}")
    assert tuple(last.output.shape) == (None, 16, TINY.hidden_size)


RELEASED_OPTIONS = TINY.replace(
    classifier="gap", class_token=True, num_registers=2, pos_embed_prefix=False,
    layer_scale=0.1, pre_norm=True, final_norm="pooled", norm_epsilon=1e-5, gelu="quick",
    normalization="imagenet")


def test_options_of_released_vits_build_count_save_and_normalise(tmp_path):
    model = randomize(create_model(RELEASED_OPTIONS, num_classes=3, image_size=32))
    assert model.count_params() == zoo.count_params(RELEASED_OPTIONS, 32, 3)
    assert model.get_layer("posembed_input").pos_embedding.shape == (1, 16, 32)  # patches only
    assert model.get_layer("embedding").bias is None  # pre-norm: no patch bias, as CLIP
    x = images(2)
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.config == model.config
    np.testing.assert_allclose(restored(x), model(x), rtol=1e-6, atol=1e-6)
    # The normalisation is the first thing the model does: [-1, 1] -> (x01 - mean) / std.
    plain = create_model(RELEASED_OPTIONS.replace(normalization=None), 3, 32)
    plain.set_weights(model.get_weights())
    mean, std = (np.array(v, np.float32) for v in zoo.NORMALIZATIONS["imagenet"])
    np.testing.assert_allclose(model(x), plain(((x + 1) / 2 - mean) / std), rtol=1e-5,
                               atol=1e-5)


def test_invalid_options_are_refused_by_name():
    with pytest.raises(ValueError, match="token classifier needs class_token"):
        TINY.replace(class_token=False)
    with pytest.raises(ValueError, match="unknown normalization 'imagenet1k'; known: inception"):
        TINY.replace(normalization="imagenet1k")
    with pytest.raises(ValueError, match="final_norm 'after'"):
        TINY.replace(final_norm="after")
    assert TINY.replace(normalization=((0.5,) * 3, (0.5,) * 3)).normalization is None
