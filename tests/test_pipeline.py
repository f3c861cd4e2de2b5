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


def _png(path, image):
    import tensorflow as tf

    path.write_bytes(tf.io.encode_png(image).numpy())


def test_a_folder_of_class_subfolders_is_a_task(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in [("train", 3), ("test", 2)]:
        for label in ["cat", "dog"]:
            folder = tmp_path / "pets" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                _png(folder / f"{i}.png", rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8))
    (tmp_path / "pets" / "train" / "cat" / "notes.txt").write_text("not an image")
    path = tmp_path / "mine.toml"
    path.write_text(f'[protocol]\nresolution = 8\n[[task]]\nname = "pets"\ngroup = "custom"\n'
                    f'source = "folder"\ndataset = "{tmp_path / "pets"}"\nnum_classes = 2\n'
                    f'splits = {{ train = "train[:50%]", val = "train[50%:]", '
                    f'trainval = "train", test = "test" }}\n')
    task = tasks.load_suite(str(path)).tasks[0]
    assert sources.status(task).state == sources.READY
    assert [sources.num_examples(task, task.split(role)) for role in ("fit", "val", "test")] \
        == [3, 3, 4]
    batch = next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 4)))
    check_batch(batch, task, 4, 8)

    def labels(split):
        return np.concatenate([b["label"] for b in pipeline.as_numpy(
            pipeline.eval_dataset(task, split, 3))]).tolist()

    assert sorted(labels("test")) == [0, 0, 1, 1]
    assert sorted(labels("fit") + labels("val")) == [0, 0, 0, 1, 1, 1]
    assert sources.class_names(task) == ["cat", "dog"]  # by class id


def test_image_file_splits_mix_the_classes_whatever_the_listing_order(tmp_path):
    """Slices of a folder or CSV split take a fixed shuffled order (TFDS ImageFolder's), not
    the order of the files: a CSV listed class by class still gives both classes in train[:50%],
    and the same examples in the same order when its rows are reversed."""
    rows = []
    for i in range(16):
        _png(tmp_path / f"{i}.png", np.full((4, 4, 3), i * 10, np.uint8))
        rows.append(f"{i}.png,{'a' if i < 8 else 'b'}")

    def examples(lines, split):
        (tmp_path / "images.csv").write_text("path,label\n" + "\n".join(lines) + "\n")
        task = tasks.Task(name="ab", group="custom", source="csv",
                          dataset=str(tmp_path / "images.csv"), num_classes=2,
                          splits={"test": split}, protocol=tasks.Protocol(resolution=4))
        return [(round((e["image"][0, 0, 0] + 1) * 127.5 / 10), int(e["label"]))
                for e in tfds.as_numpy(pipeline.eval_dataset(task, "test", 1).unbatch())]

    first_half = examples(rows, "train[:50%]")
    assert len(first_half) == 8 and {label for _, label in first_half} == {0, 1}
    assert all(label == (i >= 8) for i, label in first_half)  # each image keeps its class
    assert examples(rows[::-1], "train[:50%]") == first_half
    assert sorted(first_half + examples(rows, "train[50%:]")) == \
        [(i, int(i >= 8)) for i in range(16)]


def test_a_folder_split_is_in_tfds_image_folders_order(tmp_path):
    """The order (and so every slice) equals TFDS ImageFolder's, names that sort differently
    as whole paths included ('cat-a' before 'cat/' as strings, after 'cat' as folders)."""
    for label in ["cat", "cat-a", "cat2", "Dog"]:
        (tmp_path / "imgs" / "train" / label).mkdir(parents=True)
        for name in ["1", "10", "2", "a-b", "a_b"]:
            _png(tmp_path / "imgs" / "train" / label / f"{name}.png", np.zeros((4, 4, 3), np.uint8))
    task = tasks.Task(name="x", group="custom", source="folder", num_classes=4,
                      dataset=str(tmp_path / "imgs"), splits={"train": "train"})
    ours = [path for path, _ in sources.folder_images(task).examples("train")]
    theirs = [example["image/filename"].decode() for example in tfds.as_numpy(
        tfds.ImageFolder(str(tmp_path / "imgs")).as_dataset(split="train"))]
    assert ours == theirs and len(ours) == 20


