"""Official .npz layout: round trips, strict errors, resampling, head replacement."""

import keras
import numpy as np
import pytest
from conftest import TINY, images, randomize
from scipy import ndimage

import vitbench
from vitbench.checkpoints import npz
from vitbench.models.vit import create_model

pytestmark = pytest.mark.backends


@pytest.fixture
def saved(tmp_path):
    """A random tiny ViT (with representation layer) and its official-layout file."""
    model = randomize(create_model(TINY.replace(representation_size=24), 10, 32))
    return model, npz.save_npz(model, tmp_path / "tiny.npz")


def test_keys_are_the_official_layout(saved):
    _, path = saved
    arrays = npz.read_npz(path)
    assert len(arrays) == TINY.num_layers * 16 + 10  # 16 per block, 8 top-level + pre_logits
    block = "Transformer/encoderblock_1/"
    expected_shapes = {
        "embedding/kernel": (8, 8, 3, 32), "cls": (1, 1, 32),
        "Transformer/posembed_input/pos_embedding": (1, 17, 32),
        "Transformer/encoder_norm/scale": (32,), "pre_logits/kernel": (32, 24),
        "head/kernel": (24, 10), f"{block}LayerNorm_0/scale": (32,),
        f"{block}MultiHeadDotProductAttention_1/query/kernel": (32, 2, 16),
        f"{block}MultiHeadDotProductAttention_1/key/bias": (2, 16),
        f"{block}MultiHeadDotProductAttention_1/out/kernel": (2, 16, 32),
        f"{block}MultiHeadDotProductAttention_1/out/bias": (32,),
        f"{block}LayerNorm_2/bias": (32,), f"{block}MlpBlock_3/Dense_0/kernel": (32, 64),
        f"{block}MlpBlock_3/Dense_1/bias": (32,),
    }
    for key, shape in expected_shapes.items():
        assert arrays[key].shape == shape and arrays[key].dtype == np.float32, key


@pytest.mark.slow
def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = vitbench.load_model(path)
    assert loaded.config.representation_size == 24 and loaded.num_classes == 10
    np.testing.assert_array_equal(loaded(images()), model(images()))


def test_config_is_inferred_from_shapes(saved):
    _, path = saved
    config, classes, grid = npz.infer_architecture(npz.read_npz(path))
    assert (config.hidden_size, config.mlp_dim, config.num_heads, config.num_layers,
            config.patch_size, config.classifier) == (32, 64, 2, 2, 8, "token")
    assert (classes, grid) == (10, (4, 4))


@pytest.mark.slow
def test_gap_model_round_trip(tmp_path):
    model = randomize(create_model(TINY.replace(classifier="gap"), 3, 32))
    loaded = vitbench.load_model(npz.save_npz(model, tmp_path / "gap.npz"))
    assert loaded.config.classifier == "gap"
    np.testing.assert_array_equal(loaded(images()), model(images()))


@pytest.mark.slow
def test_zoo_architecture_gets_its_name(tmp_path):
    model = create_model("vit_ti32", 5, 64)
    loaded = vitbench.load_model(npz.save_npz(model, tmp_path / "ti32.npz"))
    assert loaded.name == "vit_ti32"


def test_new_num_classes_gives_a_zero_head_and_drops_pre_logits(saved):
    _, path = saved
    loaded = vitbench.load_model(path, num_classes=4)
    assert loaded.config.representation_size is None
    assert np.all(keras.ops.convert_to_numpy(loaded(images())) == 0)
    assert loaded.get_layer("head").kernel.shape == (32, 4)


def test_same_num_classes_keeps_the_head(saved):
    model, path = saved
    np.testing.assert_array_equal(vitbench.load_model(path, num_classes=10)(images()),
                                  model(images()))


def test_a_new_head_of_the_same_size_is_zero_and_drops_pre_logits(saved):
    _, path = saved
    loaded = vitbench.load_model(path, num_classes=10, new_head=True)
    assert loaded.config.representation_size is None
    assert np.all(keras.ops.convert_to_numpy(loaded(images())) == 0)
    with pytest.raises(ValueError, match="a new head needs its number of classes"):
        vitbench.load_model(path, new_head=True)


@pytest.mark.slow
def test_resampling_is_the_official_bilinear_zoom_with_class_row_kept(saved):
    _, path = saved
    original = npz.read_npz(path)["Transformer/posembed_input/pos_embedding"]
    loaded = vitbench.load_model(path, image_size=56)
    resampled = keras.ops.convert_to_numpy(loaded.get_layer("posembed_input").pos_embedding)
    assert resampled.shape == (1, 1 + 7 * 7, 32)
    np.testing.assert_array_equal(resampled[0, 0], original[0, 0])
    grid = original[0, 1:].reshape(4, 4, 32)
    expected = ndimage.zoom(grid, (7 / 4, 7 / 4, 1), order=1).reshape(49, 32)
    np.testing.assert_allclose(resampled[0, 1:], expected, rtol=1e-6)
    # Corner-aligned: the four corner patches keep their embeddings exactly.
    np.testing.assert_allclose(resampled[0, 1], original[0, 1], rtol=1e-6)
    np.testing.assert_allclose(resampled[0, -1], original[0, -1], rtol=1e-6)
    assert loaded(images(1, 56, 56)).shape == (1, 10)


