"""Pretraining: recipes, losses, the training loop on the demo data, resume, export, transfer,
and data / model parallel training on 2 virtual CPU devices matching one device."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import UNOPTIMISED_BACKEND

from vitbench.train import losses, pretrain, recipes

QUICK = dict(steps=40, batch_size=32, warmup_steps=5, log_every=10, checkpoint_every=10,
             eval_every=20, fewshot=(), eval_split="test[:64]")


def test_recipes_hold_the_papers_table_3():
    i21k = recipes.load("imagenet21k")
    assert (i21k.recipe.model, i21k.recipe.batch_size, i21k.recipe.warmup_steps) == \
        ("vit_b16", 4096, 10_000)
    assert (i21k.recipe.lr, i21k.recipe.lr_decay, i21k.recipe.weight_decay,
            i21k.recipe.dropout, i21k.recipe.epochs) == (1e-3, "linear", 0.03, 0.1, 90)
    assert (i21k.recipe.b1, i21k.recipe.b2, i21k.recipe.resolution) == (0.9, 0.999, 224)
    assert recipes.loss_of(i21k) == "sigmoid" and i21k.task.num_classes == 21843
    assert i21k.task.split("fit") == "full[51200:]" and i21k.task.split("test") == "full[:25600]"
    assert i21k.task.pp("train").startswith("decode|inception_crop(224)|flip_lr")
    imagenet = recipes.load("imagenet2012", "vit_l16")
    assert (imagenet.recipe.model, imagenet.recipe.lr, imagenet.recipe.lr_decay,
            imagenet.recipe.weight_decay, imagenet.recipe.grad_clip_norm,
            imagenet.recipe.epochs) == ("vit_l16", 3e-3, "cosine", 0.3, 1.0, 300)
    assert recipes.loss_of(imagenet) == "softmax"
    # epochs -> steps: 90 epochs of ImageNet-21k's 14,197,122 - 51,200 training images
    assert i21k.recipe.total_steps(14_197_122 - 51_200) == 310_824  # ceil(90 * 14,145,922 / 4096)
    assert recipes.load("imagenet21k", steps=10).recipe.total_steps(None) == 10


def test_any_tfds_dataset_gets_its_classes_and_loss_from_its_labels():
    cifar = recipes.load("cifar100")
    assert cifar.task.num_classes == 100 and recipes.loss_of(cifar) == "softmax"
    assert cifar.recipe.lr == 3e-3 and cifar.task.split("test") == "test"
    other = recipes.load("cifar100", train_split="train[:90%]", eval_split="train[90%:]")
    assert (other.task.split("fit"), other.task.split("test")) == ("train[:90%]", "train[90%:]")
    assert losses.loss_for_labels(tfds.features.ClassLabel(num_classes=3)) == "softmax"


def test_a_dataset_listing_several_classes_per_image_gets_sigmoid(monkeypatch):
    listed = tfds.features.Sequence(tfds.features.ClassLabel(num_classes=5))
    assert losses.loss_for_labels(listed) == "sigmoid"
    monkeypatch.setattr(recipes, "_tfds_label", lambda dataset, data_dir=None: listed)
    multi = recipes.load("some_multilabel_dataset", "vit_mu8")
    assert multi.task.num_classes == 5 and recipes.loss_of(multi) == "sigmoid"
    assert multi.task.label == "multi_hot('label', 5)" and recipes.label_key(multi.task) == "labels"
    assert recipes.loss_of(recipes.load("some_multilabel_dataset", loss="softmax")) == "softmax"


def test_bad_recipe_input_is_a_clear_error():
    with pytest.raises(KeyError, match="no recipe .*demo, imagenet2012, imagenet21k.* TFDS"):
        recipes.load("no_such_dataset_anywhere")
    with pytest.raises(ValueError, match="unknown recipe field.*'momentum'"):
        recipes.load("demo", momentum=0.9)
    with pytest.raises(ValueError, match="must be a multiple of log_every"):
        recipes.load("demo", checkpoint_every=7)
    with pytest.raises(ValueError, match="lr_decay 'step' is not one of"):
        recipes.load("demo", lr_decay="step")
    for field, value, must_be in [
            ("batch_size", 0, "a positive integer"), ("warmup_steps", -5, "an integer >= 0"),
            ("dropout", 1.0, "a number in [0, 1)"), ("lr", "0.01", "a number >= 0"),
            ("steps", 2.5, "an integer >= 0"), ("representation", "yes", "true or false"),
            ("fewshot_shots", (0,), "a list of positive integers")]:
        message = f"{field} is {value!r}; it must be {must_be}"
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            recipes.load("demo", **{field: value})


def test_an_unusable_results_dir_or_workdir_fails_before_any_work(tmp_path, monkeypatch):
    """Nothing trains (not even the data is prepared) when a result could not be written."""
    from vitbench.data import sources

    def fail(*args, **kwargs):
        raise AssertionError("got as far as the data")

    monkeypatch.setattr(sources, "check_ready", fail)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    setup = recipes.load("demo", **QUICK)
    with pytest.raises(ValueError, match=f"the results dir {a_file} cannot be used: Not a "
                                         f"directory \\({a_file}/pretrain\\)"):
        pretrain.pretrain(setup, tmp_path / "work", results_dir=a_file, verbose=0)
    with pytest.raises(ValueError, match=f"the workdir {a_file} cannot be used: File exists"):
        pretrain.pretrain(setup, a_file, results_dir=tmp_path, verbose=0)


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="micro-batch size 3 must divide the batch size 32"):
        pretrain.pretrain(recipes.load("demo", **QUICK), tmp_path / "work",
                          results_dir=tmp_path, micro_batch_size=3, verbose=0)
    assert not (tmp_path / "work").exists()


def test_per_model_overrides(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text(textwrap.dedent("""
        [data]
        dataset = "vitbench_demo"
        num_classes = 4
        splits = { train = "upstream", test = "test" }
        label = "label_from('count')"
        [recipe]
        lr = 0.001
        [model.vit_l16]
        lr = 0.0004
        epochs = 30
        """))
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    assert recipes.load("mine", "vit_b16").recipe.lr == 0.001
    large = recipes.load("mine", "vit_l16")
    assert (large.recipe.lr, large.recipe.epochs) == (0.0004, 30)
    assert recipes.load("mine", "vit_l16", lr=0.1).recipe.lr == 0.1  # flags win


def test_sigmoid_cross_entropy_sums_over_classes():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], np.float32)
    multi_hot = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], np.float32)
    p = 1 / (1 + np.exp(-logits))
    expected = -(multi_hot * np.log(p) + (1 - multi_hot) * np.log(1 - p)).sum(1).mean()
    loss = losses.SigmoidCrossEntropy()
    np.testing.assert_allclose(float(loss(multi_hot, logits)), expected, rtol=1e-5)
    one_hot_ids = np.array([0, 1])  # integer labels are one-hot encoded
    np.testing.assert_allclose(float(loss(one_hot_ids, logits)),
                               float(loss(np.eye(3, dtype=np.float32)[one_hot_ids], logits)),
                               rtol=1e-6)
    top1 = losses.top1_accuracy
    np.testing.assert_array_equal(np.asarray(top1(np.array([0, 2]), logits)), [1, 0])
    np.testing.assert_array_equal(np.asarray(top1(multi_hot, logits)), [1, 1])


def test_sigmoid_pretraining_starts_the_head_bias_at_minus_ten():
    """As big_vision's ImageNet-21k config: the first sigmoid loss is small, not ~15,000."""
    import keras

    from vitbench.train import losses

    i21k = recipes.load("imagenet21k", "vit_mu8", resolution=32)
    assert i21k.recipe.head_bias == -10 and recipes.load("demo").recipe.head_bias == 0
    labels = np.zeros((2, 21843), "float32")
    labels[:, :3] = 1
    images = np.zeros((2, 32, 32, 3), "float32")
    first = {}
    for bias in (None, 0.0):
        setup = recipes.load("imagenet21k", "vit_mu8", resolution=32, head_bias=bias)
        model = pretrain.build_model(setup)
        first[bias] = float(losses.get_loss("sigmoid")(labels, model(images)))
        assert np.all(keras.ops.convert_to_numpy(model.get_layer("head").bias)
                      == setup.recipe.head_bias)
    assert first[None] < 40 and first[0.0] > 15_000


