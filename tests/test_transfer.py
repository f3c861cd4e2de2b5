"""vitbench.transfer: plans, learning-rate selection, skipping recorded runs, a demo run end
to end."""

import dataclasses
import pathlib
import tempfile

import numpy as np
import pytest
from conftest import mock_tfds

from vitbench import records, tasks
from vitbench.checkpoints import identity
from vitbench.evaluate import classification, outcomes
from vitbench.models import attention
from vitbench.train import distribute
from vitbench.transfer import methods, plan, report, sizing
from vitbench.transfer import models as transfer_models
from vitbench.transfer import suite as running

TINY_RUN = plan.Overrides(steps=4, batch_size=8, micro_batch_size=4, resolution=16)


def test_vtab1k_plan_is_one_final_run_per_task_at_the_papers_setting():
    suite = tasks.load_suite("vtab1k")
    runs = plan.plan(suite, [], "vit_b16", plan.Overrides())
    assert len(runs) == 19 and {r.phase for r in runs} == {"final"}
    config = runs[0].config()
    assert (config["lr"], config["steps"], config["batch_size"], config["resolution"]) == \
        (0.01, 2500, 512, 384)
    assert config["train_split"] == "train[:800]+train[2754:2954]"
    assert config["eval_split"] == "test"


def test_warm_up_is_the_protocols_at_most_the_steps_unless_given(capsys):
    from vitbench import cli

    suite = tasks.load_suite("vtab1k")

    def warmup(**overrides):
        return plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(**overrides))[0] \
            .config()["warmup_steps"]

    assert (warmup(), warmup(steps=50), warmup(steps=50, warmup_steps=5)) == (200, 50, 5)
    assert cli.main(["run", "--warmup_steps=-1"]) == 2
    assert "flag --warmup_steps=-1: -1 is not a non-negative integer" in capsys.readouterr().err


def test_sweep_tunes_on_train800_val200_then_retrains():
    suite = tasks.load_suite("vtab1k")
    runs = plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(), sweep=True)
    assert [(r.phase, r.lr) for r in runs] == [("tune", lr) for lr in plan.DEFAULT_SWEEP] + \
        [("final", None)]
    assert runs[0].config()["train_split"] == "train[:800]"
    assert runs[0].config()["eval_split"] == "validation[:200]"


def test_vtab_tune_runs_train_a_fifth_of_the_schedule_and_the_final_run_all_of_it():
    """A sweep of 4 rates then costs 1.8 final runs; the tune configs keep the protocol's
    steps (the leaderboard row of the final run) and add the fraction."""
    suite = tasks.load_suite("vtab1k")
    *tunes, final = plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(), sweep=True)
    assert [t.schedule for t in tunes] == [(500, 40)] * 4 and final.schedule == (2500, 200)
    assert sum(map(plan.images, tunes)) / plan.images(final) == pytest.approx(0.8)
    assert tunes[0].config()["steps"] == 2500 and tunes[0].config()["tune_fraction"] == 0.2
    assert "tune_fraction" not in final.config(0.01)
    config = methods.FineTune.train_config(tunes[0], 0.01, 512)
    assert (config.steps, config.warmup_steps) == (500, 40)
    shorter = plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(steps=10), sweep=True)
    assert [r.schedule for r in shorter] == [(2, 2)] * 4 + [(10, 10)]
    assert plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(steps=2), sweep=True)[0] \
        .schedule == (1, 0)  # at least one step
    full = plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(tune_fraction=1.0), sweep=True)
    assert full[0].schedule == (2500, 200) and "tune_fraction" not in full[0].config()
    # the final run is one run whichever length chose its rate
    assert records.config_hash(full[-1].config(0.01)) == records.config_hash(final.config(0.01))


def test_a_final_run_finds_the_rate_its_shortened_tune_runs_chose():
    *tunes, final = plan.plan(tasks.load_suite("vtab1k"), ["dtd"], "vit_b16", plan.Overrides(),
                              sweep=True)
    done = {records.config_hash(t.config()): {"metrics": {"accuracy": a}}
            for t, a in zip(tunes, (0.2, 0.6, 0.4, 0.1))}
    assert plan.resolve(final, done).lr == 0.003
    assert plan.is_done(tunes[0], done) and not plan.is_done(final, done)


def test_upstream_suites_select_over_their_grid():
    runs = plan.plan(tasks.load_suite("cifar100"), [], "vit_b16", plan.Overrides())
    assert [r.lr for r in runs if r.phase == "tune"] == [0.001, 0.003, 0.01, 0.03]
    assert runs[0].config()["train_split"] == "train[:98%]"
    assert runs[-1].config(0.01)["train_split"] == "train"


def test_another_seed_of_a_checkpoints_probe_is_the_same_probe():
    """A probe's seed draws only a scratch model's weights (the shots have seeds of their
    own): --seed 1 on a checkpoint finds the seed-0 probe done, not a second 'seed'."""
    suite = tasks.load_suite("demo")

    def probe(ckpt, seed):
        runs = plan.plan(suite, ["demo_shape"], ckpt, plan.Overrides(seed=seed))
        return next(run for run in runs if run.method == "fewshot").config()

    assert probe("vit_b16", 1) == probe("vit_b16", 0)
    assert probe("scratch:vit_mu8", 1)["seed"] == 1


