"""Few-shot linear evaluation: the solver, the sampling, the feature cache, learned features."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from vitbench.evaluate import fewshot


def features(examples, dimensions, classes, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(examples) % classes
    centres = 3.0 * rng.normal(size=(classes, dimensions))
    return (centres[labels] + rng.normal(size=(examples, dimensions))).astype(np.float32), labels


@pytest.mark.parametrize("examples,dimensions", [(60, 16), (12, 40)])  # N >= D and D > N
def test_ridge_solution_equals_scikit_learn(examples, dimensions):
    x, y = features(examples, dimensions, classes=3)
    l2 = 1024.0
    weights, mean, std = fewshot.ridge_weights(x, y, 3, l2)
    whitened = (x - x.mean(0)) / (x.std(0) + 1e-5)
    design = np.concatenate([whitened, np.full((examples, 1), 100.0)], axis=1)
    reference = Ridge(alpha=l2, fit_intercept=False, solver="cholesky").fit(
        design.astype(np.float64), 2.0 * np.eye(3)[y] - 1.0)
    np.testing.assert_allclose(np.asarray(weights), reference.coef_.T, rtol=1e-3, atol=1e-5)
    test_x, test_y = features(30, dimensions, classes=3, seed=0)
    expected = np.mean(np.argmax(reference.predict(np.concatenate(
        [(test_x - x.mean(0)) / (x.std(0) + 1e-5), np.full((30, 1), 100.0)], 1)), 1) == test_y)
    assert fewshot.ridge_accuracy(x, y, test_x, test_y, 3, l2) == pytest.approx(expected)


def test_sampling_takes_exactly_k_per_class_reproducibly_and_nested():
    labels = np.repeat(np.arange(4), 30)
    np.random.default_rng(0).shuffle(labels)
    five = fewshot.sample_shots(labels, 5, seed=1, num_classes=4)
    assert np.bincount(labels[five], minlength=4).tolist() == [5, 5, 5, 5]
    assert len(set(five.tolist())) == 20
    np.testing.assert_array_equal(five, fewshot.sample_shots(labels, 5, 1, 4))
    assert not np.array_equal(five, fewshot.sample_shots(labels, 5, 2, 4))
    ten = fewshot.sample_shots(labels, 10, seed=1, num_classes=4)
    assert set(five.tolist()) <= set(ten.tolist())  # the 5-shot set is in the 10-shot set


def test_a_class_with_too_few_examples_is_a_clear_error():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="my_task: class 1 has 2 training example.*fewer than 3"):
        fewshot.sample_shots(labels, 3, 0, 3, "my_task")
    with pytest.raises(ValueError, match=r"my_task: class 1 \(dog\) has 2 training example"):
        fewshot.sample_shots(labels, 3, 0, 3, "my_task", ["cat", "dog", "eel"])


def test_separable_features_are_classified_and_chance_is_not():
    train, test = features(200, 8, classes=4), features(100, 8, classes=4, seed=0)
    result = fewshot.evaluate(train, test, 4, shots=(1, 10), seeds=3, l2_reg=1.0)
    assert result["10shot"] > 0.9 and len(result["seeds"]["10shot"]) == 3
    noise = (np.random.default_rng(5).normal(size=(100, 8)).astype(np.float32), test[1])
    assert fewshot.evaluate(train, noise, 4, (10,), 3, 1.0)["10shot"] < 0.5


def test_cached_features_are_computed_once():
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.ones((2, 3), np.float32)}

    first = fewshot.cached({"ckpt": "a", "split": "train"}, compute)
    second = fewshot.cached({"split": "train", "ckpt": "a"}, compute)
    assert len(calls) == 1 and np.array_equal(first["x"], second["x"])
    fewshot.cached({"ckpt": "b", "split": "train"}, compute)
    assert len(calls) == 2


@pytest.mark.slow
def test_features_learned_on_demo_beat_random_ones(tmp_path, demo_data_dir):
    import keras

    from vitbench import tasks
    from vitbench.checkpoints import npz
    from vitbench.models.vit import create_model
    from vitbench.train import finetune
    from vitbench.transfer import plan
    from vitbench.transfer import suite as running

    suite = tasks.load_suite("demo")
    overrides = plan.Overrides(resolution=16, shots=(5,))
    keras.utils.set_random_seed(0)
    model = create_model("vit_mu8", num_classes=4, image_size=16)
    config = finetune.TrainConfig(lr=0.03, steps=100, batch_size=32, micro_batch_size=32,
                                  warmup_steps=5)
    model, _ = finetune.fine_tune(model, overrides.apply(suite.task("demo_count")), "fit",
                                  config, data_dir=demo_data_dir)
    trained = str(npz.save_npz(model, tmp_path / "demo_count.npz"))
    scores = {}
    for ckpt in (trained, "scratch:vit_mu8"):
        probe, = [run for run in plan.plan(suite, ["demo_count"], ckpt, overrides)
                  if run.method == "fewshot"]
        record = running.execute(probe, None, tmp_path, demo_data_dir)
        assert record["metrics"]["test_examples"] == 500
        scores[ckpt] = record["metrics"]["5shot"]
    # measured: 0.87 against 0.47 (chance 0.25)
    assert scores[trained] > scores["scratch:vit_mu8"] + 0.2


@pytest.mark.slow
def test_fewshot_runs_are_recorded_cached_and_on_the_leaderboard(tmp_path, demo_data_dir,
                                                                  capsys):
    from vitbench import cli, records

    flags = ["run", f"--results_dir={tmp_path}", f"--data_dir={demo_data_dir}",
             "--tasks=demo_shape", "--steps=2", "--batch_size=16", "--resolution=16",
             "--shots=1,5"]
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert "[2/2] demo_shape few-shot: test 1shot" in out
    saved = records.read(records.records_path(tmp_path, "demo"))
    probe = saved[-1]
    assert probe["config"]["method"] == "fewshot" and probe["config"]["shots"] == [1, 5]
    assert probe["features"]["computed"] == ["fit", "test"]  # one pass over each split
    assert len(probe["metrics"]["seeds"]["5shot"]) == 3
    assert cli.main(flags + ["--force"]) == 0
    again = records.read(records.records_path(tmp_path, "demo"))[-1]
    assert again["features"]["computed"] == []  # the cached features: no forward pass
    assert again["metrics"] == probe["metrics"]
    board = (tmp_path / "demo_fewshot.md").read_text()
    assert "Shape 5-shot" in board and "5-shot mean" in board
    assert f"{100 * probe['metrics']['5shot']:.2f}" in board
    assert "Shape" in (tmp_path / "demo.md").read_text()  # the fine-tuning board as well


@pytest.mark.slow
def test_probes_read_the_pre_logits_layer_of_a_checkpoint_that_has_one(tmp_path,
                                                                       demo_data_dir):
    from vitbench import tasks
    from vitbench.checkpoints import npz
    from vitbench.models.vit import create_model
    from vitbench.transfer import plan
    from vitbench.transfer import suite as running

    model = create_model("vit_mu8", num_classes=10, image_size=16, representation_size=24)
    ckpt = str(npz.save_npz(model, tmp_path / "with_pre_logits.npz"))
    suite = tasks.load_suite("demo")
    probe, = [run for run in plan.plan(suite, ["demo_color"], ckpt, plan.Overrides(
        resolution=16, shots=(1,))) if run.method == "fewshot"]
    record = running.execute(probe, None, tmp_path, demo_data_dir)
    assert record["features"]["dimensions"] == 24  # the tanh pre-logits, not the 64-wide pool
