"""vitbench's own TFDS builders: the rendered demo dataset and ImageNet-21k from its archive."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

from vitbench import tasks
from vitbench.data import pipeline, sources
from vitbench.data.builders import demo


def test_rendering_is_deterministic():
    first = demo.render(np.random.default_rng([1, 2]))
    again = demo.render(np.random.default_rng([1, 2]))
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]


def test_labels_agree_with_the_rendered_pictures(demo_data_dir):
    builder = tfds.builder("vitbench_demo", data_dir=demo_data_dir)
    colors = np.array(list(demo.COLORS.values()), float)
    seen = {"count": set(), "shape": set(), "color": set(), "x_position": set()}
    for example in tfds.as_numpy(builder.as_dataset(split="test").take(200)):
        image = example["image"].astype(float)
        objects = image.max(-1) > 100
        components, found = ndimage.label(objects)
        assert found == example["count"] + 1 == len(example["objects"]["size"])
        mean_color = image[objects].mean(0)
        assert np.argmin(((colors - mean_color) ** 2).sum(1)) == example["color"]
        # Fill ratio of each object's bounding box: square 1, circle ~0.79, triangle ~0.5.
        for box in ndimage.find_objects(components):
            fill = objects[box].mean()
            expected = {0: 1.0, 1: 0.79, 2: 0.55}[int(example["shape"])]
            assert abs(fill - expected) < 0.12, (fill, example["shape"])
        first_x = example["objects"]["x"][0]
        assert example["x_position"] == min(int(first_x * 4), 3)
        for key in seen:
            seen[key].add(int(example[key]))
    assert seen == {"count": {0, 1, 2, 3}, "shape": {0, 1, 2}, "color": {0, 1, 2, 3},
                    "x_position": {0, 1, 2, 3}}


def test_split_sizes(demo_data_dir):
    splits = tfds.builder("vitbench_demo", data_dir=demo_data_dir).info.splits
    assert {name: splits[name].num_examples for name in splits} == demo.SPLIT_SIZES


@pytest.mark.slow
def test_demo_suite_runs_through_the_real_pipeline(demo_data_dir, tmp_path):
    suite = tasks.load_suite("demo")
    assert sources.status(suite.tasks[0], str(tmp_path)).state == sources.WILL_GENERATE
    for task in suite.tasks:
        assert sources.status(task, demo_data_dir).state == sources.READY
        batch = next(pipeline.as_numpy(pipeline.train_dataset(task, "fit", 8,
                                                              data_dir=demo_data_dir)))
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
        assert -1 <= batch["image"].min() and batch["image"].max() <= 1
        assert batch["label"].max() < task.num_classes
        labels = np.concatenate([b["label"] for b in pipeline.as_numpy(
            pipeline.eval_dataset(task, "test", 128, data_dir=demo_data_dir))])
        assert len(labels) == 500 and set(labels.tolist()) == set(range(task.num_classes))


def _class_tar(path, synset, count, rng):
    import io
    import tarfile

    import tensorflow as tf

    with tarfile.open(path, "w") as archive:
        for i in range(count):
            image = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
            data = tf.io.encode_jpeg(image).numpy()
            info = tarfile.TarInfo(f"{synset}_{i}.JPEG")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("layout", ["whole archive", "class tars"])
def test_imagenet21k_builder_reads_the_official_archive_layout(tmp_path, layout):
    import tarfile

    from vitbench.data.builders import imagenet21k

    rng = np.random.default_rng(0)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    sizes = {"n02000001": 3, "n01000002": 2, "n03000003": 4}
    folder = manual if layout == "class tars" else tmp_path / "classes"
    folder.mkdir(exist_ok=True)
    for synset, count in sizes.items():
        _class_tar(folder / f"{synset}.tar", synset, count, rng)
    if layout == "whole archive":
        with tarfile.open(manual / imagenet21k.ARCHIVE, "w") as whole:
            for synset in sizes:
                whole.add(folder / f"{synset}.tar", arcname=f"{synset}.tar")
    builder = tfds.builder("imagenet21k", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.splits["full"].num_examples == 9
    examples = list(tfds.as_numpy(builder.as_dataset(split="full")))
    by_synset = {}
    for example in examples:
        by_synset.setdefault(example["synset"].decode(), set()).add(int(example["label"]))
        assert example["image"].shape == (10, 12, 3)
    assert by_synset == {"n01000002": {0}, "n02000001": {1}, "n03000003": {2}}


def test_imagenet21k_without_files_says_what_to_download(tmp_path):
    task = tasks.Task(name="i21k", group="upstream", dataset="imagenet21k", num_classes=21843,
                      splits={"train": "full[51200:]"})
    status = sources.status(task, str(tmp_path))
    assert status.state == sources.NEEDS_MANUAL
    assert "fall11_whole.tar" in status.detail and str(tmp_path / "downloads" / "manual") in \
        status.detail