def test_missing_folder_is_reported(tmp_path):
    task = tasks.Task(name="x", group="custom", dataset=str(tmp_path / "none"), num_classes=2,
                      splits={"train": "train"}, source="folder")
    status = sources.status(task)
    assert status.state == sources.MISSING and "<class name>" in status.detail
    (tmp_path / "none" / "train" / "cat").mkdir(parents=True)
    status = sources.status(task)
    assert status.state == sources.MISSING and "no images in" in status.detail


def test_classes_that_do_not_match_num_classes_are_refused_before_any_work(tmp_path):
    for label in ["cat", "dog", "fox"]:
        (tmp_path / "pets" / "train" / label).mkdir(parents=True)
        _png(tmp_path / "pets" / "train" / label / "0.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "ids.csv").write_text("path,label\npets/train/cat/0.png,0\n"
                                      "pets/train/dog/0.png,2\n")
    (tmp_path / "names.csv").write_text("path,label\npets/train/cat/0.png,cat\n"
                                        "pets/train/dog/0.png,dog\npets/train/fox/0.png,fox\n")
    expected = {"folder": (str(tmp_path / "pets"), "has 3 classes (cat, dog, fox)"),
                "csv": (str(tmp_path / "ids.csv"), "has class id 2, the task says "
                                                   "num_classes = 2 (ids 0 to 1)"),
                "names": (str(tmp_path / "names.csv"), "has 3 classes (cat, dog, fox)")}
    for source, (dataset, message) in expected.items():
        task = tasks.Task(name="pets", group="custom", dataset=dataset, num_classes=2,
                          splits={"train": "train", "test": "train"},
                          source="csv" if source == "names" else source)
        status = sources.status(task)
        assert status.state == sources.INVALID and message in status.detail, source
        with pytest.raises(sources.ManualDownloadError, match="missing or unusable"):
            sources.check_ready([task])
    # A split name that is not there: refused before training, not after it.
    task = tasks.Task(name="pets", group="custom", dataset=str(tmp_path / "pets"), num_classes=3,
                      splits={"train": "train", "test": "tset"}, source="folder")
    status = sources.status(task)
    assert status.state == sources.INVALID and "bad split 'tset' (splits: train)" in status.detail


def test_preprocessing_that_cannot_apply_to_the_data_is_refused_before_any_work(tmp_path):
    """A label naming a feature the examples lack, on image files or on a TFDS dataset (whose
    features its code declares, prepared or not), is `invalid` before a run starts; so is a
    random op in the eval preprocessing. The shipped suites' preprocessing all applies."""
    (tmp_path / "pets" / "train" / "cat").mkdir(parents=True)
    _png(tmp_path / "pets" / "train" / "cat" / "0.png", np.zeros((4, 4, 3), np.uint8))
    folder = tasks.Task(name="pets", group="custom", source="folder", num_classes=1,
                        dataset=str(tmp_path / "pets"), splits={"train": "train"},
                        label="label_from('colour')")
    demo = dataclasses.replace(tasks.load_suite("demo").tasks[0], label="label_from('colour')")
    for task, features in [(folder, "image, label"), (demo, "color, count, image, objects")]:
        status = sources.status(task, str(tmp_path / "tfds"))
        assert status.state == sources.INVALID, task.name
        assert (f"{task.name}: its train preprocessing" in status.detail
                and f"(features: {features}" in status.detail
                and "KeyError: colour" in status.detail), status.detail
        with pytest.raises(sources.ManualDownloadError, match="KeyError: colour"):
            sources.check_ready([task], str(tmp_path / "tfds"))
    flipped = dataclasses.replace(folder, label="", protocol=tasks.Protocol(
        resolution=4, eval_pp="resize({resolution})|flip_lr"))
    status = sources.status(flipped)
    assert status.state == sources.INVALID and "its eval preprocessing" in status.detail
    assert "needs the example's '_rng' seed" in status.detail
    assert sources.status(dataclasses.replace(folder, label="")).state == sources.READY
    for suite in tasks.suite_names():
        for task in tasks.load_suite(suite).tasks:
            features = sources.get_source(task.source).features(task, str(tmp_path / "tfds"))
            assert features and sources._preprocessing_problem(task, features) is None, \
                task.name


