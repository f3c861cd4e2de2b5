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
    predicted = fewshot.ridge_predictions(x, y, test_x, 3, l2)
    assert np.mean(predicted == test_y) == pytest.approx(expected)


def test_sampling_takes_exactly_k_per_class_reproducibly_and_nested():
    labels = np.repeat(np.arange(4), 30)
    np.random.default_rng(0).shuffle(labels)
    five, short = fewshot.sample_shots(labels, 5, seed=1, num_classes=4)
    assert np.bincount(labels[five], minlength=4).tolist() == [5, 5, 5, 5] and short == {}
    assert len(set(five.tolist())) == 20
    np.testing.assert_array_equal(five, fewshot.sample_shots(labels, 5, 1, 4)[0])
    assert not np.array_equal(five, fewshot.sample_shots(labels, 5, 2, 4)[0])
    ten, _ = fewshot.sample_shots(labels, 10, seed=1, num_classes=4)
    assert set(five.tolist()) <= set(ten.tolist())  # the 5-shot set is in the 10-shot set


def test_a_class_with_too_few_examples_gives_all_it_has_or_is_refused_when_strict():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    chosen, short = fewshot.sample_shots(labels, 3, 0, 3, "my_task")
    assert np.bincount(labels[chosen]).tolist() == [3, 2, 3] and short == {1: 2}
    with pytest.raises(fewshot.TooFewShotsError,
                       match="my_task: class 1 has 2 training example.*fewer than 3"):
        fewshot.sample_shots(labels, 3, 0, 3, "my_task", strict=True)
    with pytest.raises(ValueError, match=r"my_task: class 1 \(dog\) has 2 training example"):
        fewshot.sample_shots(labels, 3, 0, 3, "my_task", ["cat", "dog", "eel"], strict=True)


def test_the_shortfall_is_reported_per_shot_count_by_class_name():
    train, test = features(40, 8, classes=4), features(20, 8, classes=4, seed=1)
    keep = (train[1] != 2) | (np.arange(40) < 12)  # class 2 keeps 3 of its 10 examples
    train = (train[0][keep], train[1][keep])
    result = fewshot.evaluate(train, test, 4, (1, 5, 10), 2, 1.0,
                              class_names=["a", "b", "c", "d"])
    assert result["short"] == {"5shot": {"c": 3}, "10shot": {"c": 3}}
    assert "short" not in fewshot.evaluate(train, test, 4, (1, 3), 2, 1.0)


def _tf32(values):
    """float32 rounded to TF32's 10 mantissa bits, as an accelerator's matmul inputs are."""
    bits = np.asarray(values, np.float32).view(np.uint32)
    return ((bits + 0x1000) & 0xFFFFE000).view(np.float32)


def _ridge_predictions_with_tf32_matmuls(x, y, test_x, classes, l2):
    """The ridge classifier as a float32 solver on an accelerator computes it by default."""
    mean, std = x.mean(0), x.std(0) + fewshot.WHITENING_EPSILON

    def design(z):
        return np.concatenate([(z - mean) / std, np.full((len(z), 1), 100.0)], 1).astype(
            np.float32)

    def matmul(a, b):
        return _tf32(a) @ _tf32(b)

    train = design(x)
    gram = matmul(train, train.T) + l2 * np.eye(len(train), dtype=np.float32)
    weights = matmul(train.T, np.linalg.solve(gram, 2.0 * np.eye(classes)[y] - 1.0))
    return np.argmax(matmul(design(test_x), weights), -1)


def test_predictions_do_not_depend_on_the_devices_matmul_precision():
    """One shot of 10 classes in 768 dimensions, classes close together: a solver whose
    matmuls round to TF32 changes several % of the predictions; ours gives float64's."""
    import jax

    rng = np.random.default_rng(0)
    centres = 0.2 * rng.normal(size=(10, 768))
    y, test_y = np.arange(10), np.arange(2000) % 10
    x = (centres[y] + rng.normal(size=(10, 768))).astype(np.float32)
    test_x = (centres[test_y] + rng.normal(size=(2000, 768))).astype(np.float32)

    def predictions():
        weights, mean, std = fewshot.ridge_weights(x, y, 10, 1024.0)
        return np.argmax(fewshot._whiten_with_bias(test_x, mean, std) @ weights, -1)

    whitened = (x.astype(np.float64) - x.mean(0, dtype=np.float64)) / (
        x.astype(np.float64).std(0) + fewshot.WHITENING_EPSILON)
    reference = Ridge(alpha=1024.0, fit_intercept=False, solver="cholesky").fit(
        np.concatenate([whitened, np.full((10, 1), 100.0)], 1), 2.0 * np.eye(10)[y] - 1.0)
    test_design = np.concatenate([(test_x - x.mean(0, dtype=np.float64)) / (
        x.astype(np.float64).std(0) + fewshot.WHITENING_EPSILON), np.full((2000, 1), 100.0)], 1)
    expected = np.argmax(reference.predict(test_design), -1)
    np.testing.assert_array_equal(predictions(), expected)
    with jax.default_matmul_precision("bfloat16"):  # the lowest JAX offers
        np.testing.assert_array_equal(predictions(), expected)
    flipped = np.mean(_ridge_predictions_with_tf32_matmuls(x, y, test_x, 10, 1024.0) != expected)
    assert flipped > 0.01  # the case is one where the precision of the solve matters


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
    # Every shot count and seed keeps its per-item predictions, which give its accuracy.
    from vitbench import tasks
    from vitbench.evaluate import outcomes, prediction

    predicted = outcomes.read(tmp_path, probe["outcomes"])
    assert sorted(predicted) == [f"{k}shot/seed{s}" for k in (1, 5) for s in range(3)]
    task = tasks.load_suite("demo").fewshot_tasks(["demo_shape"])[0]
    labels = np.concatenate([batch["label"] for _, batch in prediction.predict_split(
        lambda images: np.zeros((len(images), 1)), task, "test", 16, "float32",
        demo_data_dir)])
    assert probe["outcomes"]["labels_sha256"] == outcomes.labels_sha256(labels)
    for k in (1, 5):
        assert [np.mean(predicted[f"{k}shot/seed{s}"] == labels) for s in range(3)] == \
            pytest.approx(probe["metrics"]["seeds"][f"{k}shot"])
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
    # The VPT protocol's probes read the final LayerNorm's class token, as VPT's code does.
    linear, = plan.plan(suite, ["demo_color"], ckpt, plan.Overrides(resolution=16,
                                                                    method="linear"))
    record = running.execute(linear, None, tmp_path, demo_data_dir)
    assert record["features"]["dimensions"] == 64 and record["status"] == "finished"


