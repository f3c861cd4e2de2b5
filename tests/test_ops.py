"""Preprocessing ops and label transforms: each run eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from vitbench.data import registry


def run_both_ways(spec, example):
    """Applies `spec` eagerly and in a tf.data map; both must agree."""
    apply = registry.chain(spec)
    eager = apply(dict(example))
    mapped = next(iter(tf.data.Dataset.from_tensors(example).map(apply)))
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6),
        eager, mapped)
    return tf.nest.map_structure(np.asarray, eager)


IMAGE = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
RNG = np.array([1, 2], np.int64)


def test_resize_and_value_range():
    out = run_both_ways("resize(4)|value_range(-1, 1)", {"image": IMAGE})
    assert out["image"].shape == (4, 4, 3) and out["image"].dtype == np.float32
    assert -1 <= out["image"].min() and out["image"].max() <= 1
    full = run_both_ways("value_range(-1, 1)", {"image": np.array([[[0, 255, 127]]], np.uint8)})
    np.testing.assert_allclose(full["image"], [[[-1, 1, 127 / 127.5 - 1]]], rtol=1e-6)


def test_resize_small_keeps_aspect_and_central_crop_takes_the_middle():
    assert run_both_ways("resize_small(3)", {"image": IMAGE})["image"].shape == (3, 4, 3)
    crop = run_both_ways("central_crop(2)", {"image": IMAGE})["image"]
    np.testing.assert_array_equal(crop, IMAGE[2:4, 3:5])


def test_random_ops_are_reproducible_from_the_example_seed():
    example = {"image": IMAGE, "_rng": RNG}
    first = run_both_ways("inception_crop(5)|flip_lr", example)["image"]
    again = run_both_ways("inception_crop(5)|flip_lr", example)["image"]
    assert first.shape == (5, 5, 3)
    np.testing.assert_array_equal(first, again)
    crops = {run_both_ways("random_crop(3)", {"image": IMAGE, "_rng": np.array([s, 0])})
             ["image"].tobytes() for s in range(8)}
    assert len(crops) > 1  # different seeds give different crops


@pytest.mark.slow
def test_flip_flips_half_the_time():
    flipped = 0
    for seed in range(40):
        out = run_both_ways("flip_lr", {"image": IMAGE, "_rng": np.array([seed, 7])})["image"]
        assert np.array_equal(out, IMAGE) or np.array_equal(out, IMAGE[:, ::-1])
        flipped += np.array_equal(out, IMAGE[:, ::-1])
    assert 8 <= flipped <= 32


def test_random_op_without_seed_is_a_clear_error():
    with pytest.raises(KeyError, match="needs the example's '_rng'"):
        registry.chain("flip_lr")({"image": IMAGE})


def test_gray_to_rgb_scale_and_decode():
    gray = np.array([[[0], [1]]], np.uint8)
    out = run_both_ways("to_rgb|scale(255)", {"image": gray})["image"]
    np.testing.assert_array_equal(out, [[[0, 0, 0], [255, 255, 255]]])
    png = tf.io.encode_png(IMAGE).numpy()
    np.testing.assert_array_equal(run_both_ways("decode", {"image": png})["image"], IMAGE)


def test_keep_drops_other_features():
    out = run_both_ways("keep('image', 'label')", {"image": IMAGE, "label": 3, "extra": 1.0})
    assert set(out) == {"image", "label"}


@pytest.mark.parametrize("spec,message", [
    ("resise(3)", "Did you mean resize"),
    ("resize(size=)", "cannot parse"),
    ("resize(x)", "arguments must be literals"),
    ("resize(1, 2, 3, 4)", "resize"),
    ("a.b", "is not `name` or `name\\(args\\)`"),
])
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        registry.parse(spec)


# Label transforms on hand-computed cases (VTAB's definitions).

def label(spec, example):
    return int(run_both_ways(spec, example)["label"])


def test_clevr_count_is_objects_minus_three():
    assert label("clevr_count_all", {"objects": {"size": np.zeros(3, np.int64)}}) == 0
    assert label("clevr_count_all", {"objects": {"size": np.zeros(10, np.int64)}}) == 7


@pytest.mark.parametrize("depths,expected", [
    ([12.0, 7.9], 0), ([8.0, 30.0], 0), ([8.2], 1), ([8.5001], 2), ([9.4], 3), ([9.9], 4),
    ([10.5, 11.0], 5)])
def test_clevr_distance_bins_the_nearest_object(depths, expected):
    coords = np.array([[0.0, 0.0, d] for d in depths], np.float32)
    assert label("clevr_closest_object_distance", {"objects": {"pixel_coords": coords}}) == expected


@pytest.mark.parametrize("value,factor,expected", [(0, 2.0, 0), (31, 2.0, 15), (5, 2.0, 2),
                                                   (39, 2.5, 15), (5, 2.5, 2), (4, 2.5, 1)])
def test_dsprites_bins(value, factor, expected):
    assert label(f"bin_label('v', {factor})", {"v": np.int64(value)}) == expected


def test_label_from_copies_a_feature():
    assert label("label_from('label_azimuth')", {"label_azimuth": np.int64(17)}) == 17


@pytest.mark.parametrize("types,depths,expected", [
    ([0], [5.0], 0), ([1, 0], [30.0, 12.0], 1), ([2], [25.0], 2),
    ([3, 4], [2.0, 3.0], 3),  # only pedestrians and cyclists: no vehicle
    ([], [], 3), ([3, 0], [1.0, 8.0], 0), ([0], [999.5], 3)])
def test_kitti_distance(types, depths, expected):
    location = np.array([[0.0, 0.0, d] for d in depths], np.float32).reshape(-1, 3)
    example = {"objects": {"type": np.array(types, np.int64), "location": location}}
    assert label("kitti_closest_vehicle_distance", example) == expected


def test_multi_hot_for_real_labels():
    out = run_both_ways("multi_hot('real_label', 5)", {"real_label": np.array([1, 3], np.int64)})
    np.testing.assert_array_equal(out["labels"], [0, 1, 0, 1, 0])
    empty = run_both_ways("multi_hot('real_label', 5)", {"real_label": np.zeros(0, np.int64)})
    np.testing.assert_array_equal(empty["labels"], [0, 0, 0, 0, 0])




@pytest.mark.parametrize("shape,color,expected", [(0, 0, 0), (0, 3, 3), (1, 0, 4), (2, 3, 11)])
def test_joint_label_numbers_combinations_row_major(shape, color, expected):
    example = {"shape": np.int64(shape), "color": np.int64(color)}
    assert label("joint_label(['shape', 'color'], [3, 4])", example) == expected


def test_joint_label_needs_a_size_per_key():
    with pytest.raises(ValueError, match="2 keys but 1 sizes"):
        registry.chain("joint_label(['shape', 'color'], [3])")