def test_resampling_to_a_non_square_grid(saved):
    _, path = saved
    loaded = vitbench.load_model(path, image_size=(32, 64))
    assert loaded.get_layer("posembed_input").pos_embedding.shape == (1, 1 + 4 * 8, 32)


@pytest.mark.slow
def test_a_non_square_model_saves_and_loads_at_its_size(saved, tmp_path):
    """An .npz holds no grid shape: a non-square one loads given its image size (a .keras file
    stores it), and resamples from its own grid."""
    _, path = saved
    model = vitbench.load_model(path, image_size=(32, 48))  # 4 x 6 patches
    x = images(2, 32, 48)
    npz.save_npz(model, tmp_path / "wide.npz")
    model.save(tmp_path / "wide.keras")
    from_npz = vitbench.load_model(tmp_path / "wide.npz", image_size=(32, 48))
    np.testing.assert_array_equal(from_npz(x), model(x))
    native = vitbench.load_model(tmp_path / "wide.keras")
    assert native.image_size == (32, 48)
    np.testing.assert_array_equal(native(x), model(x))
    with pytest.raises(npz.CheckpointError, match=r"24 patch rows, not a square grid.*"
                                                  r"image_size=\(height, width\)"):
        vitbench.load_model(tmp_path / "wide.npz")
    taller = vitbench.load_model(tmp_path / "wide.keras", image_size=(64, 48))
    grid = keras.ops.convert_to_numpy(model.get_layer("posembed_input").pos_embedding)[0, 1:]
    expected = ndimage.zoom(grid.reshape(4, 6, 32), (2, 1, 1), order=1).reshape(48, 32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(
        taller.get_layer("posembed_input").pos_embedding)[0, 1:], expected, rtol=1e-6)


def test_options_override_training_settings(saved):
    _, path = saved
    loaded = vitbench.load_model(path, gelu="exact", dropout=0.1)
    assert loaded.config.gelu == "exact" and loaded.config.dropout == 0.1


def test_wrong_model_names_the_mismatch(saved):
    _, path = saved
    with pytest.raises(npz.CheckpointError, match="hidden_size 192 .the file has 32."):
        vitbench.load_model(path, model="vit_ti16")


def _rewrite(path, change):
    arrays = npz.read_npz(path)
    change(arrays)
    np.savez(path, **arrays)
    return path


def test_missing_key_is_named_with_its_expected_shape(saved):
    _, path = saved
    _rewrite(path, lambda a: a.pop("Transformer/encoderblock_1/LayerNorm_2/scale"))
    with pytest.raises(npz.CheckpointError,
                       match=r"missing 'Transformer/encoderblock_1/LayerNorm_2/scale' "
                             r"\(expected shape \(32,\)\)"):
        vitbench.load_model(path)


@pytest.mark.parametrize("block", [0, 1])
def test_a_block_missing_an_array_is_named_whichever_block(saved, block):
    """The depth is read from every block's keys: neither the first nor the last block missing
    its first LayerNorm changes it (it used to be an IndexError, or one block fewer)."""
    _, path = saved
    key = f"Transformer/encoderblock_{block}/LayerNorm_0/scale"
    _rewrite(path, lambda a: a.pop(key))
    with pytest.raises(npz.CheckpointError) as error:
        vitbench.load_model(path)
    assert str(error.value).endswith(f"missing '{key}' (expected shape (32,))")


def test_a_stray_array_past_the_last_block_is_named_unexpected(saved):
    """One array of a block that is not there does not make the model a block deeper (and
    every array of that block 'missing')."""
    _, path = saved
    key = f"Transformer/encoderblock_{TINY.num_layers + 7}/LayerNorm_0/scale"
    _rewrite(path, lambda a: a.update({key: np.ones(32, "f4")}))
    with pytest.raises(npz.CheckpointError) as error:
        vitbench.load_model(path)
    assert str(error.value).splitlines()[1:] == [f"  unexpected '{key}' with shape (32,)"]


def test_a_whole_missing_block_is_named_missing(saved):
    _, path = saved
    block = "Transformer/encoderblock_0/"
    _rewrite(path, lambda a: [a.pop(key) for key in list(a) if key.startswith(block)])
    with pytest.raises(npz.CheckpointError) as error:
        vitbench.load_model(path)
    problems = str(error.value).splitlines()[1:]
    assert problems[-1] == "  ... and 6 more"  # a block has 16 arrays
    assert all(line.startswith(f"  missing '{block}") for line in problems[:-1])


@pytest.mark.parametrize("key", ["head/bias", "head/kernel"])
def test_half_a_head_is_named_missing(saved, key):
    _, path = saved
    _rewrite(path, lambda a: a.pop(key))
    with pytest.raises(npz.CheckpointError) as error:
        vitbench.load_model(path)
    shape = (24, 10) if key.endswith("kernel") else (10,)
    assert str(error.value).splitlines()[1:] == [f"  missing '{key}' (expected shape {shape})"]


