"""Input pipelines for every task of every shipped suite, on mocked TFDS data."""

import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import mock_tfds
from vitbench import tasks
from vitbench.data import pipeline, sources

ALL_TASKS = [(suite, task.name) for suite in tasks.suite_names()
             for task in tasks.load_suite(suite).tasks]


def small(task, resolution=16):
    return dataclasses.replace(task, protocol=dataclasses.replace(task.protocol,
                                                                  resolution=resolution))


def check_batch(batch, task, batch_size, resolution):
    images, labels = batch["image"], batch["label"]
    assert set(batch) == {"image", "label"}
    assert images.shape == (batch_size, resolution, resolution, 3)
    assert images.dtype == np.float32
    assert -1 <= images.min() and images.max() <= 1
    assert labels.shape == (batch_size,)
    assert ((0 <= labels) & (labels < task.num_classes)).all(), (task.name, labels)


@pytest.mark.parametrize("suite,name", ALL_TASKS, ids=[f"{s}-{n}" for s, n in ALL_TASKS])
def test_train_and_eval_batches_from_mock_data(suite, name):
    task = small(tasks.load_suite(suite).task(name))
    with mock_tfds(num_examples=6):
        train = next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 4, seed=0)))
        evaluation = list(pipeline.as_numpy(pipeline.eval_dataset(task, "test", 4)))
    check_batch(train, task, 4, 16)
    assert [len(b["label"]) for b in evaluation] == [4, 2]  # one ordered pass, last batch short
    for batch in evaluation:
        check_batch(batch, task, len(batch["label"]), 16)


def test_training_batches_are_reproducible_from_the_seed():
    task = small(tasks.load_suite("vtab1k").task("cifar100"))
    with mock_tfds(num_examples=8):
        def first_batches(seed):
            batches = pipeline.as_numpy(pipeline.train_dataset(task, "fit", 4, seed=seed))
            return [next(batches) for _ in range(3)]

        a, b, c = first_batches(0), first_batches(0), first_batches(1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_processes_read_disjoint_shards():
    task = small(tasks.load_suite("vtab1k").task("dtd"))
    with mock_tfds(num_examples=8):
        whole = np.concatenate([b["image"] for b in pipeline.as_numpy(
            pipeline.eval_dataset(task, "test", 8))])
        shards = [np.concatenate([b["image"] for b in pipeline.as_numpy(
            pipeline.eval_dataset(task, "test", 8, process_index=i, process_count=2))])
            for i in range(2)]
    np.testing.assert_array_equal(shards[0], whole[0::2])
    np.testing.assert_array_equal(shards[1], whole[1::2])


def test_a_failed_download_says_what_to_do(tmp_path, monkeypatch):
    import requests

    def offline(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    task = tasks.load_suite("vtab1k").task("dtd")
    with pytest.raises(sources.DownloadFailedError) as error:
        pipeline.train_dataset(task, "fit", 4, data_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"dtd: TFDS could not download dtd:3.*.* into {tmp_path} (Failed "
                              "to resolve 'storage.googleapis.com'). Check the network")
    assert "`tfds build dtd`" in message and f"folder into {tmp_path}" in message


def test_missing_manual_download_says_which_files_go_where(tmp_path):
    task = tasks.load_suite("vtab1k").task("resisc45")
    status = sources.status(task, str(tmp_path))
    assert status.state == sources.NEEDS_MANUAL and not status.usable
    manual = tmp_path / "downloads" / "manual"
    assert str(manual) in status.detail and "rar" in status.detail
    with pytest.raises(sources.ManualDownloadError, match=str(manual)):
        pipeline.train_dataset(task, "fit", 4, data_dir=str(tmp_path))
    manual.mkdir(parents=True)
    (manual / "NWPU-RESISC45.rar").write_bytes(b"x")
    assert sources.status(task, str(tmp_path)).state == sources.WILL_DOWNLOAD


def test_downloadable_dataset_status(tmp_path):
    status = sources.status(tasks.load_suite("cifar10").task("cifar10"), str(tmp_path))
    assert status.state == sources.WILL_DOWNLOAD and status.usable


def test_a_folder_of_class_subfolders_is_a_task(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split, count in [("train", 3), ("test", 2)]:
        for label in ["cat", "dog"]:
            folder = tmp_path / "pets" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    path = tmp_path / "mine.toml"
    path.write_text(f'[protocol]\nresolution = 8\n[[task]]\nname = "pets"\ngroup = "custom"\n'
                    f'source = "folder"\ndataset = "{tmp_path / "pets"}"\nnum_classes = 2\n'
                    f'splits = {{ train = "train", test = "test" }}\n')
    task = tasks.load_suite(str(path)).tasks[0]
    assert sources.status(task).state == sources.READY
    batch = next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 4)))
    check_batch(batch, task, 4, 8)
    labels = np.concatenate([b["label"] for b in pipeline.as_numpy(
        pipeline.eval_dataset(task, "test", 3))])
    assert sorted(labels.tolist()) == [0, 0, 1, 1]