def test_missing_imagenet21k_says_which_file_goes_where(tmp_path):
    from vitbench.data.sources import ManualDownloadError

    with pytest.raises(ManualDownloadError, match=r"fall11_whole\.tar.*|downloads/manual") as info:
        pretrain.pretrain(recipes.load("imagenet21k"), tmp_path / "work",
                          results_dir=tmp_path, data_dir=str(tmp_path / "tfds"), verbose=0)
    assert "fall11_whole.tar" in str(info.value)
    assert str(tmp_path / "tfds" / "downloads" / "manual") in str(info.value)


def _metrics(workdir):
    lines = [json.loads(line) for line in (pathlib.Path(workdir) / pretrain.METRICS)
             .read_text().splitlines()]
    return [line for line in lines if "loss" in line], [line for line in lines if "eval" in line]


@pytest.mark.slow
def test_demo_pretraining_lowers_the_loss_and_transfers(tmp_path, demo_data_dir):
    from vitbench import tasks
    from vitbench.checkpoints.loader import load_model
    from vitbench.transfer import plan
    from vitbench.transfer import suite as running

    workdir, messages = tmp_path / "work", []
    setup = recipes.load("demo", **{**QUICK, "steps": 200, "batch_size": 64, "log_every": 25,
                                    "checkpoint_every": 100, "eval_every": 200,
                                    "fewshot": ("demo/demo_color",)})
    record = pretrain.pretrain(setup, workdir, results_dir=tmp_path, data_dir=demo_data_dir,
                               verbose=0, log=messages.append)
    train, evals = _metrics(workdir)
    assert [line["step"] for line in train] == [25, 50, 75, 100, 125, 150, 175, 200]
    assert train[-1]["loss"] < 0.7 * train[0]["loss"]  # 48 classes: ln 48 = 3.87 at the start
    assert train[-1]["accuracy"] > 0.15
    # Each line logs the rate its last update used (update k - 1 brought the weights to k).
    schedule = pretrain.make_schedule(setup.recipe, 200)
    assert [line["lr"] for line in train] == pytest.approx(
        [float(schedule(line["step"] - 1)) for line in train])
    assert 0 < train[-1]["lr"] < train[-2]["lr"]
    assert [line["step"] for line in evals] == [200]
    assert evals[-1]["eval"]["held_out"]["examples"] == 64
    assert evals[-1]["eval"]["held_out"]["accuracy"] > 0.15  # chance: 1/48
    assert evals[-1]["eval"]["fewshot"]["demo_color/10shot"] > 0.5  # chance: 1/4
    assert record["metrics"] == evals[-1]["eval"]
    assert any("step 200: held-out top-1" in message for message in messages)
    assert list((workdir / "tensorboard" / "train").glob("events.out.tfevents.*"))
    # The record, and a second invocation that does nothing.
    stored = [json.loads(line) for line in pretrain.records_path(tmp_path).read_text()
              .splitlines()]
    assert len(stored) == 1 and stored[0]["config"]["steps"] == 200
    again = pretrain.pretrain(setup, workdir, results_dir=tmp_path, data_dir=demo_data_dir,
                              verbose=0, log=messages.append)
    assert again["config_hash"] == record["config_hash"] and "nothing to do" in messages[-1]
    assert len(pretrain.records_path(tmp_path).read_text().splitlines()) == 1
    # The exported official-layout weights equal the trained model's.
    model = load_model(str(workdir))
    assert model.config.representation_size == 64 and model.num_classes == 48
    import keras

    from vitbench.train import finetune

    trained = keras.saving.load_model(finetune.checkpoint_path(workdir), compile=False)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(images),
                               trained.predict_on_batch(images), atol=1e-5)
    # The runner transfers it, identified by the exported file's content.
    suite = tasks.load_suite("demo")
    done = running.run_suite(suite, ["demo_shape"], str(workdir), plan.Overrides(steps=5),
                            tmp_path, data_dir=demo_data_dir, verbose=0, log=lambda _: None,
                            fewshot=False)
    assert [r["checkpoint"]["sha256"] for r in done] == [record["checkpoint"]["sha256"]]
    assert done[0]["config"]["ckpt_sha256"] == record["checkpoint"]["sha256"]