def test_repeats_run_the_whole_protocol_once_per_seed():
    """Each seed tunes and selects on its own (every seed's tune runs first, then the final
    runs: they stack); a checkpoint's probe is one probe for them all (its shots have seeds
    of their own), a scratch model's one per seed (its weights)."""
    suite = tasks.load_suite("demo")
    overrides = plan.Overrides(seed=3, repeats=2, lrs=(0.01, 0.03))
    runs = plan.plan(suite, ["demo_shape"], "vit_b16", overrides)
    assert [(r.method, r.phase, r.lr, r.seed) for r in runs] == [
        ("finetune", "tune", 0.01, 3), ("finetune", "tune", 0.03, 3),
        ("finetune", "tune", 0.01, 4), ("finetune", "tune", 0.03, 4),
        ("finetune", "final", None, 3), ("finetune", "final", None, 4),
        ("fewshot", "final", None, 0)]
    scratch = plan.plan(suite, ["demo_shape"], "scratch:vit_mu8", overrides)
    assert [r.seed for r in scratch if r.method == "fewshot"] == [3, 4]
    with pytest.raises(ValueError, match="--repeats is 0; it must be a positive integer"):
        plan.Overrides(repeats=0)


def test_resolve_picks_the_best_validation_score():
    """Ties go to the smaller rate whatever the grid's order, as the leaderboards choose."""
    from vitbench.leaderboards import collect

    run = plan.plan(tasks.load_suite("pets"), [], "c",
                      plan.Overrides(lrs=(0.03, 0.01, 0.003, 0.001)))[-1]
    done, scores = {}, {0.03: 0.1, 0.01: 0.8, 0.003: 0.8, 0.001: 0.5}
    for lr, accuracy in scores.items():
        tune = dataclasses.replace(run, phase="tune", lr=lr)
        done[records.config_hash(tune.config())] = {"metrics": {"accuracy": accuracy}}
    assert plan.resolve(run, done).lr == 0.003 == collect.best_setting(scores)
    del done[next(iter(done))]
    assert plan.resolve(run, done) is None


def test_plan_identifies_local_checkpoints_by_content_and_records_precision(tmp_path):
    suite = tasks.load_suite("vtab1k")
    ckpt = tmp_path / "model.npz"
    ckpt.write_bytes(b"first weights")
    before = plan.plan(suite, ["dtd"], str(ckpt), plan.Overrides())[0].config()
    ckpt.write_bytes(b"other weights")  # the same path trained again: a different checkpoint
    after = plan.plan(suite, ["dtd"], str(ckpt), plan.Overrides())[0].config()
    assert before["ckpt_sha256"] != after["ckpt_sha256"]
    assert records.config_hash(before) != records.config_hash(after)
    published = plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides())[0].config()
    assert published["ckpt_sha256"] is None  # a published name needs no download to plan
    assert published["precision"] == "float32" and published["polyak"] == 0.0
    averaged = plan.plan(suite, ["dtd"], "vit_b16", plan.Overrides(polyak=0.9999))
    assert averaged[0].config()["polyak"] == 0.9999


def test_a_folder_task_is_identified_by_its_files(tmp_path):
    """A folder (or CSV) task's config holds a key of its files' listing: changed images are
    new runs, not done ones. TFDS tasks count by name and version, as before."""
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "imgs" / "train" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "train" / label / "0.png")
    suite = tasks.Suite("mine", "", (tasks.Task(
        name="ab", group="custom", source="folder", dataset=str(tmp_path / "imgs"),
        num_classes=2, splits={"train": "train", "test": "train"}),))

    def config():
        return plan.plan(suite, [], "vit_b16", plan.Overrides())[0].config()

    before = config()
    assert before == config() and len(before["data_sha256"]) == 64
    Image.new("RGB", (16, 16)).save(tmp_path / "imgs" / "train" / "a" / "0.png")  # rewritten
    assert config()["data_sha256"] != before["data_sha256"]
    published = plan.plan(tasks.load_suite("vtab1k"), ["dtd"], "vit_b16", plan.Overrides())
    assert "data_sha256" not in published[0].config()


@pytest.mark.slow
def test_demo_task_trains_and_records(tmp_path, monkeypatch):
    from vitbench.models import zoo
    from vitbench.train import execution

    suite = tasks.load_suite("demo")
    # No micro-batch given: the loaded model's passes (execution.pass_size), here made
    # 4 images by a CPU budget of 4 images' activations.
    automatic = dataclasses.replace(TINY_RUN, micro_batch_size=None)
    run = plan.plan(suite, ["demo_color"], "scratch:vit_mu8", automatic)[0]
    assert run.micro_batch_size is None
    monkeypatch.setattr(execution, "CPU_PASS_BYTES",
                        4 * execution.activation_bytes(zoo.get_config("vit_mu8"), 16))
    with mock_tfds(num_examples=16):
        record = running.execute(run, run.lr, tmp_path)
    assert record["metrics"]["examples"] == 16
    assert 0 <= record["metrics"]["accuracy"] <= 1
    assert record["micro_batch_size"] == 4
    assert record["accumulation_steps"] == 2 and record["train"]["steps"] == 4
    assert record["precision"] == "float32"  # no accelerator here: full precision
    # The suite's own settings, for the leaderboard rows of suites outside vitbench/suites/.
    assert record["protocol"] == suite.task("demo_color").protocol.settings()
    assert record["protocol"]["steps"] != record["config"]["steps"] == 4
    saved = records.read(records.records_path(tmp_path, "demo"))
    assert len(saved) == 1 and saved[0]["config_hash"] == record["config_hash"]
    assert saved[0]["metrics"] == record["metrics"]
    assert not (tmp_path / "work" / "demo" / record["config_hash"]).exists()
    # Its per-item predictions, beside the records, give its accuracy again.
    entry = saved[0]["outcomes"]
    assert entry["file"] == f"runs/outcomes/demo/{record['config_hash']}.npz"
    assert entry["examples"] == 16 and entry["scores"] == ["test"]
    predicted = outcomes.read(tmp_path, entry)["test"]
    with mock_tfds(num_examples=16):
        _, labels = classification.predictions(
            transfer_models.load_for_task(run.ckpt, run.task), run.task, "test", 8)
    assert entry["labels_sha256"] == outcomes.labels_sha256(labels)
    assert np.mean(predicted == labels) == record["metrics"]["accuracy"]


