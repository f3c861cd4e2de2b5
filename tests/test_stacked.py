"""Stacked runs: a sweep's runs trained together give each run's numbers, save and resume as
separate runs do, and are recorded as separate runs would be."""


import numpy as np
import pytest
from conftest import mock_tfds
from test_device_data import many_sizes, vtab_task  # noqa: F401  (a fixture)
from test_train import demo_task, tiny_model

from vitbench import records, tasks
from vitbench.train import finetune, stacked
from vitbench.transfer import plan, report, stacking
from vitbench.transfer import suite as running


def config(lr, steps=4, **changes):
    # Two passes per update and Polyak averaging: the accumulators and the average are
    # stacked state too.
    return finetune.TrainConfig(lr=lr, steps=steps, batch_size=4, micro_batch_size=2,
                                warmup_steps=1, polyak=0.5, **changes)


def weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def assert_same(separate, together):
    model, summary = separate
    stacked_model, stacked_summary = together
    for a, b in zip(weights(model), weights(stacked_model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("train_loss", "train_accuracy", "steps"):
        assert stacked_summary[key] == pytest.approx(summary[key], rel=1e-5)


@pytest.mark.slow
def test_stacked_runs_equal_separate_runs_and_a_diverging_one_leaves_the_others_alone():
    task, lrs = demo_task(), [0.05, 0.2, float("inf")]
    with mock_tfds(num_examples=12):
        separate = []
        for lr in lrs:
            try:
                separate.append(finetune.fine_tune(tiny_model(), task, "fit", config(lr)))
            except finetune.DivergedError as diverged:
                separate.append(diverged)
        together = stacked.fine_tune_stacked([tiny_model() for _ in lrs], task, "fit",
                                             [config(lr) for lr in lrs])
    assert isinstance(separate[2], finetune.DivergedError)
    assert isinstance(together[2], finetune.DivergedError)
    assert "lr inf" in str(together[2])
    for one, both in zip(separate[:2], together[:2]):
        assert_same(one, both)
        assert both[1]["stacked_members"] == 3
    assert max(np.abs(a - b).max() for a, b in zip(weights(together[0][0]),
                                                    weights(together[1][0]))) > 1e-3


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_stack_resumes_together_or_one_by_one_to_the_same_weights(tmp_path,
                                                                          monkeypatch):
    task, lrs = demo_task(), [0.05, 0.2]
    workdirs = [tmp_path / "a", tmp_path / "b"]
    with mock_tfds(num_examples=12):
        # saving every 2 steps too: the summary's loss is the mean since the last save
        straight = [finetune.fine_tune(tiny_model(), task, "fit", config(lr),
                                       workdir=tmp_path / f"straight{lr}", checkpoint_every=2)
                    for lr in lrs]
        save = stacked._save_members

        def save_then_die(*args):
            save(*args)
            raise Killed

        monkeypatch.setattr(stacked, "_save_members", save_then_die)
        with pytest.raises(Killed):
            stacked.fine_tune_stacked([tiny_model(), tiny_model()], task, "fit",
                                      [config(lr) for lr in lrs], workdirs=workdirs,
                                      checkpoint_every=2)
        monkeypatch.undo()
        assert [finetune.read_state(w)["step"] for w in workdirs] == [2, 2]
        # the saves are those of separate runs: one member resumes alone...
        alone = finetune.fine_tune(tiny_model(seed=5), task, "fit", config(lrs[0]),
                                   workdir=workdirs[0], checkpoint_every=2)
        assert alone[1]["resumed_from_step"] == 2
        assert_same(straight[0], alone)
        # ...and two members saved at one step resume together
        workdirs[0].rename(tmp_path / "done")
        copy = tmp_path / "c"
        import shutil
        shutil.copytree(workdirs[1], copy)
        resumed = stacked.fine_tune_stacked([tiny_model(seed=5), tiny_model(seed=6)], task,
                                            "fit", [config(lrs[1])] * 2,
                                            workdirs=[workdirs[1], copy], checkpoint_every=2)
    for result in resumed:
        assert result[1]["resumed_from_step"] == 2
        assert_same(straight[1], result)


def test_runs_that_differ_in_more_than_the_rate_and_seed_do_not_stack(tmp_path):
    with pytest.raises(stacked.NotStackable, match="more than the learning rate and the seed"):
        stacked.check_stackable([config(0.1), config(0.1, steps=5)])
    with pytest.raises(stacked.NotStackable, match="more than the learning rate and the seed"):
        stacked.check_stackable([config(0.1), config(0.1, grad_clip_norm=2.0)])
    stacked.check_stackable([config(0.1), config(0.3, seed=1)])


@pytest.mark.slow
@pytest.mark.usefixtures("many_sizes")
def test_members_of_several_seeds_each_train_on_their_seeds_batches():
    # from the host pipeline and from the split on the device: per seed, its separate run's
    task, runs = vtab_task(), [(0.05, 0), (0.2, 1), (0.1, 0)]
    for device_data in ("off", "on"):
        separate = [finetune.fine_tune(tiny_model(seed), task, "fit", config(lr, seed=seed),
                                       device_data=device_data) for lr, seed in runs]
        together = stacked.fine_tune_stacked(
            [tiny_model(seed) for _, seed in runs], task, "fit",
            [config(lr, seed=seed) for lr, seed in runs], device_data=device_data)
        for one, both in zip(separate, together):
            assert_same(one, both)
            assert both[1]["input"]["where"] == ("host" if device_data == "off" else "device")


def test_saved_states_at_different_steps_do_not_stack(tmp_path, monkeypatch):
    states = {tmp_path / "a": (None, 0), tmp_path / "b": ("model", 2)}
    monkeypatch.setattr(finetune, "load_state", states.get)
    with pytest.raises(stacked.NotStackable, match=r"different steps \[0, 2\]"):
        stacked.fine_tune_stacked([None, None], demo_task(), "fit", [config(0.1), config(0.2)],
                                  workdirs=list(states))


def test_a_sweeps_tune_runs_and_the_seeds_final_runs_form_stacks():
    suite = tasks.load_suite("demo")
    overrides = plan.Overrides(lrs=(0.01, 0.03, 0.1), repeats=2)
    runs = plan.plan(suite, ["demo_shape", "demo_color"], "scratch:vit_mu8", overrides,
                     fewshot=False)
    shape = [[(run.task.name, run.phase, run.seed, run.lr) for run in group]
             for group in stacking.groups(runs, 4)]
    tune = [("demo_shape", "tune", seed, lr) for seed in (0, 1) for lr in (0.01, 0.03, 0.1)]
    assert shape[:3] == [tune[:4], tune[4:], [("demo_shape", "final", 0, None),
                                              ("demo_shape", "final", 1, None)]]
    assert len(shape) == 3 * 2
    assert [len(group) for group in stacking.groups(runs, 8)][:2] == [6, 2]
    assert all(len(group) == 1 for group in stacking.groups(runs, 1))
    single_rate = plan.plan(suite, ["demo_shape"], "scratch:vit_mu8",
                            plan.Overrides(repeats=3), fewshot=False)
    assert [[run.seed for run in group] for group in stacking.groups(single_rate, 4)] == [
        [0, 1, 2]]


@pytest.mark.slow
def test_a_stacked_sweep_records_what_separate_runs_record(tmp_path):
    suite = tasks.load_suite("demo")
    overrides = plan.Overrides(steps=4, batch_size=8, micro_batch_size=4, resolution=16,
                               lrs=(0.01, 0.1, 1e30))
    logged, found = [], {}
    with mock_tfds(num_examples=12):
        # alone from the host pipeline, stacked from the split kept on the device
        for stack, device_data in ((1, "off"), (4, "on")):
            results = tmp_path / f"stack{stack}"
            running.run_suite(suite, ["demo_color"], "scratch:vit_mu8", overrides, results,
                              verbose=0, log=logged.append, fewshot=False, stack=stack,
                              device_data=device_data)
            found[stack] = records.read(records.records_path(results, "demo"))
    assert any("stacked with 2 other(s)" in line for line in logged)
    alone, together = found[1], found[4]
    assert [r["config_hash"] for r in together] == [r["config_hash"] for r in alone]
    assert [r["status"] for r in together] == ["finished", "finished", "diverged", "finished"]
    for one, both in zip(alone, together):
        assert both["metrics"] == pytest.approx(one["metrics"])
        if one["status"] == "finished":
            assert both["train"]["train_loss"] == pytest.approx(one["train"]["train_loss"],
                                                                rel=1e-5)
    assert sorted(together[0]["stacked_with"]) == sorted(r["config_hash"]
                                                         for r in together[1:3])
    assert "stacked_with" not in together[3] and "stacked_with" not in alone[0]
    assert {r["train"]["input"]["where"] for r in together if r["train"]} == {"device"}
    assert {r["train"]["input"]["where"] for r in alone if r["train"]} == {"host"}


@pytest.mark.slow
def test_a_stack_that_fails_trains_its_runs_one_by_one(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(stacked, "fine_tune_stacked", out_of_memory)
    logged = []
    overrides = plan.Overrides(steps=2, batch_size=4, micro_batch_size=4, resolution=16,
                               lrs=(0.01, 0.1))
    with mock_tfds(num_examples=8):
        finished = running.run_suite(tasks.load_suite("demo"), ["demo_color"],
                                     "scratch:vit_mu8", overrides, tmp_path, verbose=0,
                                     log=logged.append, fewshot=False, stack=4)
    assert any("not trained together (RuntimeError: RESOURCE_EXHAUSTED" in line
               for line in logged), logged
    assert [r["config"]["phase"] for r in finished] == ["tune", "tune", "final"]
    assert all("stacked_with" not in r for r in finished)


def test_the_dry_run_numbers_the_stacks_and_estimates_the_time_they_save(tmp_path):
    suite = tasks.load_suite("vtab1k")
    asked = []

    def stacked_speed(members):
        asked.append(members)
        return 1.0  # each member at half the images/s of a run alone: stacking 4 saves half

    text = report.describe_plan(suite, ["dtd"], "scratch:vit_ti16", plan.Overrides(), tmp_path,
                                sweep=True, speed=lambda: 2.0, stack=4,
                                stacked_speed=stacked_speed)
    lines = text.splitlines()
    assert lines[0].split()[-2:] == ["stack", "status"]
    assert [line.split()[-3] for line in lines[2:6]] == ["1"] * 4  # the tune runs
    assert lines[6].split()[-3] == "384"  # the final run: no stack
    assert asked == [4]
    # 4 tune runs of 256k images (a fifth of the schedule): 142 h one by one, 71 h stacked;
    # the final run of 1.28M images 178 h
    assert ("2,304,000 training images to go (the tune runs make the plan 1.80x the final runs' "
            "images); 4 of them train in 1 stack(s) of up to 4 runs, about 320.0 h one by one "
            "at the 2.0 images/s") in text
    assert "stacked, about 248.9 h (71.1 h less)" in text
    alone = report.describe_plan(suite, ["dtd"], "scratch:vit_ti16", plan.Overrides(),
                                 tmp_path, sweep=True, stack=1)
    assert "stack" not in alone.splitlines()[0]


@pytest.mark.slow
def test_the_sweep_benchmark_times_a_stack_against_runs_one_after_another(capsys):
    import json

    from vitbench import cli

    assert cli.main(["bench", "--mode=sweep", "--members=3", "--model=vit_mu8",
                     "--batch_size=4", "--micro_batch_size=2", "--resolution=32",
                     "--batches=2", "--warmup=1"]) == 0
    sequential, together = [json.loads(line)
                            for line in capsys.readouterr().out.strip().splitlines()]
    assert (sequential["members"], together["members"]) == (1, 3)
    assert together["steps"] == sequential["steps"] and together["micro_batch_size"] == 2
    assert together["images_per_second_all_members"] == pytest.approx(
        3 * together["images_per_second"])
    assert together["ratio_to_sequential"] == pytest.approx(
        together["images_per_second_all_members"] / sequential["images_per_second"])
    assert "3 runs stacked" in together["software"]


@pytest.mark.slow
def test_a_stack_out_of_memory_tries_smaller_passes_before_one_by_one(tmp_path, monkeypatch):
    train = stacked.fine_tune_stacked
    tried = []

    def fits_passes_of_two(models, task, split, configs, **kwargs):
        tried.append(configs[0].micro_batch_size)
        if configs[0].micro_batch_size > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory while trying to allocate")
        return train(models, task, split, configs, **kwargs)

    monkeypatch.setattr(stacked, "fine_tune_stacked", fits_passes_of_two)
    overrides = plan.Overrides(steps=2, batch_size=8, micro_batch_size=8, resolution=16,
                               lrs=(0.01, 0.1))
    with mock_tfds(num_examples=8):
        finished = running.run_suite(tasks.load_suite("demo"), ["demo_color"],
                                     "scratch:vit_mu8", overrides, tmp_path, verbose=0,
                                     log=lambda line: None, fewshot=False, stack=4)
    assert tried == [8, 4, 2]
    tune = [r for r in finished if r["config"]["phase"] == "tune"]
    assert [(r["micro_batch_size"], r["accumulation_steps"]) for r in tune] == [(2, 4)] * 2
    assert all(r["stacked_with"] for r in tune)


def test_runs_stack_by_default_on_an_accelerator_only(monkeypatch):
    """On a CPU a stack measured no faster than its runs one by one (docs/performance.md)."""
    from vitbench.models import attention

    assert stacking.size(None) == 1 and stacking.size(3) == 3  # this CPU
    monkeypatch.setattr(attention, "on_cpu", lambda: False)
    assert stacking.size(None) == stacking.DEFAULT_STACK == 4
    monkeypatch.setattr(stacking.stack, "available", lambda: False)  # TensorFlow, or sharded
    assert stacking.size(4) == 1