@pytest.mark.slow
def test_another_config_in_the_same_workdir_is_refused(tmp_path, demo_data_dir):
    workdir = tmp_path / "work"
    pretrain.pretrain(recipes.load("demo", **{**QUICK, "steps": 10}), workdir,
                      results_dir=tmp_path, data_dir=demo_data_dir, verbose=0, log=print)
    with pytest.raises(ValueError, match=r"other settings \(recipe.lr: 0.003 there, 0.002 now"):
        pretrain.pretrain(recipes.load("demo", **{**QUICK, "steps": 10, "lr": 0.002}), workdir,
                          results_dir=tmp_path, data_dir=demo_data_dir, verbose=0, log=print)
    # What is measured along the way may change: the same run, finished.
    messages = []
    pretrain.pretrain(recipes.load("demo", **{**QUICK, "steps": 10, "eval_every": 10,
                                              "fewshot": ("demo/demo_color",)}), workdir,
                      results_dir=tmp_path, data_dir=demo_data_dir, verbose=0,
                      log=messages.append)
    assert "nothing to do" in messages[-1]


@pytest.mark.slow
def test_a_finished_workdir_reports_its_own_weights(tmp_path, demo_data_dir, capsys):
    """The same settings trained in two workdirs: each names its own final weights, also
    where its record is in another results dir."""
    from vitbench import cli

    setup = recipes.load("demo", **{**QUICK, "steps": 10})
    first, second = tmp_path / "first", tmp_path / "second"
    for workdir in (first, second):
        pretrain.pretrain(setup, workdir, results_dir=tmp_path, data_dir=demo_data_dir,
                          verbose=0, log=print)
    again = pretrain.pretrain(setup, first, results_dir=tmp_path, data_dir=demo_data_dir,
                              verbose=0, log=print)
    assert again["checkpoint"]["path"] == str(first / pretrain.FINAL)
    capsys.readouterr()
    flags = [f"--{name}={value}" for name, value in QUICK.items()
             if name not in ("steps", "fewshot")]  # what is evaluated may change when finished
    assert cli.main(["pretrain", "--dataset=demo", "--steps=10", *flags,
                     f"--workdir={first}", f"--results_dir={tmp_path / 'elsewhere'}",
                     f"--data_dir={demo_data_dir}"]) == 0
    assert f"final weights: {first / pretrain.FINAL} " in capsys.readouterr().out


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, demo_data_dir, monkeypatch):
    """Killed in the evaluation after a save, then in the final evaluation: every evaluation
    is made once, each step has one metrics line, and the weights are the unbroken run's."""
    # dropout: its random state resumes too
    setup = recipes.load("demo", **{**QUICK, "steps": 20, "log_every": 5, "checkpoint_every": 10,
                                    "eval_every": 10, "dropout": 0.1})
    whole = pretrain.pretrain(setup, tmp_path / "whole", results_dir=tmp_path / "a",
                              data_dir=demo_data_dir, verbose=0, log=lambda _: None)
    original_evaluate = pretrain._Trainer.evaluate

    def killed_in_the_evaluation_at(killed_step):
        def evaluate(self, model, step):
            if step == killed_step:
                raise _Killed()
            return original_evaluate(self, model, step)
        return evaluate

    monkeypatch.setattr(pretrain._Trainer, "evaluate", killed_in_the_evaluation_at(10))
    with pytest.raises(_Killed):
        pretrain.pretrain(setup, tmp_path / "broken", results_dir=tmp_path / "b",
                          data_dir=demo_data_dir, verbose=0, log=lambda _: None)
    assert json.loads((tmp_path / "broken" / "state.json").read_text())["step"] == 10
    with open(tmp_path / "broken" / pretrain.METRICS, "a") as f:
        f.write('{"loss": 9.0, "step": 15}\n')  # written after the last save: redone
        f.write('{"step": 20, "lo')  # a line cut short by the kill
    with pytest.raises(ValueError, match="pass --resume"):
        pretrain.pretrain(setup, tmp_path / "broken", results_dir=tmp_path / "b",
                          data_dir=demo_data_dir, verbose=0, resume=False)
    # Resumed from step 10, then stopped again after the last save, in the final evaluation.
    messages = []
    monkeypatch.setattr(pretrain._Trainer, "evaluate", killed_in_the_evaluation_at(20))
    with pytest.raises(_Killed):
        pretrain.pretrain(setup, tmp_path / "broken", results_dir=tmp_path / "b",
                          data_dir=demo_data_dir, verbose=0, log=messages.append)
    assert "resuming at step 10" in messages[0]
    monkeypatch.setattr(pretrain._Trainer, "evaluate", original_evaluate)
    record = pretrain.pretrain(setup, tmp_path / "broken", results_dir=tmp_path / "b",
                               data_dir=demo_data_dir, verbose=0, log=lambda _: None)
    assert record["train"]["resumed_from_step"] == 20
    for key in "train_loss", "train_accuracy":  # those of the last save, not null
        assert record["train"][key] == pytest.approx(whole["train"][key], rel=1e-6), key
    with np.load(tmp_path / "whole" / "final.npz") as whole_arrays, \
            np.load(tmp_path / "broken" / "final.npz") as resumed:
        assert sorted(whole_arrays.files) == sorted(resumed.files)
        for key in whole_arrays.files:
            np.testing.assert_array_equal(whole_arrays[key], resumed[key], err_msg=key)
    # One metrics line per step and one per evaluation, as the unbroken run wrote them.
    (whole_train, whole_evals), (train, evals) = (_metrics(tmp_path / name)
                                                  for name in ("whole", "broken"))
    assert [line["step"] for line in train] == [5, 10, 15, 20]
    assert [line["loss"] for line in train] == pytest.approx(
        [line["loss"] for line in whole_train], rel=1e-6)
    assert [line["step"] for line in evals] == [10, 20]
    assert [line["eval"] for line in evals] == [line["eval"] for line in whole_evals]


