"""Full fine-tuning under the VPT protocol: the suite, the plan and the configs as the spec
gives them, VPT's epoch schedule, AdamW against torch's, and the method end to end on the
demo data."""

import dataclasses
import math

import keras
import numpy as np
import pytest

from vitbench import cli, records, tasks
from vitbench.train import finetune_config, optimizers
from vitbench.train.schedules import EpochWarmupCosine, epoch_factor
from vitbench.transfer import plan

# ../shared/spec/peft_protocols.md, sections 1 and 2.6 (KMnP/vpt tune_vtab.py, configs).
VPT_FINETUNE_LRS = (0.001, 0.0001, 0.0005, 0.005)
VPT_WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0)
VPT_SEEDS = (42, 44, 82, 100, 800)


def vpt_runs(task="dtd", **overrides):
    return plan.plan(tasks.load_suite("vtab1k_vpt"), [task], "vit_b16",
                     plan.Overrides(method="finetune", **overrides))


def test_the_plan_is_vpts_grid_then_five_seeds():
    """16 tune runs of seed 42 on train800 (7 updates an epoch of batch 128), then the five
    seeds on train800val200 (8 an epoch), 100 epochs with 10 of warm-up."""
    runs = vpt_runs()
    tunes, finals = runs[:16], runs[16:]
    p = tunes[0].task.protocol
    assert (sorted(p.lrs), sorted(p.weight_decays)) == (sorted(VPT_FINETUNE_LRS),
                                                        sorted(VPT_WEIGHT_DECAYS))
    assert (p.batch_size, p.epochs, p.warmup_epochs) == (128, 100, 10)
    assert sorted((r.lr, r.weight_decay) for r in tunes) == sorted(
        (lr, wd) for lr in VPT_FINETUNE_LRS for wd in VPT_WEIGHT_DECAYS)
    assert {(r.phase, r.seed, r.schedule) for r in tunes} == {("tune", 42, (700, 70))}
    assert [(r.phase, r.seed, r.lr, r.schedule) for r in finals] == [
        ("final", seed, None, (800, 80)) for seed in VPT_SEEDS]
    config = tunes[0].config()
    assert config["train_split"] == "train[:800]"
    assert config["eval_split"] == "validation[:200]"
    assert finals[0].config(0.001)["train_split"] == "train[:800]+validation[:200]"
    assert {key: config[key] for key in (
        "protocol", "lr_scaling", "optimizer", "grad_clip_norm", "schedule", "dropout",
        "head_init", "steps_per_epoch", "tune_seed")} == {
        "protocol": "vpt", "lr_scaling": "batch/256",
        "optimizer": "adamw(beta_1=0.9, beta_2=0.999, epsilon=1e-06)", "grad_clip_norm": None,
        "schedule": "epoch_warmup_cosine", "dropout": 0.1,
        "head_init": "kaiming_normal(fan_out)", "steps_per_epoch": 7, "tune_seed": 42}
    assert config["train_pp"] == "decode|resize(224)|value_range(-1, 1)|keep('image', 'label')"


def test_the_protocols_seeds_and_epochs_are_not_overridden_by_the_vit_flags():
    with pytest.raises(ValueError, match="fixes its seeds.*--seed and --repeats do not apply"):
        vpt_runs(repeats=2)
    with pytest.raises(ValueError, match="counts epochs: --steps do not apply"):
        vpt_runs(steps=10)
    shorter = vpt_runs(epochs=4, warmup_epochs=1, lrs=(0.001,), weight_decays=(0.0,))
    assert [(r.phase, r.lr, r.weight_decay, r.schedule) for r in shorter] == [
        ("final", 0.001, 0.0, (32, 8))] * 5  # one setting: no tune runs
    with pytest.raises(ValueError, match="--as_released scores a checkpoint's head on "
                                         "fine-tuning tasks; suite vtab1k_vpt runs dtd with "
                                         "method linear"):
        plan.plan(tasks.load_suite("vtab1k_vpt"), ["dtd"], "vit_b16",
                  plan.Overrides(as_released=True))


