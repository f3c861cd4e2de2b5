"""A small training split on the device: the same batches as the tf.data pipeline, the same
weights after training, and the host pipeline where the split cannot stay on the device."""

import dataclasses
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from conftest import mock_tfds
from test_train import demo_task, tiny_model

from vitbench import tasks
from vitbench.data import device_data, pipeline, sources
from vitbench.train import feed, finetune


def images_of_many_sizes(count=12):
    """Examples as a TFDS source reads them: decoded images of different sizes."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (int(rng.integers(20, 60)), int(rng.integers(20, 60)), 3),
                           dtype=np.uint8) for _ in range(count)]
    signature = {"image": tf.TensorSpec((None, None, 3), tf.uint8),
                 "label": tf.TensorSpec((), tf.int64)}
    return tf.data.Dataset.from_generator(
        lambda: ({"image": image, "label": np.int64(i % 4)} for i, image in enumerate(images)),
        output_signature=signature)


@pytest.fixture
def many_sizes():
    with mock.patch.object(sources, "read", lambda *args, **kwargs: images_of_many_sizes()), \
            mock.patch.object(sources, "num_examples", lambda *args, **kwargs: 12):
        yield


def vtab_task(resolution=16):
    """A VTAB-1k task (inception crop, flip, value range) at a small resolution."""
    task = tasks.load_suite("vtab1k").task("dtd")
    return dataclasses.replace(task, label="", protocol=dataclasses.replace(
        task.protocol, resolution=resolution))


def assert_same_batches(task, data, image_dtype="float32", count=6, data_dir=None, **draw):
    host = pipeline.as_numpy(pipeline.train_dataset(task, "fit", 5, image_dtype=image_dtype,
                                                    data_dir=data_dir, **draw))
    device = device_data.batches(data, 5, image_dtype=image_dtype, **draw)
    for _ in range(count):
        expected, (images, labels) = next(host), next(device)
        assert images.dtype == expected["image"].dtype
        # float32 rounding, at most one bfloat16 step where the sums round across one
        np.testing.assert_allclose(np.asarray(images, np.float32),
                                   expected["image"].astype(np.float32),
                                   atol=2e-6 if image_dtype == "float32" else 2**-8)
        np.testing.assert_array_equal(np.asarray(labels), expected["label"])


def test_the_vtab_crop_and_flip_on_the_device_give_the_pipelines_batches(many_sizes):
    task = vtab_task()
    data = device_data.load(task, "fit")
    assert data.images.shape == (12, *data.sizes.max(axis=0), 3)  # padded to the largest
    assert data.images.dtype == np.uint8  # decoded once, cropped at every step
    assert [name for name, _ in data.device_ops] == ["inception_crop", "flip_lr",
                                                     "value_range", "keep"]
    assert_same_batches(task, data, seed=3, start_batch=2)  # a resumed run's stream too
    assert_same_batches(task, data, image_dtype="bfloat16", seed=1)


def test_a_resize_then_flip_keeps_resized_images_on_the_device(demo_data_dir):
    task = demo_task()  # resize(16)|flip_lr|value_range(-1, 1)
    data = device_data.load(task, "fit", demo_data_dir)
    assert data.images.shape[1:] == (16, 16, 3) and data.images.dtype == np.float32
    assert [name for name, _ in data.device_ops] == ["flip_lr", "value_range", "keep"]
    assert_same_batches(task, data, count=3, data_dir=demo_data_dir)


@pytest.mark.slow
def test_training_on_the_device_gives_the_pipelines_weights(many_sizes):
    task = vtab_task()
    config = finetune.TrainConfig(lr=0.1, steps=3, batch_size=4, micro_batch_size=2,
                                  warmup_steps=1)
    results = {}
    for where in ("on", "off"):
        model, summary = finetune.fine_tune(tiny_model(), task, "fit", config,
                                            device_data=where)
        results[where] = ([np.asarray(w) for w in model.get_weights()], summary)
    (device_weights, on), (host_weights, off) = results["on"], results["off"]
    stored = device_data.load(task, "fit").images
    assert on["input"] == {"where": "device", "examples": 12, "bytes": stored.nbytes}
    assert off["input"] == {"where": "host", "reason": "turned off (--device_data off)"}
    for a, b in zip(device_weights, host_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert on["train_loss"] == pytest.approx(off["train_loss"], rel=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("decode|random_crop(8)|value_range(-1, 1)", "op 'random_crop' after a random op has no "
                                                 "on-device version"),
    ("decode|flip_lr|resize(8)", "op 'resize' after a random op"),
    ("decode|flip_lr|inception_crop(8)", "inception_crop runs on the device only as its first"),
])
def test_preprocessing_without_an_on_device_rest_is_refused(spec, message):
    with pytest.raises(device_data.Unsupported, match=message):
        device_data.split_spec(spec)


def test_the_split_falls_back_to_the_host_pipeline_where_it_cannot_stay(many_sizes,
                                                                        monkeypatch):
    task, config = vtab_task(), finetune.TrainConfig(0.1, 1, 4, 4)
    monkeypatch.setattr(device_data, "budget", lambda: 1000)
    _, source = feed.training_batches(task, "fit", config)  # a CPU: the pipeline is faster
    assert source == {"where": "host", "reason": "on a CPU the tf.data pipeline is faster "
                                                 "(--device_data on: in memory anyway)"}
    batches, source = feed.training_batches(task, "fit", config, device_data="on")
    assert source == {"where": "host", "reason": "the images take more than 0.0 GiB"}
    images, labels = next(batches)
    assert isinstance(images, np.ndarray) and images.shape == (4, 16, 16, 3)
    monkeypatch.setattr(device_data, "MAX_EXAMPLES", 10)
    _, source = feed.training_batches(task, "fit", config, device_data="on")
    assert source["reason"] == "12 examples: more than the 10 kept on the device"
    resize_only = dataclasses.replace(task, protocol=dataclasses.replace(
        task.protocol, train_pp="value_range(-1, 1)|flip_lr"))
    monkeypatch.undo()
    with pytest.raises(device_data.Unsupported, match="differ in size and no crop"):
        device_data.load(resize_only, "fit")


def test_a_multi_label_task_stays_on_the_host():
    task = tasks.load_suite("vtab1k").task("dtd")
    task = dataclasses.replace(task, label="multi_hot('label', 47)")
    with mock_tfds(num_examples=4), pytest.raises(device_data.Unsupported, match="multi-hot"):
        device_data.load(task, "fit")