@pytest.mark.slow
def test_gradient_accumulation_gives_the_same_update(tmp_path, demo_data_dir):
    setup = recipes.load("demo", **{**QUICK, "steps": 3, "log_every": 1, "checkpoint_every": 1,
                                    "eval_every": 3})
    for micro, name in [(None, "full"), (8, "split")]:
        pretrain.pretrain(setup, tmp_path / name, results_dir=tmp_path, data_dir=demo_data_dir,
                          micro_batch_size=micro, verbose=0, log=lambda _: None)
    with np.load(tmp_path / "full" / "final.npz") as full, \
            np.load(tmp_path / "split" / "final.npz") as split:
        for key in full.files:
            np.testing.assert_allclose(full[key], split[key], atol=2e-5, err_msg=key)


def test_a_tfds_dataset_without_a_recipe_is_looked_up_in_the_data_dir(monkeypatch):
    import tensorflow_datasets as tfds

    asked = []

    def builder(name, data_dir=None):
        asked.append((name, data_dir))
        raise tfds.core.registered.DatasetNotFoundError(name)

    monkeypatch.setattr(tfds, "builder", builder)
    with pytest.raises(KeyError, match="unknown pretraining dataset 'mycolors'"):
        recipes.load("mycolors", data_dir="/data/tfds")
    assert asked == [("mycolors", "/data/tfds")]