def test_missing_folder_is_reported(tmp_path):
    task = tasks.Task(name="x", group="custom", dataset=str(tmp_path / "none"), num_classes=2,
                      splits={"train": "train"}, source="folder")
    status = sources.status(task)
    assert status.state == sources.MISSING and "<class name>" in status.detail


def test_preflight_lists_every_task_that_cannot_run(tmp_path):
    suite = tasks.load_suite("vtab1k")
    with pytest.raises(sources.ManualDownloadError) as error:
        sources.check_ready(suite.tasks, str(tmp_path))
    message = str(error.value)
    assert "resisc45" in message and "diabetic_retinopathy" in message
    assert "caltech101" not in message
    sources.check_ready(tasks.load_suite("demo").tasks, str(tmp_path))  # nothing missing


def test_a_csv_of_paths_and_labels_is_a_task(tmp_path):
    import tensorflow as tf

    lines = ["path,label,split"]
    for i in range(8):
        image = np.full((12, 10, 3), i * 30, np.uint8)
        (tmp_path / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
        lines.append(f"{i}.png,{'cat' if i % 2 else 'dog'},{'test' if i >= 6 else 'train'}")
    (tmp_path / "images.csv").write_text("\n".join(lines) + "\n")
    task = tasks.Task(name="animals", group="custom", source="csv",
                      dataset=str(tmp_path / "images.csv"), num_classes=2,
                      splits={"train": "train[:4]", "trainval": "train", "val": "train[4:]",
                              "test": "test"},
                      protocol=tasks.Protocol(resolution=8, train_pp="resize({resolution})|"
                                              "flip_lr|value_range(-1, 1)"))
    assert sources.status(task).state == sources.READY
    assert sources.num_examples(task, "train[:50%]+test") == 5
    evaluation = list(pipeline.as_numpy(pipeline.eval_dataset(task, "val", 8)))
    # rows 4 and 5: grey levels 120 and 150, classes dog (1: sorted names cat, dog) and cat (0)
    np.testing.assert_array_equal(evaluation[0]["label"], [1, 0])
    np.testing.assert_allclose(evaluation[0]["image"][:, 0, 0, 0],
                               [120 / 127.5 - 1, 150 / 127.5 - 1], rtol=1e-5)
    check_batch(next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 3))), task, 3, 8)


def test_csv_without_the_needed_columns_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.png,1\n")
    task = tasks.Task(name="bad", group="custom", source="csv", dataset=str(tmp_path / "bad.csv"),
                      num_classes=2, splits={"test": "train"})
    with pytest.raises(ValueError, match="needs a header with 'path' and 'label'"):
        pipeline.eval_dataset(task, "test", 2)


def test_images_leave_the_pipelines_in_the_requested_dtype():
    task = small(tasks.load_suite("vtab1k").task("cifar100"))
    with mock_tfds(num_examples=6):
        def batches(dtype):
            return (list(pipeline.as_numpy(pipeline.eval_dataset(task, "test", 4,
                                                                 image_dtype=dtype)))
                    + [next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 4, seed=0,
                                                                     image_dtype=dtype)))])

        full, half = batches("float32"), batches("bfloat16")
    for a, b in zip(full, half, strict=True):
        assert str(b["image"].dtype) == "bfloat16"
        np.testing.assert_array_equal(b["image"], a["image"].astype(b["image"].dtype))
        np.testing.assert_array_equal(b["label"], a["label"])