TINY_FLAGS = ["--steps=4", "--batch_size=8", "--micro_batch_size=4", "--resolution=16",
              "--nofewshot", "--tasks=demo_color,demo_shape"]


@pytest.mark.slow
def test_run_command_records_skips_and_forces(tmp_path, capsys):
    from vitbench import cli

    results = str(tmp_path / "results")
    with mock_tfds(num_examples=16):
        assert cli.main(["run", f"--results_dir={results}"] + TINY_FLAGS) == 0
        first, bars = capsys.readouterr()
        assert "2 runs finished" in first and "demo_color final lr=0.03: test accuracy" in first
        # the suite's bar counts both runs' images; the run's bar ends at its last step
        assert "demo suite: 100%" in bars and "64.0/64.0" in bars and "img/s" in bars
        assert "step=4/4" in bars and "loss=" in bars and "accuracy=" in bars
        # the suite's leaderboard is rewritten at the end of every run command
        board = (tmp_path / "results" / "demo.md").read_text()
        assert "scratch:vit_mu8 (steps 4, batch 8, warm-up 4, px 16)" in board
        assert f"leaderboards: {tmp_path / 'results' / 'demo.md'}" in first
        assert cli.main(["run", f"--results_dir={results}"] + TINY_FLAGS) == 0
        second = capsys.readouterr().out
        assert "0 runs finished" in second and second.count("skipped") == 2
        assert cli.main(["run", f"--results_dir={results}", "--dry_run"] + TINY_FLAGS) == 0
        printed = capsys.readouterr().out
        assert "2 of 2 runs done; 0 training images to go" in printed
        assert cli.main(["run", f"--results_dir={results}", "--force",
                         "--tasks=demo_color"] + TINY_FLAGS[:-1]) == 0
    saved = records.read(records.records_path(results, "demo"))
    # in the suite's order (shape before color), then the forced re-run
    assert [r["config"]["task"] for r in saved] == ["demo_shape", "demo_color", "demo_color"]
    assert saved[0]["accumulation_steps"] == 2 and saved[0]["micro_batch_size"] == 4


@pytest.mark.slow
def test_run_command_sweep_then_final(tmp_path, capsys):
    from vitbench import cli

    with mock_tfds(num_examples=16):
        assert cli.main(["run", f"--results_dir={tmp_path}", "--sweep", "--lrs=0.01,0.1",
                         "--tune_fraction=0.5", "--tasks=demo_color"] + TINY_FLAGS[:-1]) == 0
    saved = records.read(records.records_path(tmp_path, "demo"))
    assert [(r["config"]["phase"], r["config"]["eval_split"]) for r in saved] == \
        [("tune", "validation"), ("tune", "validation"), ("final", "test")]
    assert [r["train"]["steps"] for r in saved] == [2, 2, 4]  # tune runs: half of --steps=4
    best = max(saved[:2], key=lambda r: (r["metrics"]["accuracy"], -r["config"]["lr"]))
    assert saved[2]["config"]["lr"] == best["config"]["lr"]
    assert saved[2]["config"]["train_split"] == "train+validation"


@pytest.mark.slow
def test_repeats_are_recorded_per_seed_and_averaged_on_the_board(tmp_path, capsys,
                                                                  monkeypatch):
    import numpy as np

    from vitbench import cli

    flags = ["run", f"--results_dir={tmp_path}", "--repeats=2", "--tasks=demo_color"]
    with mock_tfds(num_examples=16):
        assert cli.main(flags + TINY_FLAGS[:-1]) == 0
        out = capsys.readouterr().out
        assert "2 runs finished" in out
        assert "[1/2] demo_color final lr=0.03 seed=0: test accuracy" in out
        assert "[2/2] demo_color final lr=0.03 seed=1: test accuracy" in out
        measure = sizing.measure_throughput
        monkeypatch.setattr(sizing, "measure_throughput",
                            lambda *a, **k: pytest.fail("measured with nothing to do"))
        assert cli.main(flags + TINY_FLAGS[:-1] + ["--dry_run"]) == 0
        monkeypatch.setattr(sizing, "measure_throughput", measure)
        printed = capsys.readouterr().out
        assert printed.split("\n")[0].split()[:3] == ["task", "phase", "seed"]
        assert "2 of 2 runs done; 0 training images to go\n" in printed + "\n"
        assert cli.main(flags + TINY_FLAGS[:-1] + ["--dry_run", "--force"]) == 0
        assert "0 of 2 runs done" in capsys.readouterr().out  # --force redoes them
    saved = records.read(records.records_path(tmp_path, "demo"))
    assert [r["config"]["seed"] for r in saved] == [0, 1]
    accuracies = [100 * r["metrics"]["accuracy"] for r in saved]
    row = next(line for line in (tmp_path / "demo.md").read_text().splitlines()
               if "| scratch:vit_mu8 (steps 4" in line)
    # The mean, ± the half-width of the seeds' and items' 95% interval from the outcomes.
    from vitbench.evaluate import statistics

    both = statistics.accuracy_estimate(np.stack(
        [outcomes.read_correct(tmp_path, r["outcomes"])["test"] for r in saved]))
    assert f"{np.mean(accuracies):.2f} ± {50 * (both.high - both.low):.2f}" in row