@pytest.mark.slow
def test_multi_label_data_trains_with_sigmoid_loss(tmp_path, monkeypatch):
    from conftest import mock_tfds

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "real.toml").write_text(textwrap.dedent("""
        [data]
        dataset = "imagenet2012_real"
        num_classes = 1000
        splits = { train = "validation", test = "validation" }
        label = "multi_hot('real_label', 1000)"
        """))
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path / "recipes")
    setup = recipes.load("real", "vit_mu8", resolution=32,
                         **{**QUICK, "steps": 2, "batch_size": 4, "log_every": 1,
                            "checkpoint_every": 1, "eval_every": 2, "eval_split": ""})
    assert recipes.loss_of(setup) == "sigmoid"
    with mock_tfds(num_examples=8):
        record = pretrain.pretrain(setup, tmp_path / "work", results_dir=tmp_path, verbose=0,
                                   log=lambda _: None)
    assert record["config"]["loss"] == "sigmoid"
    assert np.isfinite(record["train"]["train_loss"]) and record["train"]["train_loss"] > 0
    assert record["metrics"]["held_out"]["examples"] == 8


PARALLEL_SCRIPT = """
import json, sys
from vitbench.train import pretrain, recipes
import keras
args = json.loads(sys.argv[1])
print(json.dumps({"devices": len(keras.distribution.list_devices())}))
for name, model_parallel in args["runs"]:
    pretrain.pretrain(recipes.load("demo", **args["recipe"]), args["root"] + "/" + name,
                      results_dir=args["root"], data_dir=args["data_dir"],
                      model_parallel=model_parallel, verbose=0, log=print)
"""