def test_a_csv_of_paths_and_labels_is_a_task(tmp_path):
    lines = ["path,label,split"]
    for i in range(8):
        _png(tmp_path / f"{i}.png", np.full((12, 10, 3), i * 30, np.uint8))
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
    # Each image keeps its label: grey level i * 30 is cat (0: sorted names cat, dog) for odd i.
    grey = np.round((evaluation[0]["image"][:, 0, 0, 0] + 1) * 127.5 / 30).astype(int)
    assert len(grey) == 2 and set(grey) <= set(range(6))
    np.testing.assert_array_equal(evaluation[0]["label"], 1 - grey % 2)
    check_batch(next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 3))), task, 3, 8)
    assert sources.class_names(task) == ["cat", "dog"]
    # Labels given as class ids name no classes; nor does a TFDS task here.
    (tmp_path / "images.csv").write_text("\n".join(line.replace(",cat,", ",0,").replace(
        ",dog,", ",1,") for line in lines) + "\n")
    assert sources.status(task).state == sources.READY and sources.class_names(task) is None
    assert sources.class_names(tasks.load_suite("cifar10").task("cifar10")) is None


def test_csv_without_the_needed_columns_is_a_clear_error(tmp_path):
    (tmp_path / "bad.csv").write_text("file,class\na.png,1\n")
    task = tasks.Task(name="bad", group="custom", source="csv", dataset=str(tmp_path / "bad.csv"),
                      num_classes=2, splits={"test": "train"})
    with pytest.raises(ValueError, match="needs a header with 'path' and 'label'"):
        pipeline.eval_dataset(task, "test", 2)
    assert sources.status(task).state == sources.INVALID


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