@pytest.mark.parametrize("num_classes", [-1, 2.5, "5"])
def test_a_bad_class_count_is_named(saved, num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be a whole number >= 0 .0: no "
                                         f"head., not {num_classes!r}"):
        vitbench.load_model(saved[1], num_classes=num_classes)


def test_a_missing_class_token_is_suggested(saved):
    _, path = saved
    _rewrite(path, lambda a: a.pop("cls"))
    with pytest.raises(npz.CheckpointError, match="17 patch rows.*Or is its 'cls' array missing"):
        vitbench.load_model(path)


def test_unexpected_key_is_named(saved):
    _, path = saved
    _rewrite(path, lambda a: a.update({"Transformer/extra/kernel": np.zeros((3, 3), "f4")}))
    with pytest.raises(npz.CheckpointError, match="unexpected 'Transformer/extra/kernel'"):
        vitbench.load_model(path)


def test_wrong_shape_is_named_with_both_shapes(saved):
    _, path = saved
    key = "Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias"
    _rewrite(path, lambda a: a.update({key: np.zeros((31,), "f4")}))
    with pytest.raises(npz.CheckpointError, match=rf"'{key}' has shape \(31,\), expected \(32,\)"):
        vitbench.load_model(path)


def test_non_finite_weights_are_named(saved):
    _, path = saved
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"

    def damage(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key][3, 5] = np.nan

    _rewrite(path, damage)
    with pytest.raises(npz.CheckpointError, match=f"'{key}' holds NaN or infinite values$"):
        vitbench.load_model(path)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(npz.CheckpointError, match="not a readable .npz file"):
        vitbench.load_model(path)


def test_corrupt_keras_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(npz.CheckpointError, match="not a readable .keras file"):
        vitbench.load_model(path)


def test_a_zip_that_is_not_a_keras_model_is_named(saved, tmp_path):
    path = tmp_path / "weights.keras"
    path.write_bytes(saved[1].read_bytes())  # an .npz under the wrong name
    with pytest.raises(npz.CheckpointError, match="not a Keras model file .*is it an .npz"):
        vitbench.load_model(path)


def test_the_one_damaged_block_array_is_named_not_the_others(tmp_path):
    model = randomize(create_model(TINY.replace(num_layers=3), 10, 32))
    key = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"  # the first block's
    path = _rewrite(npz.save_npz(model, tmp_path / "m.npz"),
                    lambda a: a.update({key: a[key][:, :-1]}))
    with pytest.raises(npz.CheckpointError) as error:
        vitbench.load_model(path)
    assert str(error.value).count("has shape") == 1
    assert f"'{key}' has shape (32, 63), expected (32, 64)" in str(error.value)


def test_pickled_arrays_are_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(npz.CheckpointError, match="pickled"):
        vitbench.load_model(path)


def test_non_vit_file_says_what_is_missing(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, **{"conv_root/kernel": np.zeros((7, 7, 3, 64), "f4")})
    with pytest.raises(npz.CheckpointError, match="no 'embedding/kernel'"):
        vitbench.load_model(path)


def test_optimizer_wrapped_prefix_is_stripped(saved, tmp_path):
    model, path = saved
    arrays = npz.read_npz(path)
    wrapped = tmp_path / "wrapped.npz"
    np.savez(wrapped, **{f"opt/target/{key}": value for key, value in arrays.items()})
    np.testing.assert_array_equal(vitbench.load_model(wrapped)(images()), model(images()))


@pytest.mark.slow
def test_keras_native_file_loads_and_resamples(saved, tmp_path):
    model, _ = saved
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(vitbench.load_model(tmp_path / "m.keras")(images()),
                                  model(images()))
    assert vitbench.load_model(tmp_path / "m.keras", image_size=48)(images(1, 48, 48)).shape \
        == (1, 10)


def test_save_npz_is_atomic_and_leaves_no_temporary(saved, tmp_path):
    model, _ = saved
    target = tmp_path / "out" / "model.npz"
    npz.save_npz(model, target)
    npz.save_npz(model, target)  # overwriting works
    assert [p.name for p in target.parent.iterdir()] == ["model.npz"]
    (tmp_path / "plain").write_bytes(b"")  # the permissions open gives, not mkstemp's 0600
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_missing_file_is_named_and_an_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"checkpoint file {tmp_path}/nowhere.npz does "
                                                "not exist$"):
        vitbench.load_model(tmp_path / "nowhere.npz")
    with pytest.raises(FileNotFoundError, match="not a known name.*vit_b16.i21k"):
        vitbench.load_model("vit_b16.nowhere")


def test_zero_classes_removes_the_head_and_keeps_pre_logits(saved):
    model, path = saved
    features = vitbench.load_model(path, num_classes=0)
    assert features.config.representation_size == 24
    expected = model.feature_extractor()(images())["pre_logits"]
    np.testing.assert_allclose(features(images()), expected, atol=1e-6)


def test_package_exports_the_checkpoint_api():
    assert vitbench.save_npz is npz.save_npz
    assert vitbench.create_model is create_model
    with pytest.raises(AttributeError):
        _ = vitbench.no_such_thing