def test_a_final_run_takes_the_best_rate_and_decay_ties_to_the_smaller():
    """As VPT's find_best_lrwd on the last epoch's val200 top-1; on a tie the smaller rate,
    then the smaller decay, whatever the grid's order."""
    runs = vpt_runs()
    tunes, final = runs[:16], runs[16]
    scores = {(r.lr, r.weight_decay): 0.5 for r in tunes}
    scores.update({(0.005, 0.01): 0.7, (0.0005, 0.001): 0.7, (0.0005, 0.0001): 0.7})
    done = {records.config_hash(r.config()): {"metrics": {"accuracy": scores[(r.lr,
                                                                           r.weight_decay)]}}
            for r in tunes}
    chosen = plan.resolve(final, done)
    assert (chosen.lr, chosen.weight_decay, chosen.seed) == (0.0005, 0.0001, 42)
    # Every seed's final run reads the tune runs of seed 42.
    assert (plan.resolve(runs[-1], done).lr, plan.resolve(runs[-1], done).seed) == (0.0005, 800)
    assert not plan.is_done(final, done)
    del done[records.config_hash(tunes[3].config())]
    assert plan.resolve(final, done) is None


def test_the_rate_holds_for_each_epoch_as_vpts_scheduler_steps():
    """KMnP/vpt WarmupCosineSchedule, stepped once per epoch: epoch 0 at rate 0, e/w during
    the warm-up, then a cosine to 0; the same under gradient accumulation."""
    epochs, warmup, per_epoch = 6, 2, 3
    expected = [0.0, 0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                0.5 * (1 + math.cos(3 * math.pi / 4))]
    assert [epoch_factor(e, epochs, warmup) for e in range(epochs)] == pytest.approx(expected)
    for accumulation in (1, 4):
        schedule = EpochWarmupCosine(0.1, epochs, warmup, per_epoch, accumulation)
        rates = [float(schedule(step * accumulation + accumulation - 1))
                 for step in range(epochs * per_epoch)]
        assert rates == pytest.approx([0.1 * f for f in expected for _ in range(per_epoch)])
    restored = EpochWarmupCosine.from_config(schedule.get_config())
    assert float(restored(7 * 4)) == pytest.approx(float(schedule(7 * 4)))


def test_adamw_equals_torchs_with_biases_and_layernorms_exempt_from_decay():
    """vitbench's AdamW (decay_vectors=False: what VPT-protocol fine-tuning trains with)
    against torch.optim.AdamW with the 1-axis parameters in a group of their own with no
    decay: the same weights after five updates, the kernels decayed, the biases not."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5),
                              keras.layers.LayerNormalization(epsilon=1e-6),
                              keras.layers.Dense(3)])
    initial = [np.asarray(w) for w in model.get_weights()]
    config = finetune_config.TrainConfig(lr=0.05, steps=5, batch_size=8, micro_batch_size=8,
                                         optimizer="adamw", weight_decay=0.3,
                                         grad_clip_norm=None, steps_per_epoch=1)
    optimizer = finetune_config.make_optimizer(config)
    model.compile(optimizer=optimizer, loss="mse")
    for _ in range(5):
        model.train_on_batch(x, y)

    parameters = [torch.nn.Parameter(torch.tensor(w)) for w in initial]
    oracle = torch.optim.AdamW(
        [{"params": [p for p in parameters if p.ndim > 1], "weight_decay": 0.3},
         {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0}],
        lr=0.05, betas=(0.9, 0.999), eps=1e-6)
    kernel1, bias1, gamma, beta, kernel2, bias2 = parameters
    inputs, targets = torch.tensor(x), torch.tensor(y)
    for step in range(5):  # the rate of each update: one epoch each, no warm-up
        for group in oracle.param_groups:
            group["lr"] = 0.05 * epoch_factor(step, 5, 0)
        oracle.zero_grad()
        hidden = torch.nn.functional.layer_norm(inputs @ kernel1 + bias1, (5,), gamma, beta,
                                                eps=1e-6)
        loss = ((hidden @ kernel2 + bias2 - targets) ** 2).mean()
        loss.backward()
        oracle.step()
    for ours, theirs in zip(model.get_weights(), parameters):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert optimizers.AdamW.from_config(optimizer.get_config()).decay_vectors is False


@pytest.mark.slow
def test_vpt_fine_tuning_runs_on_the_demo_data_and_lands_on_its_board(tmp_path, demo_data_dir,
                                                                       capsys):
    """`--suite demo_vpt --method finetune`: the grid's tune runs with seed 42, the chosen
    setting retrained with each final seed, recorded with the settings that decide the
    number, on the suite's board, and not redone."""
    flags = ["run", "--suite=demo_vpt", "--method=finetune", f"--results_dir={tmp_path}",
             f"--data_dir={demo_data_dir}", "--tasks=demo_shape", "--resolution=16",
             "--epochs=2", "--warmup_epochs=1", "--lrs=0.01"]
    assert cli.main(flags) == 0
    out = capsys.readouterr().out
    assert "training 26 steps of 64 (2 epochs)" in out  # 800 images: 13 updates an epoch
    written = records.read(records.records_path(tmp_path, "demo_vpt"))
    tunes = [r for r in written if r["config"]["phase"] == "tune"]
    finals = [r for r in written if r["config"]["phase"] == "final"]
    assert sorted(r["config"]["weight_decay"] for r in tunes) == [0, 0.01]
    assert {r["config"]["seed"] for r in tunes} == {42}
    assert [r["config"]["seed"] for r in finals] == [42, 44]
    best = max(tunes, key=lambda r: (r["metrics"]["accuracy"], -r["config"]["weight_decay"]))
    assert {r["config"]["weight_decay"] for r in finals} == {best["config"]["weight_decay"]}
    assert {(r["config"]["steps"], r["config"]["steps_per_epoch"]) for r in finals} == {(32, 16)}
    assert all(r["config"]["protocol"] == "vpt" and r["outcomes"] for r in finals)
    board = (tmp_path / "demo_vpt.md").read_text()
    mean = np.mean([100 * r["metrics"]["accuracy"] for r in finals])
    row = next(line for line in board.splitlines() if "| scratch:vit_mu8 (" in line)
    assert f"{mean:.2f}" in row
    assert "validation accuracy by lr, wd" in board and "seed 42: 0.01 (wd 0) →" in board
    assert cli.main(flags) == 0
    assert "0 runs finished" in capsys.readouterr().out


