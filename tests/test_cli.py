"""The `vitbench` command line: help, the zoo table, the checkpoint table, errors."""

import dataclasses
import subprocess
import sys

from vitbench import cli
from vitbench.checkpoints import download, registry
from vitbench.models import zoo


def run(capsys, *args):
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_help_lists_commands(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "models" in out and "checkpoints" in out


def test_command_help_lists_flags(capsys):
    status, out, _ = run(capsys, "models", "--help")
    assert status == 0 and "--image_size" in out and "GMACs" in out


def test_models_prints_the_official_counts(capsys):
    status, out, _ = run(capsys, "models")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("vit_")}
    assert len(rows) == len(zoo.ZOO) == 24
    assert "86,567,656" in rows["vit_b16"] and "17.56" in rows["vit_b16"]
    assert "304,326,632" in rows["vit_l16"]
    assert "632,045,800" in rows["vit_h14"]


def test_models_at_another_resolution(capsys):
    _, out, _ = run(capsys, "models", "--image_size=384", "--num_classes=10")
    row = next(line for line in out.splitlines() if line.startswith("vit_b16 "))
    assert " 577 " in row  # 24 x 24 patches + class token
    h14 = next(line for line in out.splitlines() if line.startswith("vit_h14 "))
    assert " 730 " in h14  # 27 x 27 whole patches of 14 px + class token
    assert "patch sizes [14]: 384 px is not a multiple" in out
    # Models whose patch is larger than the image are left out, not the whole table refused.
    status, out, _ = run(capsys, "models", "--image_size=16")
    names = {line.split()[0] for line in out.splitlines() if line.startswith("vit_")}
    assert status == 0 and names == {name for name, config in zoo.ZOO.items()
                                     if config.patch_size <= 16} and "vit_mu8" in names
    assert "patch sizes [32]" in out and "patch sizes [14]: 16 px" in out
    status, _, err = run(capsys, "models", "--image_size=4")
    assert status == 1 and "the smallest patch is 8 px" in err


def test_checkpoints_shows_what_is_cached(capsys):
    entry = registry.get_checkpoint("vit_b16.i21k_ft_in1k")
    path = download.cached_path(entry.url)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    status, out, _ = run(capsys, "checkpoints")
    assert status == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("vit_")}
    assert len(rows) == len(registry.known_checkpoints())
    assert rows["vit_b16.i21k_ft_in1k"][-2] == "yes" and rows["vit_b16.i21k"][-2] == "no"
    assert entry.url in out


def test_checkpoints_filtered_by_model(capsys):
    _, out, _ = run(capsys, "checkpoints", "--model=vit_h14")
    assert [line.split()[0] for line in out.splitlines() if line.startswith("vit_")] == \
        ["vit_h14.i21k"]


def test_unknown_command_and_flag_and_model(capsys):
    status, _, err = run(capsys, "fly")
    assert status == 2
    assert ("commands: demo, run, pretrain, leaderboard, compare, models, checkpoints, tasks, "
            "bench") in err
    status, _, err = run(capsys, "models", "--size=3")
    assert status == 2 and "Unknown command line flag 'size'" in err
    assert "`vitbench models --help` lists its flags" in err and "--image_size" not in err
    status, out, err = run(capsys, "run", "vtab1k", "--dry_run")  # not the demo suite's plan
    assert status == 2 and not out
    assert "unexpected argument vtab1k: every setting is a flag, as in --name=value" in err
    status, _, err = run(capsys, "checkpoints", "--model=vit_q9")
    assert status == 1 and "known models: vit_mu32" in err


def test_ctrl_c_ends_a_command_without_a_traceback(capsys, monkeypatch):
    from vitbench import commands

    def interrupted(flag_values):
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.COMMANDS, "models", dataclasses.replace(
        commands.COMMANDS["models"], run=interrupted))
    status, _, err = run(capsys, "models")
    assert status == 130 and err.strip() == "vitbench models: interrupted"


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-c", "from vitbench.cli import run; run()",
                             "--help"], capture_output=True, text=True, check=True)
    assert "usage: vitbench" in result.stdout


def test_tasks_lists_suites(capsys):
    status, out, _ = run(capsys, "tasks")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert rows["vtab1k"].split()[1] == "19" and "demo" in rows


def test_tasks_of_a_suite_with_data_status(capsys, tmp_path):
    status, out, _ = run(capsys, "tasks", "--suite=vtab1k", f"--data_dir={tmp_path}")
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("c", "r", "d"))}
    assert rows["caltech101"].endswith("will download")
    assert rows["resisc45"].endswith("needs manual files")
    assert "train[:800]+train[2754:2954]" in rows["caltech101"]
    assert f"Put its files in {tmp_path}/downloads/manual" in out
    _, out, _ = run(capsys, "tasks", "--suite=demo", f"--data_dir={tmp_path}")
    assert "will generate" in out and "to do before" not in out


def test_tasks_unknown_suite(capsys):
    status, _, err = run(capsys, "tasks", "--suite=vtab")
    assert status == 1 and "Did you mean vtab1k" in err
