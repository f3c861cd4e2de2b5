"""The generated demo dataset: deterministic, labels true to the pictures, real TFDS pipeline."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import ndimage

from vitbench import tasks
from vitbench.data import pipeline, sources
from vitbench.data.builders import demo


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory):
    """One prepared copy of the demo dataset for the whole test session."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("vitbench_demo", data_dir=data_dir).download_and_prepare()
    return data_dir


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