@pytest.mark.slow
def test_two_devices_data_and_model_parallel_match_one_device(tmp_path, demo_data_dir):
    recipe = {**QUICK, "steps": 20, "batch_size": 16, "log_every": 5, "checkpoint_every": 10,
              "eval_every": 20, "dropout": 0.1}
    args = {"recipe": recipe, "root": str(tmp_path), "data_dir": demo_data_dir,
            "runs": [["data_parallel", 1], ["model_parallel", 2]]}
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{UNOPTIMISED_BACKEND} --xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", PARALLEL_SCRIPT, json.dumps(args)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '{"devices": 2}' in result.stdout
    assert "DataParallel over 2 devices (mesh batch=2)" in result.stdout
    assert "ModelParallel over 2 devices (mesh batch=1 x model=2)" in result.stdout
    pretrain.pretrain(recipes.load("demo", **recipe), tmp_path / "one", results_dir=tmp_path,
                      data_dir=demo_data_dir, verbose=0, log=lambda _: None)
    one, _ = _metrics(tmp_path / "one")
    for name in ("data_parallel", "model_parallel"):
        many, _ = _metrics(tmp_path / name)
        np.testing.assert_allclose([line["loss"] for line in many],
                                   [line["loss"] for line in one], rtol=1e-4, err_msg=name)
        with np.load(tmp_path / "one" / "final.npz") as a, \
                np.load(tmp_path / name / "final.npz") as b:
            # Not the attention's key biases: their true gradient is 0 (a key bias adds the
            # same score to every key), so Adam (optax's, as big_vision's) turns each
            # device layout's rounding noise into steps of about 1% of the rate.
            for key in [key for key in a.files if not key.endswith("key/bias")]:
                np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=f"{name} {key}")