def test_the_dry_run_counts_the_epochs_images(capsys):
    assert cli.main(["run", "--suite=vtab1k_vpt", "--ckpt=scratch:vit_ti16", "--dry_run",
                     "--method=finetune", "--tasks=dtd"]) == 0
    out = capsys.readouterr().out
    # 16 tune runs of 700 x 128 images and 5 final runs of 800 x 128
    assert f"{16 * 700 * 128 + 5 * 800 * 128:,} training images to go" in out
    assert "best of tune" in out and " wd " in out


def test_the_model_starts_as_vpts():
    """A Kaiming fan-out head drawn from the run's seed (VPT's `MLP` head) and dropout 0.1."""
    from vitbench.transfer.methods import FineTune

    run = dataclasses.replace(vpt_runs()[16], ckpt="scratch:vit_mu8", lr=0.001,
                              weight_decay=0.0)
    model = FineTune._model(run)
    kernel = np.asarray(model.get_layer("head").kernel)
    assert kernel.std() == pytest.approx(math.sqrt(2 / 47), rel=0.1)
    assert model.config.dropout == 0.1
    import random

    random.random()  # whatever else the process drew: the dropout streams are the seed's
    again = FineTune._model(run)
    np.testing.assert_array_equal(np.asarray(again.get_layer("head").kernel), kernel)
    streams = [[np.asarray(v) for v in m.variables if "seed_generator" in v.path]
               for m in (model, again)]
    assert streams[0] and all(np.array_equal(a, b) for a, b in zip(*streams))


def test_vpt_fine_tuning_rows_get_their_delta_to_vpts_full_row(tmp_path):
    """Final runs of vit_b16 (the paper's ViT-B/16 on ImageNet-21k) on vtab1k_vpt sit beside
    VPT's published Full row with their deltas, as the linear probe's sit beside Linear's."""
    from test_leaderboards import GENERATED, rows_by_checkpoint, write_records

    from vitbench.leaderboards import publish

    lines = []
    for run in plan.plan(tasks.load_suite("vtab1k_vpt"), [], "vit_b16",
                         plan.Overrides(method="finetune", lrs=(0.001,),
                                        weight_decays=(0.0,))):
        config = run.config()
        head = 769 * run.task.num_classes  # ViT-B/16's backbone: 85,798,656 (spec 2.6)
        lines.append({"config_hash": records.config_hash(config), "config": config,
                      "status": "finished", "metrics": {"accuracy": 0.5},
                      "trainable_parameters": {"total": 85_798_656 + head, "head": head}})
    write_records(tmp_path, "vtab1k_vpt", lines)
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "vtab1k_vpt.md").read_text())
    ours = rows["vit_b16"]
    assert ours["Params (M)"] == "85.8"
    assert ours["CIFAR-100"].startswith("50.00") and "(Δ -18.90)" in ours["CIFAR-100"]
    assert f"(Δ {50 - 65.57:+.2f})" in ours["Mean"]  # Full's 19-task mean (spec 3b)
    assert f"(Δ {50 - 68.97:+.2f})" in ours["Mean of group means"]
    full = rows["*ViT-B/16, ImageNet-21k, full fine-tuning (VPT paper Table 13)*"]
    assert (full["CIFAR-100"], full["Mean"]) == ("68.90", "65.57")