@pytest.mark.slow
def test_the_whole_fewshot_suite_runs_with_classes_short_of_k(tmp_path, capsys, monkeypatch):
    """Mocked data has a few images of each class: every probe runs to the end, using what a
    short class has, and records (and shows) which classes were short at which k."""
    from conftest import mock_tfds

    from vitbench import cli, records

    monkeypatch.setenv("VITBENCH_CACHE", str(tmp_path / "cache"))
    flags = ["run", "--suite=fewshot", "--ckpt=scratch:vit_mu8", "--resolution=16",
             "--batch_size=32", "--shots=1,5", f"--results_dir={tmp_path}"]
    with mock_tfds(num_examples=40):
        assert cli.main(flags) == 0
    saved = records.read(records.records_path(tmp_path, "fewshot"))
    assert len(saved) == 6 and {r["status"] for r in saved} == {"finished"}  # no imagenet
    cars = next(r for r in saved if r["config"]["task"] == "cars196")
    short = cars["metrics"]["short"]["5shot"]  # 196 classes, 40 images: every class is short
    assert len(short) == 196 and all(0 <= used < 5 for used in short.values())
    assert cars["config"]["solver"] == "ridge_float64_host"
    assert cars["precision"] == "float32"
    board = (tmp_path / "fewshot.md").read_text()
    assert "†" in board and "classes short of k †" in board


def _folder_task(root, name, broken=False):
    """A folder task: classes a, b, c with 4 training and 2 test images each; `broken`
    replaces one training image with bytes that do not decode."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for split, count in [("train", 4), ("test", 2)]:
        for label in "abc":
            folder = root / name / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    if broken:
        (root / name / "train" / "b" / "0.png").write_bytes(b"not a png")
    return (f'[[task]]\nname = "{name}"\ngroup = "custom"\nsource = "folder"\n'
            f'dataset = "{root / name}"\nnum_classes = 3\n'
            'splits = { train = "train", test = "test" }\n')


@pytest.mark.slow
def test_a_failing_probe_does_not_stop_the_others_and_is_retried(tmp_path, capsys,
                                                                  monkeypatch):
    from vitbench import cli, records
    from vitbench.transfer import suite as running

    monkeypatch.setenv("VITBENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "mine.toml"
    suite.write_text('name = "mine"\n[protocol]\nmethod = "fewshot"\nresolution = 8\n'
                     'batch_size = 4\nshots = [1, 2]\nseeds = 2\ntest_split = "test"\n'
                     + _folder_task(tmp_path, "first", broken=True)
                     + _folder_task(tmp_path, "second"))
    flags = ["run", f"--suite={suite}", "--ckpt=scratch:vit_mu8", f"--results_dir={tmp_path}"]
    assert cli.main(flags) == 1
    err = capsys.readouterr().err
    assert "1 of the suite's runs failed" in err and "first few-shot" in err
    assert [r["config"]["task"] for r in records.read(
        records.records_path(tmp_path, "mine"))] == ["second"]
    noted, = records.read(running.failures_path(tmp_path, "mine"))
    assert noted["config"]["task"] == "first" and "Error" in noted["error"]
    assert (tmp_path / "mine_fewshot.md").exists() or (tmp_path / "mine.md").exists()
    _folder_task(tmp_path / "fixed", "first")  # a good copy of the images, put in place
    import shutil

    shutil.copy(tmp_path / "fixed" / "first" / "train" / "b" / "0.png",
                tmp_path / "first" / "train" / "b" / "0.png")
    assert cli.main(flags) == 0  # the failed probe runs again, the finished one is skipped
    out = capsys.readouterr().out
    assert "second few-shot: done" in out and "1 runs finished" in out


@pytest.mark.slow
def test_strict_shots_refuses_a_class_short_of_k(tmp_path, capsys, monkeypatch):
    from vitbench import cli

    monkeypatch.setenv("VITBENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "mine.toml"
    suite.write_text('name = "mine"\n[protocol]\nmethod = "fewshot"\nresolution = 8\n'
                     'batch_size = 4\nshots = [5]\nseeds = 1\ntest_split = "test"\n'
                     + _folder_task(tmp_path, "few"))
    flags = ["run", f"--suite={suite}", "--ckpt=scratch:vit_mu8", f"--results_dir={tmp_path}"]
    assert cli.main(flags + ["--strict_shots"]) == 1
    assert "class 0 (a) has 4 training example(s), fewer than 5" in capsys.readouterr().err
    assert cli.main(flags) == 0