def test_pretrain_command_errors_name_the_fix(tmp_path, capsys):
    from vitbench import cli

    assert cli.main(["pretrain", "--dataset=no_such_dataset_anywhere",
                     f"--results_dir={tmp_path}"]) == 1
    assert "no recipe (demo, imagenet2012, imagenet21k)" in capsys.readouterr().err
    assert cli.main(["pretrain", "--model_parallel=3", f"--results_dir={tmp_path}"]) == 1
    assert "--model_parallel 3 does not divide the 1 devices" in capsys.readouterr().err
    assert cli.main(["pretrain", "--dataset=imagenet21k", f"--data_dir={tmp_path / 'tfds'}",
                     f"--results_dir={tmp_path}"]) == 1
    assert "fall11_whole.tar" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_command_pretrains_transfers_and_compares(tmp_path, demo_data_dir, capsys):
    from vitbench import cli

    flags = [f"--results_dir={tmp_path}", f"--data_dir={demo_data_dir}", "--pretrain_steps=30",
             "--steps=10", "--tasks=demo_color", "--shots=1,5"]
    assert cli.main(["demo"] + flags) == 0
    out = capsys.readouterr().out
    workdir = tmp_path / "pretrain" / "demo_vit_mu8_steps30"
    assert (workdir / "final.npz").is_file()
    table = out[out.index("Test accuracy, pretrained vs from scratch"):]
    for row in ("demo_color | fine-tuned", "demo_color | 1-shot", "demo_color | 5-shot"):
        assert row in table.replace("  ", " ").replace("  ", " ")
    assert "95% interval" in table and "exact McNemar" in table  # one run a side
    assert "paired-seed t" in table  # few-shot draws, compared draw by draw
    comparison = tmp_path / "compare" / "demo"
    assert len(list(comparison.glob("*__vs__scratch_vit_mu8*.md"))) == 1
    board = (tmp_path / "demo.md").read_text()
    assert str(workdir) in board and "scratch:vit_mu8" in board
    assert str(workdir) in (tmp_path / "demo_fewshot.md").read_text()
    # The hint it prints works: inspect draws the pretrained demo checkpoint.
    assert f"vitbench inspect --ckpt {workdir}\n" in out
    assert cli.main(["inspect", f"--ckpt={workdir}", f"--data_dir={demo_data_dir}",
                     f"--results_dir={tmp_path}", "--num_images=4", "--rollout_images=2"]) == 0
    figures = tmp_path / "figures" / "demo_vit_mu8_steps30"
    assert all((figures / name).stat().st_size > 0 for name in (
        "embedding_filters.png", "position_similarity.png", "attention_distance.png",
        "attention_rollout.png", "index.md"))
    assert cli.main(["demo"] + flags) == 0  # everything is recorded: nothing runs again
    again = capsys.readouterr().out
    assert "nothing to do" in again and again.count("skipped") == 4


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_data_parallel_as_two_hosts(tmp_path, demo_data_dir):
    """Two processes on 127.0.0.1 joined with --multihost (jax.distributed): each reads its
    shard and feeds half of every batch; the first writes checkpoints, metrics and the record."""
    workdir, port = tmp_path / "work", _free_port()
    command = [sys.executable, "-c", "from vitbench.cli import run; run()", "pretrain",
               "--multihost",
               f"--workdir={workdir}", f"--results_dir={tmp_path}", f"--data_dir={demo_data_dir}",
               "--steps=10", "--batch_size=16", "--warmup_steps=2", "--log_every=5",
               "--checkpoint_every=5",
               "--eval_every=10", "--eval_split=test[:64]"]
    processes = []
    for index in range(2):
        env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": UNOPTIMISED_BACKEND,
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
               "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    assert "DataParallel over 2 devices (mesh batch=2)" in outputs[0][0]
    assert "final weights:" in outputs[0][0] and "final weights:" not in outputs[1][0]
    train, evals = _metrics(workdir)
    assert [line["step"] for line in train] == [5, 10]
    assert [line["step"] for line in evals] == [10]
    assert train[-1]["loss"] < train[0]["loss"]
    [record] = [json.loads(line) for line in pretrain.records_path(tmp_path).read_text()
                .splitlines()]
    assert record["processes"] == 2 and record["metrics"]["held_out"]["examples"] == 64
    assert (workdir / "final.npz").is_file()
