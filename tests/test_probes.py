"""Linear and kNN probes of frozen features: the VPT protocol's suite as the spec gives it,
and both methods end to end on the demo data, recorded, resumed and on one board."""

import dataclasses

import numpy as np
import pytest

from vitbench import cli, records, tasks

# ../shared/spec/peft_protocols.md, section 1: VPT's protocol (KMnP/vpt `tune_vtab.py`).
VPT_LINEAR_LRS = (50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05)
VPT_WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0)
VPT_SEEDS = (42, 44, 82, 100, 800)


def test_the_vpt_suite_is_vtab1k_under_the_vpt_protocol():
    vpt, vtab = tasks.load_suite("vtab1k_vpt"), tasks.load_suite("vtab1k")
    data = ("name", "group", "dataset", "version", "num_classes", "splits", "label",
            "image_ops")
    assert [[getattr(t, f) for f in data] for t in vpt.tasks] == \
        [[getattr(t, f) for f in data] for t in vtab.tasks]
    for task in vpt.tasks:
        p = vpt.with_method(task, "linear").protocol
        assert (p.name, p.resolution, p.epochs, p.warmup_epochs) == ("vpt", 224, 100, 10)
        assert p.train_pp == p.eval_pp == "resize({resolution})|value_range(-1, 1)"
        assert (task.split("tune_train"), task.split("tune_val")) == (
            task.splits["train800"], task.splits["val200"])
        assert task.split("fit") == task.splits["train800val200"]
        assert (p.lrs, p.weight_decays, p.final_seeds, p.batch_size) == (
            VPT_LINEAR_LRS, VPT_WEIGHT_DECAYS, VPT_SEEDS, 1024)
        k = vpt.with_method(task, "knn").protocol
        assert (k.neighbours, k.temperature) == ((10, 20, 100, 200), 0.07)


def test_a_method_the_protocol_does_not_implement_is_refused(capsys):
    """Heads scored as released are the ViT protocol's (VPT's code trains every head)."""
    assert cli.main(["run", "--suite=vtab1k_vpt", "--ckpt=vit_b16", "--method=finetune",
                     "--as_released", "--dry_run"]) == 1
    assert "method evaluate is not implemented under the vpt protocol of suite vtab1k_vpt; " \
           "its methods: finetune, linear, knn" in capsys.readouterr().err
    assert cli.main(["run", "--method=knn", "--as_released"]) == 1
    assert "does not combine with --method knn" in capsys.readouterr().err


@pytest.mark.slow
def test_linear_and_knn_probes_run_on_the_demo_data_under_vpt_and_share_one_board(tmp_path,
                                                                         demo_data_dir, capsys):
    from vitbench.evaluate import outcomes

    flags = ["run", "--suite=demo_vpt", f"--results_dir={tmp_path}",
             f"--data_dir={demo_data_dir}", "--tasks=demo_shape", "--resolution=16"]
    assert cli.main(flags + ["--method=linear"]) == 0
    assert cli.main(flags + ["--method=knn"]) == 0
    out = capsys.readouterr().out
    assert "training 40 linear heads on frozen features, then 5 seeds of the best" in out
    linear, knn = records.read(records.records_path(tmp_path, "demo_vpt"))
    assert (linear["config"]["method"], knn["config"]["method"]) == ("linear", "knn")
    assert linear["config"]["features"] == knn["config"]["features"] == "pool"
    assert linear["config"]["head_seeds"] == list(VPT_SEEDS)
    # The kNN probe reads the features the linear probe extracted: no forward pass. Neither
    # embeds the fit split (train+validation): it is the tune splits joined.
    assert linear["features"]["computed"] == ["tune_train", "tune_val", "test"]
    assert knn["features"]["computed"] == []
    # Each head seed's test predictions are kept and give its accuracy.
    predicted = outcomes.read(tmp_path, linear["outcomes"])
    labels_hash = linear["outcomes"]["labels_sha256"]
    assert sorted(predicted) == sorted(f"test/seed{s}" for s in VPT_SEEDS)
    accuracies = linear["metrics"]["seeds"]["accuracy"]
    assert np.mean(accuracies) == pytest.approx(linear["metrics"]["accuracy"])
    correct = outcomes.read_correct(tmp_path, linear["outcomes"])
    assert [np.mean(correct[f"test/seed{s}"]) for s in VPT_SEEDS] == pytest.approx(accuracies)
    assert knn["outcomes"]["labels_sha256"] == labels_hash
    assert knn["metrics"]["k"] in (10, 20, 100, 200)
    assert knn["metrics"]["by_k"][str(knn["metrics"]["k"])] == knn["metrics"]["accuracy"]
    board = (tmp_path / "demo_vpt.md").read_text()
    assert "scratch:vit_mu8 (linear probe" in board and "scratch:vit_mu8 (kNN" in board
    # Recorded runs are not redone.
    assert cli.main(flags + ["--method=linear"]) == 0
    assert "0 runs finished" in capsys.readouterr().out


