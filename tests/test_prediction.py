"""The evaluation loops' batch-by-batch prediction: padding, order, overlapped copies."""

import threading

import numpy as np
import pytest
from conftest import TINY, randomize

from vitbench.evaluate import prediction
from vitbench.models.vit import create_model


def batches(sizes, width=3):
    start = 0
    for size in sizes:
        images = np.arange(start, start + size * width, dtype=np.float32).reshape(size, width)
        yield {"image": images, "label": np.arange(start, start + size)}
        start += size * width


def test_every_call_gets_a_full_batch_and_padded_rows_are_dropped():
    shapes = []

    def predict(images):
        shapes.append(tuple(np.shape(images)))
        return {"sum": np.asarray(images).sum(axis=1), "twice": 2 * np.asarray(images)}

    results = list(prediction.predict_batches(predict, batches([4, 4, 3]), batch_size=4))
    assert shapes == [(4, 3)] * 3
    expected = list(batches([4, 4, 3]))
    assert len(results) == 3
    for (outputs, batch), want in zip(results, expected):
        np.testing.assert_array_equal(batch["label"], want["label"])  # in order, unchanged
        np.testing.assert_array_equal(outputs["sum"], want["image"].sum(axis=1))
        np.testing.assert_array_equal(outputs["twice"], 2 * want["image"])
    assert results[-1][0]["sum"].shape == (3,)


def test_array_outputs_and_an_empty_stream():
    (outputs, _), = prediction.predict_batches(lambda x: np.asarray(x)[:, :1],
                                               batches([2]), batch_size=5)
    np.testing.assert_array_equal(outputs, [[0.0], [3.0]])
    assert list(prediction.predict_batches(lambda x: x, iter([]), batch_size=5)) == []


def test_the_next_batch_is_copied_while_the_current_one_is_predicted(monkeypatch):
    copy_started = [threading.Event() for _ in range(3)]
    copy = prediction._to_device

    def recording_copy(images):
        copy_started[int(np.asarray(images)[0, 0]) // 12].set()
        return copy(images)

    monkeypatch.setattr(prediction, "_to_device", recording_copy)
    overlapped = []

    def predict(images):
        index = int(np.asarray(images)[0, 0]) // 12
        if index + 1 < len(copy_started):  # wait for the next copy: it must not wait for us
            overlapped.append(copy_started[index + 1].wait(timeout=10))
        return np.asarray(images)

    outputs = [out for out, _ in prediction.predict_batches(predict, batches([4, 4, 4]), 4)]
    assert overlapped == [True, True]
    np.testing.assert_array_equal(np.concatenate(outputs),
                                  np.concatenate([b["image"] for b in batches([4, 4, 4])]))


@pytest.mark.backends
@pytest.mark.parametrize("sizes", [[4, 4], [4, 1]])
def test_predictions_of_a_keras_model_equal_predict_on_batch(sizes):
    model = randomize(create_model(TINY, num_classes=5, image_size=16))
    rng = np.random.default_rng(0)
    stream = [{"image": rng.uniform(-1, 1, (n, 16, 16, 3)).astype(np.float32)} for n in sizes]
    got = [out for out, _ in prediction.predict_batches(model.predict_on_batch, stream, 4)]
    for out, batch in zip(got, stream):
        np.testing.assert_allclose(out, model.predict_on_batch(batch["image"]), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.slow
@pytest.mark.backends
def test_evaluation_under_bf16_copies_bfloat16_images_and_predicts_as_from_float32(monkeypatch):
    import dataclasses

    import keras
    from conftest import mock_tfds

    from vitbench import tasks
    from vitbench.data import pipeline
    from vitbench.evaluate import classification

    task = tasks.load_suite("demo").task("demo_color")
    task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol, resolution=16))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = randomize(create_model(TINY, num_classes=4, image_size=16), scale=1.0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.image_dtype == "bfloat16"
    predict, copied = model.predict_on_batch, []
    monkeypatch.setattr(model, "predict_on_batch",
                        lambda images: copied.append(keras.backend.standardize_dtype(
                            images.dtype)) or predict(images))
    with mock_tfds(num_examples=10):
        predicted, labels = classification.predictions(model, task, "test", 4)
        float32_batches = list(pipeline.as_numpy(pipeline.eval_dataset(task, "test", 4)))
    assert copied == ["bfloat16"] * 3  # half the bytes of float32 to the device
    logits = [predict(batch["image"]) for batch in float32_batches]
    np.testing.assert_array_equal(predicted, np.concatenate([np.argmax(x, -1) for x in logits]))
    np.testing.assert_array_equal(labels, np.concatenate([b["label"] for b in float32_batches]))
    assert len(set(predicted.tolist())) > 1  # a model whose predictions vary with the image