def test_unknown_task_fails_before_any_work(capsys):
    from vitbench import cli

    assert cli.main(["run", "--tasks=demo_colour"]) == 1
    assert "Did you mean demo_color" in capsys.readouterr().err
    assert cli.main(["demo", "--tasks=demo_colour"]) == 1  # before its pretraining
    assert "Did you mean demo_color" in capsys.readouterr().err


@pytest.mark.parametrize("ckpt, flags, message", [
    ("scratch:vit_zz", [], "unknown model 'vit_zz'; known models: vit_mu32"),
    ("nope.npz", [], "checkpoint file nope.npz does not exist"),
    ("vit_b16", ["--resolution=8"], "image size 8x8 is smaller than the patch size 16 of vit_b16"),
])
def test_a_checkpoint_that_cannot_run_fails_before_any_work(ckpt, flags, message, tmp_path,
                                                            capsys):
    from vitbench import cli

    assert cli.main(["run", f"--ckpt={ckpt}", f"--results_dir={tmp_path}"] + flags) == 1
    out, err = capsys.readouterr()
    assert message in err and "[1/" not in out + err
    assert not (tmp_path / "runs").exists()


def test_the_dry_run_names_the_data_that_is_missing(tmp_path):
    suite = tasks.load_suite("vtab1k")
    text = report.describe_plan(suite, ["dtd", "diabetic_retinopathy"], "scratch:vit_ti16",
                                plan.Overrides(), tmp_path, speed=lambda: 2.0,
                                data_dir=tmp_path)
    assert "0 of 2 runs done; 2,560,000 training images to go, about 355.6 h at the 2.0 " \
        "images/s" in text
    missing = text[text.index("data missing"):]
    assert "diabetic_retinopathy" in missing and f"{tmp_path}/downloads/manual" in missing
    assert "dtd" not in missing  # downloaded by TFDS when the run starts


def test_the_dry_run_shows_the_shortened_tune_runs_and_what_the_sweep_costs(tmp_path):
    text = report.describe_plan(tasks.load_suite("vtab1k"), ["dtd"], "scratch:vit_ti16",
                                plan.Overrides(), tmp_path, sweep=True)
    assert [line.split()[-5] for line in text.splitlines()[2:7]] == ["500"] * 4 + ["2500"]
    assert "2,304,000 training images to go (the tune runs make the plan 1.80x the final " \
        "runs' images)" in text


def test_the_dry_run_shows_shots_not_steps_for_few_shot_probes(tmp_path):
    text = report.describe_plan(tasks.load_suite("demo"), ["demo_shape"], "scratch:vit_mu8",
                                plan.Overrides(shots=(1, 5)), tmp_path)
    header, _, finetune, fewshot = text.splitlines()[:4]
    assert header.split() == ["task", "phase", "method", "lr", "train", "eval", "steps",
                              "batch", "shots", "res", "status"]
    assert finetune.split()[2:] == ["finetune", "0.03", "train+validation", "test", "300", "64",
                                    "32", "to", "do"]
    assert fewshot.split()[2:] == ["fewshot", "train+validation", "test", "1,5", "32", "to", "do"]


def test_shots_are_distinct_and_in_order():
    from vitbench.commands.options import positive_integers

    assert positive_integers("--shots", ["5", "1", "5"]) == (1, 5)


def test_an_unusable_results_dir_fails_before_any_training(tmp_path, capsys, monkeypatch):
    from vitbench import cli

    monkeypatch.setattr(running, "execute", lambda *a: pytest.fail("a run started"))
    (tmp_path / "a_file").write_text("")
    with mock_tfds(num_examples=16):
        assert cli.main(["run", f"--results_dir={tmp_path / 'a_file'}"] + TINY_FLAGS) == 1
    # what the folder is for, and the operating system's message with the path
    assert (f"error: the results dir {tmp_path / 'a_file'} cannot be used: Not a directory "
            f"({tmp_path / 'a_file' / 'runs'})") in capsys.readouterr().err