def test_offline_a_dataset_tfds_would_download_is_missing_before_any_work(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    task = tasks.load_suite("cifar10").task("cifar10")
    status = sources.status(task, str(tmp_path))
    assert status.state == sources.MISSING and not status.usable
    assert f"not prepared in {tmp_path}" in status.detail and "--prepare" in status.detail
    assert "`tfds build cifar10 --data_dir DIR`" in status.detail
    assert f"copy DIR/cifar10 into {tmp_path}" in status.detail
    with pytest.raises(sources.ManualDownloadError, match="VITBENCH_OFFLINE is set"):
        sources.check_ready([task], str(tmp_path))
    with pytest.raises(sources.ManualDownloadError, match="VITBENCH_OFFLINE is set"):
        pipeline.train_dataset(task, "fit", 4, data_dir=str(tmp_path))


class TinyDownloadable(tfds.core.GeneratorBasedBuilder):
    """A dataset TFDS would 'download' (here: generate) on first use: 6 examples."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(4), "test": self._generate_examples(2)}

    def _generate_examples(self, count):
        for i in range(count):
            yield i, {"image": np.full((8, 8, 3), i, np.uint8), "label": i % 2}


class TinyDownloadableToo(TinyDownloadable):
    """Another such dataset."""


class TinyUnreachable(TinyDownloadable):
    """A dataset whose download fails as TFDS reports an HTTP error."""

    def _split_generators(self, dl_manager):
        raise tfds.core.download.util.DownloadError("Failed to get url: 503 Service Unavailable")


def test_offline_a_manual_dataset_that_also_downloads_is_missing(tmp_path, monkeypatch):
    """ImageNet prepares from its two tars offline; ImageNet-ReaL also downloads its labels."""
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    imagenet = tasks.load_suite("imagenet").task("imagenet2012")
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (manual / name).write_bytes(b"")
    assert sources.status(imagenet, str(tmp_path)).state == sources.WILL_DOWNLOAD
    status = sources.status(imagenet.real_labels_task(), str(tmp_path))
    assert status.state == sources.MISSING
    assert "reassessed-imagenet/master/real.json is not downloaded" in status.detail


def _tiny_suite(tmp_path, datasets=("tiny_downloadable",)):
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text('name = "tiny"\n[protocol]\nresolution = 8\n' + "".join(
        f'[[task]]\nname = "{name}"\ngroup = "custom"\ndataset = "{name}"\nnum_classes = 2\n'
        'splits = { train = "train", val = "train", trainval = "train", test = "test" }\n'
        for name in datasets))
    return suite_file


def test_prepare_goes_on_past_a_failed_download(tmp_path, monkeypatch, capsys):
    from vitbench import cli

    suite_file = _tiny_suite(tmp_path, ("tiny_unreachable", "tiny_downloadable_too"))
    assert cli.main(["tasks", f"--suite={suite_file}", f"--data_dir={tmp_path / 'tfds'}",
                     "--prepare"]) == 1
    listing = capsys.readouterr().out
    assert "tiny_unreachable: failed: tiny_unreachable: TFDS could not download" in listing
    assert "503 Service Unavailable" in listing
    assert "tiny_downloadable_too: preparing (will download)" in listing
    rows = {line.split()[0]: line.split()[-1] for line in listing.splitlines()
            if line.startswith("tiny_") and ":" not in line}
    assert rows == {"tiny_unreachable": "download", "tiny_downloadable_too": "ready"}
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    assert cli.main(["tasks", f"--suite={suite_file}", "--prepare"]) == 1
    assert "--prepare downloads, and VITBENCH_OFFLINE is set" in capsys.readouterr().err
    assert cli.main(["tasks", "--prepare"]) == 1
    assert "--prepare needs --suite" in capsys.readouterr().err


def test_prepare_readies_a_suites_data_ahead_of_an_offline_run(tmp_path, monkeypatch, capsys):
    from vitbench import cli

    suite_file = _tiny_suite(tmp_path)
    data_dir = tmp_path / "tfds"
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    assert cli.main(["tasks", f"--suite={suite_file}", f"--data_dir={data_dir}"]) == 0
    listing = capsys.readouterr().out
    assert "missing" in listing and "VITBENCH_OFFLINE is set" in listing
    monkeypatch.setenv("VITBENCH_OFFLINE", "")
    assert cli.main(["tasks", f"--suite={suite_file}", f"--data_dir={data_dir}",
                     "--prepare"]) == 0
    listing = capsys.readouterr().out
    assert "tiny_downloadable: preparing (will download)" in listing
    assert "ready" in listing and "to do before" not in listing
    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    task = tasks.load_suite(str(suite_file)).task("tiny_downloadable")
    assert sources.status(task, str(data_dir)).state == sources.READY
    assert sources.num_examples(task, "train", str(data_dir)) == 4


@pytest.mark.parametrize("resolution,margin", [(224, 256), (384, 439)])
def test_few_shot_images_are_cropped_from_a_resize_that_follows_the_resolution(resolution,
                                                                              margin):
    """big_vision resizes to 256 and crops 224; at --resolution 384 the resize grows with it
    (a 384 crop of a 256 resize cannot be taken)."""
    from vitbench.transfer.plan import Overrides

    task = Overrides(resolution=resolution).apply(tasks.load_suite("fewshot").task("dtd"))
    assert task.pp("eval").startswith(f"decode|resize({margin})|central_crop({resolution})|")
    with mock_tfds(num_examples=2):
        batch = next(pipeline.as_numpy(pipeline.eval_dataset(task, "test", 2)))
    check_batch(batch, task, 2, resolution)