def test_probe_configs_hold_what_decides_their_number():
    from vitbench.transfer import plan

    vpt = tasks.load_suite("vtab1k_vpt")
    [run] = plan.plan(vpt, ["dtd"], "vit_b16", plan.Overrides(normalization="imagenet"))
    config = run.config()
    assert (config["method"], config["protocol"], config["normalization"]) == (
        "linear", "vpt", "imagenet")
    assert config["tune_splits"] == ["train[:800]", "validation[:200]"]
    assert config["train_split"] == "train[:800]+validation[:200]"
    [knn] = plan.plan(vpt, ["dtd"], "vit_b16", plan.Overrides(method="knn"))
    assert knn.config()["neighbours"] == [10, 20, 100, 200]
    again = dataclasses.replace(run, task=dataclasses.replace(
        run.task, protocol=dataclasses.replace(run.task.protocol, weight_decays=(0.0,))))
    assert records.config_hash(again.config()) != records.config_hash(config)


def test_the_vpt_board_shows_the_published_rows_of_its_protocol_only(tmp_path):
    """A linear probe of vit_b16 (the paper's ViT-B/16 on ImageNet-21k) on vtab1k_vpt gets its
    delta to VPT's linear row; the published VPT-protocol rows are on that board, labelled
    with their method and source, and on no other."""
    from test_leaderboards import GENERATED, rows_by_checkpoint, write_records

    from vitbench.leaderboards import publish
    from vitbench.transfer import plan

    vpt = tasks.load_suite("vtab1k_vpt")
    lines = []
    for run in plan.plan(vpt, [], "vit_b16", plan.Overrides()):
        config = run.config()
        lines.append({"config_hash": records.config_hash(config), "config": config,
                      "status": "finished", "metrics": {"accuracy": 0.5, "lr": 1.0,
                                                        "weight_decay": 0.0,
                                                        "validation": {"1/0": 0.5}}})
    write_records(tmp_path, "vtab1k_vpt", lines)
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "vtab1k_vpt.md").read_text())
    ours = rows["vit_b16 (linear probe)"]
    assert ours["CIFAR-100"] == "50.00 (Δ -13.40)"  # VPT's linear CIFAR-100: 63.4
    assert ours["Mean"] == f"50.00 (Δ {50 - 52.94:+.2f})"  # its 19-task mean, 52.94 (spec 3b)
    assert ours["Mean of group means"] == f"50.00 (Δ {50 - 57.64:+.2f})"
    linear = rows["*ViT-B/16, ImageNet-21k, linear probe (VPT paper Table 13)*"]
    assert (linear["CIFAR-100"], linear["Mean"]) == ("63.40", "52.94")
    deep = rows["*ViT-B/16, ImageNet-21k, VPT-deep (VPT paper Table 13)*"]
    assert (deep["Mean"], deep["Mean of group means"]) == ("69.43", "71.97")
    mae = rows["*ViT-B/16, MAE in1k (mae_pretrain_vit_base.pth), linear probe (VPT paper "
               "Table 4)*"]
    assert mae["Caltech101"] == "–" and mae["Natural mean"] != "–"  # printed means only
    assert not any("NOAH" in label or "VTAB paper" in label for label in rows)
    from test_leaderboards import record

    write_records(tmp_path / "vit", "vtab1k", [record("vtab1k", "dtd", 0.5, ckpt="vit_b16")])
    publish.write_all(tmp_path / "vit", generated=GENERATED)
    vit_rows = rows_by_checkpoint((tmp_path / "vit" / "vtab1k.md").read_text())
    assert not any("VPT" in label for label in vit_rows)  # the ViT protocol's board
    assert "*ViT-H/14, JFT-300M (paper Table 9)*" in vit_rows


def test_the_dry_run_says_what_each_probe_does(capsys):
    assert cli.main(["run", "--suite=vtab1k_vpt", "--ckpt=scratch:vit_ti16", "--dry_run",
                     "--tasks=dtd"]) == 0
    out = capsys.readouterr().out
    assert "40 heads x 100 epochs, 5 seeds" in out and "1 probe(s) of frozen features" in out
    assert cli.main(["run", "--suite=vtab1k_vpt", "--ckpt=scratch:vit_ti16", "--dry_run",
                     "--tasks=dtd", "--method=knn"]) == 0
    assert "k 10,20,100,200" in capsys.readouterr().out