@pytest.mark.parametrize("flag, status, message", [  # status 2: refused as the flags parse
    ("--steps=0", 2, "flag --steps=0: 0 is not a positive integer"),
    ("--batch_size=-4", 2, "flag --batch_size=-4: -4 is not a positive integer"),
    ("--polyak=-0.5", 2, "flag --polyak=-0.5: -0.5 is not a non-negative number"),
    ("--polyak=1", 1, "--polyak is 1.0; it must be a number in [0, 1)"),  # would never move
    ("--tune_fraction=0", 1, "--tune_fraction is 0.0; it must be a number in (0, 1]"),
    ("--tune_fraction=1.5", 1, "--tune_fraction is 1.5; it must be a number in (0, 1]"),
    ("--micro_batch_size=0", 1, "--micro_batch_size must be a positive integer or 'auto', not '0'"),
    ("--lrs=0.01,-1", 1, "--lrs takes positive numbers, e.g. 0.003,0.01; got 0.01,-1"),
    ("--lrs=fast", 1, "--lrs takes positive numbers, e.g. 0.003,0.01; got fast"),
    ("--momentum_dtype=float16", 1,
     "--momentum_dtype is 'float16'; it must be float32 or bfloat16"),
])
def test_numbers_out_of_range_are_refused_before_any_work(flag, status, message, capsys,
                                                          tmp_path, monkeypatch):
    from vitbench import cli

    monkeypatch.setattr(running, "execute", lambda *a: pytest.fail("a run started"))
    assert cli.main(["run", flag, f"--results_dir={tmp_path}"]) == status
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_a_run_another_process_is_training_is_left_to_it(tmp_path):
    """Processes sharing a results dir (one per GPU) claim each run: a claimed run is skipped,
    not trained twice into the same work folder; once released (its process ended) it runs."""
    suite = tasks.load_suite("demo")
    run, = plan.plan(suite, ["demo_shape"], "scratch:vit_mu8", TINY_RUN, fewshot=False)
    digest = records.config_hash(run.config(run.lr))
    logged = []
    with running.claimed(tmp_path, "demo", digest) as mine:
        with running.claimed(tmp_path, "demo", digest) as theirs:
            assert mine and not theirs
        with mock_tfds(num_examples=16):
            assert running.run_suite(suite, ["demo_shape"], "scratch:vit_mu8", TINY_RUN,
                                    tmp_path, verbose=0, log=logged.append,
                                    fewshot=False) == []
    assert logged[-1].endswith("demo_shape final lr=0.03: running or done in another "
                               "process, skipped")
    assert records.read(records.records_path(tmp_path, "demo")) == []
    with mock_tfds(num_examples=16):
        finished = running.run_suite(suite, ["demo_shape"], "scratch:vit_mu8", TINY_RUN,
                                    tmp_path, verbose=0, log=logged.append, fewshot=False)
    assert [record["config_hash"] for record in finished] == [digest]
    assert not list((tmp_path / "work" / "demo").iterdir())  # no lock or work folder left
    assert finished[0]["config"]["dataset"] == "vitbench_demo:1.*.*"  # the task's pattern
    assert finished[0]["data_version"] == "1.1.0"  # the version read
    assert finished[0]["distribution"] == "one device"


