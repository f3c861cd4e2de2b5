"""Fine-tuning: schedule, exact gradient accumulation, learning on demo data, resume."""

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import TINY, mock_tfds

from vitbench import tasks
from vitbench.evaluate import classification
from vitbench.models.vit import create_model
from vitbench.train import execution, finetune
from vitbench.train.schedules import WarmupCosine


def test_schedule_warms_up_then_decays_to_zero():
    schedule = WarmupCosine(0.1, total_steps=10, warmup_steps=2)
    lrs = [float(schedule(step)) for step in range(11)]
    assert lrs[0] == 0 and lrs[1] == pytest.approx(0.05) and lrs[2] == pytest.approx(0.1)
    assert lrs[6] == pytest.approx(0.05, abs=1e-6)  # half way through the decay
    assert lrs[10] == pytest.approx(0, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_schedule_counts_updates_not_micro_steps():
    full, split = WarmupCosine(0.1, 10, 2), WarmupCosine(0.1, 10, 2, accumulation=4)
    for update in range(10):
        for micro in range(4):
            assert float(split(update * 4 + micro)) == pytest.approx(float(full(update)))


def demo_task(resolution=16):
    task = tasks.load_suite("demo").task("demo_color")
    return dataclasses.replace(task, protocol=dataclasses.replace(task.protocol,
                                                                  resolution=resolution))


def tiny_model(seed=0, classes=4, **options):
    keras.utils.set_random_seed(seed)
    return create_model(TINY, num_classes=classes, image_size=16, **options)


@pytest.mark.slow
def test_gradient_accumulation_equals_the_full_batch():
    # With Polyak averaging: the average also moves once per update, not once per pass.
    task = demo_task()
    results = []
    with mock_tfds(num_examples=16):
        for micro in (8, 4, 2):
            model = tiny_model()
            config = finetune.TrainConfig(lr=0.1, steps=3, batch_size=8, micro_batch_size=micro,
                                          warmup_steps=1, polyak=0.5)
            model, _ = finetune.fine_tune(model, task, "fit", config)
            results.append([np.asarray(w) for w in model.get_weights()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    initial = [np.asarray(w) for w in tiny_model().get_weights()]
    moved = max(np.abs(a - b).max() for a, b in zip(results[0], initial))
    assert moved > 1e-3  # training really changed the weights


def test_batch_must_split_into_micro_batches():
    with pytest.raises(ValueError, match="not a multiple of the micro-batch size 3"):
        finetune.TrainConfig(lr=0.1, steps=1, batch_size=8, micro_batch_size=3)


class Killed(Exception):
    pass


@pytest.mark.slow
def test_polyak_averaging_evaluates_the_moving_average_of_the_weights():
    # Keras starts the average at the weights after the first update; with a decay of ~1 it
    # stays there, so two averaged steps give the weights of one plain step.
    task = demo_task()

    def train(steps, polyak):
        config = finetune.TrainConfig(lr=0.1, steps=steps, batch_size=4, micro_batch_size=4,
                                      polyak=polyak)
        model, _ = finetune.fine_tune(tiny_model(), task, "fit", config)
        return [np.asarray(w) for w in model.get_weights()]

    with mock_tfds(num_examples=8):
        one_step, two_steps, averaged = train(1, 0.0), train(2, 0.0), train(2, 1 - 1e-7)
    moved = max(np.abs(a - b).max() for a, b in zip(two_steps, one_step))
    assert moved > 1e-3
    for a, b in zip(averaged, one_step):
        np.testing.assert_allclose(a, b, atol=1e-5 * moved)


# With Polyak averaging, so that the average's state is also saved and restored. The VPT
# protocol's update (AdamW, biases and LayerNorms not decayed, the rate stepped per epoch)
# must come back from the save as it was.
# A parameter-efficient model (LoRA, frozen elsewhere) must come back with the same
# trainable variables and their optimizer state.
VPT_CONFIG = finetune.TrainConfig(lr=0.01, steps=4, batch_size=4, micro_batch_size=2,
                                  polyak=0.5, optimizer="adamw", weight_decay=0.1,
                                  grad_clip_norm=None, steps_per_epoch=2)
RESUMED_CONFIGS = {
    "vit": (finetune.TrainConfig(lr=0.05, steps=4, batch_size=4, micro_batch_size=2,
                                 warmup_steps=1, polyak=0.5), {}),
    "vpt": (VPT_CONFIG, {}),
    "vpt_lora": (VPT_CONFIG, {"trainable": "lora", "lora_rank": 2})}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", list(RESUMED_CONFIGS))
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch, protocol):
    task = demo_task()
    config, options = RESUMED_CONFIGS[protocol]
    with mock_tfds(num_examples=12):
        straight, summary = finetune.fine_tune(tiny_model(**options), task, "fit", config)
        assert summary["resumed_from_step"] == 0 and summary["train_loss"] > 0

        save = finetune.save_state

        def save_then_die(*args):
            save(*args)
            raise Killed  # as if the process were killed right after the first checkpoint

        monkeypatch.setattr(finetune, "save_state", save_then_die)
        with pytest.raises(Killed):
            finetune.fine_tune(tiny_model(**options), task, "fit", config, workdir=tmp_path,
                               checkpoint_every=2)
        monkeypatch.setattr(finetune, "save_state", save)
        assert finetune.load_state(tmp_path)[1] == 2
        # A restarted command loads it in a process where nothing has imported the model yet.
        restarted = subprocess.run(
            [sys.executable, "-c", "import pathlib, sys; from vitbench.train import finetune; "
             "print(finetune.load_state(pathlib.Path(sys.argv[1]))[1])", str(tmp_path)],
            capture_output=True, text=True)
        assert restarted.stdout.split()[-1:] == ["2"], restarted.stderr[-3000:]
        whole_batches = dataclasses.replace(config, micro_batch_size=4)
        with pytest.raises(ValueError, match="saved training with 2 pass.*--micro_batch_size"):
            finetune.fine_tune(tiny_model(**options), task, "fit", whole_batches, workdir=tmp_path,
                               checkpoint_every=2)
        resumed, summary = finetune.fine_tune(tiny_model(seed=9, **options), task, "fit", config,
                                              workdir=tmp_path, checkpoint_every=2)
    assert summary["resumed_from_step"] == 2
    assert finetune.load_state(tmp_path)[1] == 4
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_run_resumed_with_another_save_interval_saves_the_step_it_is_at(tmp_path,
                                                                         monkeypatch):
    """Saved at step 2 with --checkpoint_every 2, resumed with 3: the next save is step 5 (it
    was labelled 3, and a second restart fed steps 3-5 again to weights past them)."""
    task = demo_task()
    config = finetune.TrainConfig(lr=0.05, steps=6, batch_size=4, micro_batch_size=4,
                                  warmup_steps=1)
    save = finetune.save_state

    def save_then_die(*args):
        save(*args)
        raise Killed

    with mock_tfds(num_examples=12):
        straight, _ = finetune.fine_tune(tiny_model(), task, "fit", config)
        monkeypatch.setattr(finetune, "save_state", save_then_die)
        for every in (2, 3):
            with pytest.raises(Killed):
                finetune.fine_tune(tiny_model(), task, "fit", config, workdir=tmp_path,
                                   checkpoint_every=every)
        monkeypatch.setattr(finetune, "save_state", save)
        assert finetune.load_state(tmp_path)[1] == 5
        assert [path.name for path in tmp_path.glob("*.keras")] == ["checkpoint_5.keras"]
        (tmp_path / ".checkpoint_4.keras.99999.tmp.keras").write_bytes(b"a killed save's")
        resumed, summary = finetune.fine_tune(tiny_model(), task, "fit", config,
                                              workdir=tmp_path, checkpoint_every=3)
    assert summary["resumed_from_step"] == 5
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint_6.keras",
                                                                "state.json"]
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_diverging_run_raises():
    task = demo_task()
    config = finetune.TrainConfig(lr=1e30, steps=3, batch_size=4, micro_batch_size=4)
    with mock_tfds(num_examples=8), pytest.raises(finetune.DivergedError, match="lr 1e\\+30"):
        finetune.fine_tune(tiny_model(), task, "fit", config)


def test_real_accuracy_leaves_out_images_without_real_labels():
    real = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    result = classification.real_accuracy(np.array([2, 3, 1, 3]), real)
    assert result == {"real_accuracy": pytest.approx(2 / 3), "real_examples": 3}


def test_steps_per_call_divide_every_epoch_and_the_batches_left():
    assert execution.batches_per_call(12, 12) == 6
    assert execution.batches_per_call(16, 40) == 8
    assert execution.batches_per_call(10, 4) == 2
    assert execution.batches_per_call(7, 5) == 1


def test_cpu_passes_are_cache_sized_and_accelerators_take_the_whole_batch(monkeypatch):
    from vitbench.models import attention, zoo

    b16, demo = zoo.get_config("vit_b16"), zoo.get_config("vit_mu8")
    # ViT-B/16 at 224 px: 197 x 3072 float32 MLP units, 2.4 MB an image.
    assert execution.activation_bytes(b16, 224) == 4 * 197 * 3072
    assert execution.pass_size(b16, 224, 32) == 8 and execution.pass_size(b16, 224, 512) == 8
    assert execution.pass_size(b16, 224, 32, replicas=2) == 16  # 8 images on each replica
    assert execution.pass_size(b16, 224, 36) == 9  # halved only while it divides the batch
    assert execution.pass_size(b16, 224, 15) == 15
    # At 384 px the attention weights (12 x 577 x 577) are the largest activation.
    assert execution.activation_bytes(b16, 384) == 4 * 12 * 577 * 577
    assert execution.pass_size(b16, 384, 512) == 2
    assert execution.pass_size(demo, 32, 128) == 128  # the demo model's passes stay whole
    monkeypatch.setattr(attention, "on_cpu", lambda: False)
    assert execution.pass_size(b16, 224, 512) == 512


@pytest.mark.slow
def test_several_steps_per_call_train_the_same_weights(monkeypatch):
    task = demo_task()
    # 6 updates of 2 micro-batches, saved every 3 updates: epochs of 6 batches, 12 in all.
    config = finetune.TrainConfig(lr=0.1, steps=6, batch_size=4, micro_batch_size=2,
                                  warmup_steps=1)
    results = {}
    with mock_tfds(num_examples=16):
        for limit in (1, 8):
            monkeypatch.setattr(execution, "MAX_BATCHES_PER_CALL", limit)
            model, summary = finetune.fine_tune(tiny_model(), task, "fit", config)
            results[limit] = model.steps_per_execution, model.get_weights(), summary
    (one, weights_one, summary_one), (six, weights_six, summary_six) = results[1], results[8]
    assert (one, six) == (1, 6)
    assert summary_six["train_loss"] == pytest.approx(summary_one["train_loss"], rel=1e-5)
    for a, b in zip(weights_one, weights_six):  # the same 12 batches, no more, no fewer
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_progress_bar_counts_updates_when_keras_runs_several_batches_per_call():
    from vitbench.train import progress

    class Bar:
        images = 0

        def update(self, images):
            self.images += images

        def set_postfix(self, shown):
            self.shown = shown

    bar = Bar()
    callback = progress.TrainingProgress(bar, steps=10, done_steps=4, batch_size=32,
                                         accumulation=2, batches_per_call=3)
    for _ in range(4):  # 12 micro-batches: 6 updates
        callback.on_train_batch_end(0, {"loss": 1.5})
    assert (callback.step, bar.images) == (10, 6 * 32)
    assert bar.shown["step"] == "10/10"


@pytest.mark.slow
def test_training_under_bf16_is_fed_bfloat16_images(monkeypatch):
    from vitbench.data import pipeline

    as_numpy, fed = pipeline.as_numpy, set()

    def recording(dataset):
        for batch in as_numpy(dataset):
            fed.add(str(batch["image"].dtype))
            yield batch

    monkeypatch.setattr(pipeline, "as_numpy", recording)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    config = finetune.TrainConfig(lr=0.1, steps=2, batch_size=4, micro_batch_size=4)
    with mock_tfds(num_examples=8):
        _, summary = finetune.fine_tune(model, demo_task(), "fit", config)
    assert fed == {"bfloat16"} and np.isfinite(summary["train_loss"])


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler, as a command started from a shell has (a test runner's
    worker may have another)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class SwallowedCtrlC(keras.callbacks.Callback):
    """Sends SIGINT at the end of call `at` from inside a bare `except`, as Keras reads a call's
    logs back from the device (`pythonify_logs`): a KeyboardInterrupt raised there is lost."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def on_train_batch_end(self, batch, logs=None):
        import os
        import signal
        import time

        self.calls += 1
        if self.calls == self.at:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # the handler runs here
            except BaseException:  # noqa: B036 (what Keras does)
                pass


@pytest.mark.slow
def test_ctrl_c_in_training_stops_after_the_save_due_and_the_run_resumes(
        tmp_path, monkeypatch, python_sigint_handler):
    import signal

    task = demo_task()
    config = finetune.TrainConfig(lr=0.05, steps=6, batch_size=4, micro_batch_size=4,
                                  warmup_steps=1)
    callbacks = finetune.training_callbacks
    monkeypatch.setattr(finetune, "training_callbacks",
                        lambda *args, **kwargs: callbacks(*args, **kwargs) + [SwallowedCtrlC(2)])
    with mock_tfds(num_examples=12):
        with pytest.raises(KeyboardInterrupt):  # calls of 2 steps: Ctrl-C in steps 3-4
            finetune.fine_tune(tiny_model(), task, "fit", config, workdir=tmp_path,
                               checkpoint_every=2)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert finetune.load_state(tmp_path)[1] == 4  # the save at step 4 was made
        monkeypatch.setattr(finetune, "training_callbacks", callbacks)
        _, summary = finetune.fine_tune(tiny_model(), task, "fit", config, workdir=tmp_path,
                                        checkpoint_every=2)
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 6


def test_a_second_ctrl_c_raises_at_once_and_a_pending_one_at_the_end(python_sigint_handler):
    import os
    import signal
    import time

    from vitbench.train import interrupt

    with pytest.raises(KeyboardInterrupt):
        with interrupt.deferred() as callback:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert callback.pending
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored (a background job): left alone
    with interrupt.deferred():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