def test_a_claim_on_a_lock_file_its_holder_removed_is_made_again(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder finished (and removed it)
    locks a file no one else will find: it must claim the new file instead."""
    import builtins

    opened = []

    def open_then_holder_removes(path, *args):
        handle = builtins.open(path, *args)
        if not opened:
            pathlib.Path(path).unlink()  # the holder finished between our open and our lock
        opened.append(path)
        return handle

    monkeypatch.setattr(running, "open", open_then_holder_removes, raising=False)
    with running.claimed(tmp_path, "demo", "abc") as claimed:
        lock = tmp_path / "work" / "demo" / "abc.lock"
        assert claimed and len(opened) == 2 and lock.exists()
        monkeypatch.undo()
        with running.claimed(tmp_path, "demo", "abc") as other:
            assert not other  # the new file is the one held


def test_a_filesystem_without_locks_warns_and_runs(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*could train this run twice"):
        with running.claimed(tmp_path, "demo", "abc") as claimed:
            assert claimed


@pytest.mark.slow
def test_a_diverged_run_is_recorded_and_the_suite_goes_on(tmp_path):
    suite = tasks.load_suite("demo")
    overrides = dataclasses.replace(TINY_RUN, lrs=(1e30,))
    logged = []
    with mock_tfds(num_examples=16):
        finished = running.run_suite(suite, ["demo_shape", "demo_color"], "scratch:vit_mu8",
                                    overrides, tmp_path, verbose=0, log=logged.append,
                                    fewshot=False)
    assert [r["status"] for r in finished] == ["diverged", "diverged"]
    assert "loss became nan" in finished[0]["error"].lower()
    assert finished[0]["metrics"] == {"accuracy": None}
    assert any("diverged" in line for line in logged)
    assert len(records.read(records.records_path(tmp_path, "demo"))) == 2


@pytest.mark.slow
def test_imagenet_final_run_reports_real_accuracy(tmp_path):
    suite = tasks.load_suite("imagenet")
    overrides = dataclasses.replace(TINY_RUN, lrs=(0.01,))
    with mock_tfds(num_examples=8):
        finished = running.run_suite(suite, [], "scratch:vit_mu8", overrides, tmp_path,
                                    verbose=0, log=lambda line: None)
    metrics = finished[0]["metrics"]
    assert metrics["examples"] == 8 and metrics["real_examples"] == 8
    assert 0 <= metrics["real_accuracy"] <= 1


def test_preflight_includes_the_real_labels(tmp_path):
    from vitbench.data import sources

    suite = tasks.load_suite("imagenet")
    with pytest.raises(sources.ManualDownloadError, match="imagenet2012_real"):
        running.run_suite(suite, [], "scratch:vit_mu8", TINY_RUN, tmp_path, data_dir=str(tmp_path))


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates_and_matches(tmp_path, demo_data_dir, capsys):
    import os
    import subprocess
    import sys
    import time

    from vitbench import cli

    flags = ["--tasks=demo_color", "--steps=40", "--batch_size=8", "--resolution=16", "--nofewshot",
             f"--data_dir={demo_data_dir}", "--checkpoint_every=2"]
    reference = tmp_path / "reference"
    assert cli.main(["run", f"--results_dir={reference}"] + flags) == 0
    expected = records.read(records.records_path(reference, "demo"))[0]

    results = tmp_path / "results"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from vitbench.cli import run; run()", "run",
         f"--results_dir={results}"] + flags, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    state = results / "work" / "demo" / expected["config_hash"] / "state.json"
    deadline = time.time() + 240
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert state.exists(), "the run never saved a checkpoint"
    assert records.read(records.records_path(results, "demo")) == []  # killed before the end

    capsys.readouterr()
    assert cli.main(["run", f"--results_dir={results}"] + flags) == 0
    saved = records.read(records.records_path(results, "demo"))
    assert len(saved) == 1 and saved[0]["config_hash"] == expected["config_hash"]
    assert saved[0]["train"]["resumed_from_step"] > 0
    assert saved[0]["metrics"] == expected["metrics"]
    assert saved[0]["train"]["train_loss"] == pytest.approx(expected["train"]["train_loss"],
                                                            rel=1e-5)


@pytest.mark.slow
def test_two_devices_fine_tune_and_probe_as_one(tmp_path, demo_data_dir, capsys):
    """`vitbench run` splits every batch over the local devices (here 2 virtual CPU devices in
    a process of their own) and gets one device's numbers: loss, accuracy, few-shot."""
    import os
    import subprocess
    import sys

    from conftest import UNOPTIMISED_BACKEND

    from vitbench import cli

    flags = ["--tasks=demo_color", "--steps=6", "--batch_size=8", "--resolution=16",
             "--shots=1,5", "--checkpoint_every=3", f"--data_dir={demo_data_dir}"]
    env = {**os.environ, "KERAS_BACKEND": "jax", "VITBENCH_CACHE": str(tmp_path / "cache2"),
           "XLA_FLAGS": f"{UNOPTIMISED_BACKEND} --xla_force_host_platform_device_count=2"}
    two = tmp_path / "two"
    result = subprocess.run([sys.executable, "-c", "from vitbench.cli import run; run()", "run",
                             f"--results_dir={two}"] + flags, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training and evaluating on DataParallel over 2 devices (mesh batch=2)" in result.stdout
    one = tmp_path / "one"
    assert cli.main(["run", f"--results_dir={one}"] + flags) == 0
    [tuned_two, probe_two] = records.read(records.records_path(two, "demo"))
    [tuned_one, probe_one] = records.read(records.records_path(one, "demo"))
    assert tuned_two["distribution"] == probe_two["distribution"] == \
        "DataParallel over 2 devices (mesh batch=2)"
    assert tuned_one["distribution"] == "one device"
    assert tuned_two["config_hash"] == tuned_one["config_hash"]  # the same run, however split
    assert tuned_two["micro_batch_size"] == tuned_one["micro_batch_size"] == 8
    assert tuned_two["train"]["train_loss"] == pytest.approx(tuned_one["train"]["train_loss"],
                                                             rel=1e-4)
    assert tuned_two["metrics"]["examples"] == 500
    assert tuned_two["metrics"]["accuracy"] == pytest.approx(tuned_one["metrics"]["accuracy"],
                                                             abs=2 / 500)
    assert probe_two["features"]["computed"] == probe_one["features"]["computed"]
    for shots in ("1shot", "5shot"):
        assert probe_two["metrics"][shots] == pytest.approx(probe_one["metrics"][shots],
                                                            abs=2 / 500)


def test_a_batch_that_does_not_split_over_the_devices_is_refused(monkeypatch, capsys):
    from vitbench import cli

    monkeypatch.setattr(distribute, "replicas", lambda: 2)
    assert cli.main(["run", "--batch_size=6", "--micro_batch_size=3", "--nofewshot"]) == 1
    assert ("the batch (6) and the micro-batch (3) must split evenly over the 2 devices"
            in capsys.readouterr().err)
    assert cli.main(["run", "--batch_size=8", "--micro_batch_size=3", "--nofewshot"]) == 1
    assert "micro-batch size 3 must divide the batch size 8" in capsys.readouterr().err
    suite = tasks.load_suite("demo")
    with pytest.raises(ValueError, match="the batch \\(63\\) and the micro-batch \\(63\\)"):
        running.run_suite(suite, ["demo_color"], "scratch:vit_mu8",
                         plan.Overrides(batch_size=63), "unused")
    with pytest.raises(ValueError, match="caltech101: the batch \\(63\\)"):  # probes too
        plan.plan(tasks.load_suite("fewshot"), [], "vit_b16", plan.Overrides(batch_size=63))


def test_the_run_command_leaves_the_global_distribution_as_it_found_it():
    import keras

    from vitbench.train import distribute

    mine = keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1])
    keras.distribution.set_distribution(mine)
    try:
        with distribute.local_devices() as distribution:
            assert distribution is None and keras.distribution.distribution() is None
        assert keras.distribution.distribution() is mine
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.slow
def test_vtab1k_end_to_end_from_a_local_checkpoint_on_mock_data(tmp_path):
    # One task per group (a manual-download one and a label transform among them) keeps this
    # test short; all 19 ran the same way in 228 s when this was written.
    from vitbench.checkpoints import npz
    from vitbench.models.vit import create_model

    ckpt = str(npz.save_npz(create_model("vit_mu8", 10, 32), tmp_path / "mu8.npz"))
    suite = tasks.load_suite("vtab1k")
    chosen = ["caltech101", "resisc45", "kitti_closest_vehicle_distance"]
    overrides = plan.Overrides(steps=1, batch_size=4, resolution=16)
    with mock_tfds(num_examples=4):
        finished = running.run_suite(suite, chosen, ckpt, overrides, tmp_path, verbose=0,
                                    log=lambda line: None)
        assert len(finished) == 3 and {r["status"] for r in finished} == {"finished"}
        assert finished[0]["checkpoint"]["sha256"] and finished[0]["config"]["resolution"] == 16
        assert finished[2]["config"]["train_split"] == "train[:800]+validation[:200]"
        logged = []
        assert running.run_suite(suite, chosen, ckpt, overrides, tmp_path, verbose=0,
                                log=logged.append) == []
    assert len(logged) == 3 and all(line.endswith("skipped") for line in logged)
    from vitbench.leaderboards import publish

    publish.write_all(tmp_path)
    board = (tmp_path / "vtab1k.md").read_text()
    assert "(partial 3/19)" in board and "*ViT-H/14, JFT-300M (paper Table 9)*" in board


def out_of_memory_above(limit, tried):
    """A stand-in training step that records its micro-batch and runs out of memory above
    `limit`."""
    def step(micro):
        tried.append(micro)
        if micro > limit:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    return step


def test_auto_micro_batch_halves_until_a_step_fits():
    task = plan.Overrides(batch_size=64).apply(tasks.load_suite("demo").task("demo_color"))
    tried = []
    step = out_of_memory_above(16, tried)
    assert sizing.fitting_micro_batch("scratch:vit_mu8", task, step) == 16
    assert tried == [64, 32, 16]

    def broken(micro):
        raise ValueError("some other failure")

    with pytest.raises(ValueError, match="some other failure"):
        sizing.fitting_micro_batch("scratch:vit_mu8", task, broken)


def test_auto_micro_batch_starts_from_the_cache_sized_pass_on_a_cpu():
    if not attention.on_cpu():
        pytest.skip("cache-sized passes are a CPU's")
    # vit_mu8 at 128 px: 257 tokens, 1.06 MB of attention weights per image: passes of 16.
    task = plan.Overrides(batch_size=64, resolution=128).apply(
        tasks.load_suite("demo").task("demo_color"))
    tried = []
    step = out_of_memory_above(8, tried)
    assert sizing.fitting_micro_batch("scratch:vit_mu8", task, step) == 8
    assert tried == [16, 8]


@pytest.mark.slow
def test_auto_micro_batch_from_the_command_line(tmp_path, capsys):
    from vitbench import cli

    with mock_tfds(num_examples=16):
        assert cli.main(["run", f"--results_dir={tmp_path}", "--micro_batch_size=auto",
                         "--tasks=demo_color", "--steps=2", "--batch_size=8", "--nofewshot",
                         "--resolution=16"]) == 0
    assert "micro-batch size 8 fits (1 passes per update)" in capsys.readouterr().out
    assert cli.main(["run", "--micro_batch_size=3", "--batch_size=8"]) == 1
    assert "must divide the batch size 8" in capsys.readouterr().err
    assert cli.main(["run", "--micro_batch_size=big"]) == 1
    assert cli.main(["run", "--shots=1,five"]) == 1
    assert "--shots takes positive integers" in capsys.readouterr().err


@pytest.mark.slow
def test_a_checkpoint_head_of_the_right_size_still_starts_at_zero_without_pre_logits(tmp_path):
    """As the official fine-tuning: a zero head and no pre-logits layer for every task, also
    for a checkpoint (here with a pre-logits layer) whose head has the task's classes."""
    import numpy as np
    from conftest import randomize

    from vitbench.checkpoints import npz
    from vitbench.models.vit import create_model

    trained = randomize(create_model("vit_mu8", 4, 32, representation_size=64))
    path = npz.save_npz(trained, tmp_path / "four.npz")
    task = plan.Overrides(resolution=16).apply(tasks.load_suite("demo").task("demo_color"))
    model = transfer_models.load_for_task(str(path), task)
    assert task.num_classes == 4 and model.config.representation_size is None
    assert "pre_logits" not in [layer.name for layer in model.layers]
    assert all(np.all(np.asarray(w) == 0) for w in model.get_layer("head").weights)
    np.testing.assert_array_equal(model.get_layer("embedding").kernel,  # the rest is loaded
                                  trained.get_layer("embedding").kernel)


@pytest.mark.slow
def test_as_released_scores_the_checkpoints_own_head_without_training(tmp_path, capsys):
    """The record's accuracy is the released head's on the test split, the board shows it as
    a row of its own beside a fine-tuned row of the same checkpoint."""
    import numpy as np
    from conftest import randomize

    from vitbench import cli
    from vitbench.checkpoints import npz
    from vitbench.checkpoints.loader import load_model
    from vitbench.data import pipeline
    from vitbench.models.vit import create_model

    path = npz.save_npz(randomize(create_model("vit_mu8", 4, 16), scale=0.5),
                        tmp_path / "four.npz")
    flags = [f"--ckpt={path}", "--tasks=demo_color", "--resolution=16", "--batch_size=8",
             f"--results_dir={tmp_path}"]
    with mock_tfds(num_examples=16):
        assert cli.main(["run", "--as_released"] + flags) == 0
        assert "demo_color as released: scoring its own head as released" in \
            capsys.readouterr().out
        assert cli.main(["run", "--as_released", "--dry_run"] + flags) == 0
        printed = capsys.readouterr().out  # nothing trained, nothing timed
        assert "evaluate" in printed and "train+validation" not in printed
        assert "1 of 1 runs done; 0 training images to go\n" in printed
        task = plan.Overrides(resolution=16).apply(tasks.load_suite("demo").task("demo_color"))
        model = load_model(str(path), progress=False)
        batches = list(pipeline.as_numpy(pipeline.eval_dataset(task, "test", 8)))
        predicted = np.concatenate([np.argmax(model.predict_on_batch(b["image"]), -1)
                                    for b in batches])
        expected = np.mean(predicted == np.concatenate([b["label"] for b in batches]))
        assert cli.main(["run", "--nofewshot", "--steps=2"] + flags) == 0  # and fine-tuned
    released, tuned = records.read(records.records_path(tmp_path, "demo"))
    assert released["config"]["method"] == "evaluate" and "train" not in released
    assert released["config"]["train_split"] is None and released["config"]["seed"] == 0
    assert released["metrics"] == {"accuracy": pytest.approx(expected), "examples": 16}
    assert tuned["config"]["method"] == "finetune"
    board = (tmp_path / "demo.md").read_text()
    row = next(line for line in board.splitlines() if "(as released, px 16)" in line)
    assert f"{100 * expected:.2f}" in row
    assert sum(f"| {path.name}" in line or str(path) in line for line in board.splitlines()
               if line.startswith("| [")) == 2  # two rows: as released, and fine-tuned


@pytest.mark.parametrize("flags, message", [
    (["--ckpt=vit_b16", "--suite=imagenet"],
     "vit_b16 has a 21843-class head and imagenet2012 has 1000 classes"),
    (["--ckpt=vit_b16", "--suite=imagenet", "--dry_run"], "a 21843-class head"),
    (["--ckpt=THREE", "--tasks=demo_color"], "has a 3-class head and demo_color has 4 classes"),
    (["--ckpt=scratch:vit_mu8"], "scratch:vit_mu8 is untrained"),
    (["--ckpt=vit_b16", "--suite=fewshot"], "the chosen tasks of suite fewshot are few-shot"),
    (["--ckpt=THREE", "--steps=5", "--sweep"], "--as_released trains nothing: --steps, --sweep"),
])
def test_as_released_refuses_what_it_cannot_score_before_any_work(flags, message, capsys,
                                                                  tmp_path):
    from vitbench import cli
    from vitbench.checkpoints import npz
    from vitbench.models.vit import create_model

    three = npz.save_npz(create_model("vit_mu8", 3, 16), tmp_path / "three.npz")
    flags = [flag.replace("THREE", str(three)) for flag in flags]
    assert cli.main(["run", "--as_released", f"--results_dir={tmp_path}"] + flags) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_as_released_runs_at_the_checkpoints_published_resolution():
    suite = tasks.load_suite("imagenet")

    def resolution(ckpt, **overrides):
        [run] = plan.plan(suite, [], ckpt, plan.Overrides(as_released=True, **overrides))
        return run.method, run.config()["resolution"]

    assert resolution("vit_b16.i21k_ft_in1k") == ("evaluate", 384)
    assert resolution("vit_b16.i21k_ft_in1k_224") == ("evaluate", 224)
    assert resolution("vit_b16.i21k_ft_in1k_224", resolution=256) == ("evaluate", 256)
    from vitbench.checkpoints import npz
    from vitbench.models.vit import create_model

    with tempfile.TemporaryDirectory() as folder:  # an .npz file's grid: 6 x 6 patches of 8
        path = npz.save_npz(create_model("vit_mu8", 1000, 48), pathlib.Path(folder) / "a.npz")
        assert identity.released_head(str(path)) == (1000, 48)
        assert resolution(str(path)) == ("evaluate", 48)


def test_offline_a_checkpoint_not_in_the_cache_is_refused_before_any_work(tmp_path, monkeypatch,
                                                                          capsys):
    from vitbench import cli
    from vitbench.checkpoints import download, registry

    monkeypatch.setenv("VITBENCH_OFFLINE", "1")
    url = registry.get_checkpoint("vit_ti16.augreg_i21k").url
    for extra in ([], ["--dry_run"]):
        assert cli.main(["run", "--ckpt=vit_ti16.augreg_i21k", f"--results_dir={tmp_path}"]
                        + extra) == 1
        out, err = capsys.readouterr()
        assert f"{url} is not in the cache and VITBENCH_OFFLINE is set" in err
        assert str(download.cached_path(url)) in err and "training" not in out
    assert not (tmp_path / "runs").exists()


def test_the_dry_run_gives_a_short_plan_its_time_in_seconds(tmp_path):
    text = report.describe_plan(tasks.load_suite("demo"), ["demo_shape"], "scratch:vit_mu8",
                                plan.Overrides(), tmp_path, speed=lambda: 2000.0,
                                fewshot=False)
    assert "19,200 training images to go, about 10 s at the 2000.0 images/s" in text


def test_a_given_normalization_is_part_of_the_run_config_only_when_given():
    suite = tasks.load_suite("demo")
    plain = plan.plan(suite, ["demo_color"], "scratch:vit_mu8", TINY_RUN)
    given = plan.plan(suite, ["demo_color"], "scratch:vit_mu8",
                      dataclasses.replace(TINY_RUN, normalization="imagenet"))
    assert "normalization" not in plain[0].config()
    assert given[0].config() == {**plain[0].config(), "normalization": "imagenet"}
    assert {run.config()["normalization"] for run in given} == {"imagenet"}  # probes too
    with pytest.raises(ValueError, match="--normalization 'imagenet1k' is not one of"):
        dataclasses.replace(TINY_RUN, normalization="imagenet1k")
