"""Leaderboards: hand-made record files in, exact tables out."""

import json

import numpy as np
import pandas as pd
import pytest

from vitbench import records, tasks
from vitbench.leaderboards import publish

GENERATED = "2026-01-01 00:00 UTC"


def record(suite, task, accuracy, *, ckpt="vit_b16", lr=0.01, phase="final", seed=0,
           status="finished", sha256=None, **overrides):
    """A run record as the runner writes it (the fields the leaderboards read)."""
    protocol = tasks.load_suite(suite).task(task).protocol
    config = {"suite": suite, "task": task, "ckpt": ckpt, "ckpt_sha256": sha256,
              "precision": "float32", "phase": phase, "lr": lr, "steps": protocol.steps,
              "batch_size": protocol.batch_size,
              "warmup_steps": min(protocol.warmup_steps, protocol.steps),
              "resolution": protocol.resolution, "seed": seed, "polyak": protocol.polyak,
              "momentum_dtype": protocol.momentum_dtype, "update_rule": "optax",
              "train_split": "train", "eval_split": "test"}
    config.update(overrides)
    metrics = {"accuracy": accuracy}
    if isinstance(accuracy, dict):
        metrics = accuracy
    return {"config_hash": records.config_hash(config), "config": config, "status": status,
            "metrics": metrics if status == "finished" else {"accuracy": None},
            "precision": "float32"}


def write_records(results_dir, suite, lines):
    path = records.records_path(results_dir, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def table(markdown: str):
    """The first markdown table of a page as a list of {header: cell} dicts."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
            for line in lines[2:] if not line.startswith("|:")]


def rows_by_checkpoint(markdown):
    rows = table(markdown.split("## Hyper-parameters")[0])
    return {row["checkpoint"]: row for row in rows}


def test_demo_board_selects_dedupes_averages_and_marks_partial_rows(tmp_path):
    lines = [
        # a: complete; colour run twice with the same config (--force): the later one counts
        record("demo", "demo_count", 0.50, ckpt="a"),
        record("demo", "demo_shape", 0.60, ckpt="a"),
        record("demo", "demo_color", 0.10, ckpt="a"),
        record("demo", "demo_color", 0.70, ckpt="a"),
        # position: two seeds, averaged
        record("demo", "demo_position", 0.80, ckpt="a", seed=0),
        record("demo", "demo_position", 0.90, ckpt="a", seed=1),
        # b: a sweep on shape; the final at the best validation rate (0.003) counts, not the
        # better test number at 0.03; count is missing
        record("demo", "demo_shape", 0.40, ckpt="b", lr=0.001, phase="tune"),
        record("demo", "demo_shape", 0.90, ckpt="b", lr=0.003, phase="tune"),
        record("demo", "demo_shape", 0.50, ckpt="b", lr=0.03, phase="tune"),
        record("demo", "demo_shape", 0.75, ckpt="b", lr=0.003),
        record("demo", "demo_shape", 0.99, ckpt="b", lr=0.03),
        record("demo", "demo_color", 0.0, ckpt="b", status="diverged"),
        record("demo", "demo_position", 0.25, ckpt="b"),
        record("demo", "demo_position", 0.0, ckpt="b", seed=1, status="diverged"),
        # a again, with fewer steps than the protocol: a row of its own
        record("demo", "demo_count", 0.30, ckpt="a", steps=10),
    ]
    write_records(tmp_path, "demo", lines)
    written = publish.write_all(tmp_path, generated=GENERATED)
    assert sorted(path.name for path in written) == ["demo.csv", "demo.md"]
    page = (tmp_path / "demo.md").read_text()
    assert f"Generated {GENERATED} by `vitbench leaderboard` from `runs/demo.jsonl` " \
           f"({len(lines)} records)" in page
    rows = rows_by_checkpoint(page)
    assert list(rows) == ["a", "b", "a (steps 10)"]  # complete rows first
    assert rows["a"] == {"#": "[1](#run-1)", "checkpoint": "a", "Count": "50.00",
                         "Shape": "60.00", "Colour": "70.00", "Position": "85.00",
                         "Mean": "66.25", "missing": ""}
    assert rows["b"]["Shape"] == "75.00" and rows["b"]["Colour"] == "diverged"
    assert rows["b"]["Position"] == "25.00 (1 of 2 seeds diverged)"  # the mean of the others
    assert rows["b"]["Mean"] == "50.00 (partial 2/4)"
    assert rows["b"]["missing"] == "Count, Colour"
    assert rows["a (steps 10)"]["Mean"] == "30.00 (partial 1/4)"
    # the details link each row to the learning rates selected
    assert '<a id="run-2"></a>' in page
    assert "0.001 → 40.00, 0.003 → 90.00, 0.03 → 50.00" in page

    numbers = pd.read_csv(tmp_path / "demo.csv")
    a = numbers[numbers["row"] == "a"].iloc[0]
    assert a["Mean"] == pytest.approx(66.25) and a["Position seeds"] == 2
    assert a["Mean tasks"] == 4


def test_shortened_tune_runs_select_on_their_final_runs_row_and_say_so(tmp_path):
    """VTAB-1k's tune runs (a fifth of the steps) keep the protocol's steps in their config,
    so they choose the final run of the default row; the details name the fraction."""
    tune = {"phase": "tune", "tune_fraction": 0.2}
    write_records(tmp_path, "vtab1k", [
        record("vtab1k", "dtd", 0.30, lr=0.001, **tune),
        record("vtab1k", "dtd", 0.70, lr=0.01, **tune),
        record("vtab1k", "dtd", 0.60, lr=0.001),
        record("vtab1k", "dtd", 0.65, lr=0.01)])
    publish.write_all(tmp_path, generated=GENERATED)
    page = (tmp_path / "vtab1k.md").read_text()
    assert rows_by_checkpoint(page)["vit_b16"]["DTD"] == "65.00"
    assert "seed 0 (tune runs 0.2 of the steps): 0.001 → 30.00, 0.01 → 70.00" in page


def test_runs_of_keras_momentum_rule_keep_a_row_of_their_own(tmp_path):
    """Records made before vitbench took the official update name no `update_rule`: they stay
    readable, on a row of their own, never averaged with runs of the official update."""
    old = record("vtab1k", "dtd", 0.40, lr=0.01)
    del old["config"]["update_rule"], old["config"]["momentum_dtype"]
    old["config_hash"] = records.config_hash(old["config"])
    write_records(tmp_path, "vtab1k", [old, record("vtab1k", "dtd", 0.65, lr=0.01)])
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "vtab1k.md").read_text())
    assert rows["vit_b16"]["DTD"] == "65.00"
    assert rows["vit_b16 (Keras momentum rule, before 2026-12)"]["DTD"] == "40.00"


KITTI = "kitti_closest_vehicle_distance"


def test_cells_carry_the_95_percent_interval_of_their_runs_outcomes(tmp_path):
    """One seed: the Wilson interval on its items; two seeds: seed and item parts together,
    from the outcomes files; a record without one (older): from accuracy and test size, ‡."""
    from vitbench.evaluate import outcomes, statistics

    labels = np.zeros(711, int)
    rng = np.random.default_rng(0)
    right = [rng.uniform(size=711) < p for p in (0.70, 0.66)]

    def scored(seed, correct, ckpt="a"):
        line = record("vtab1k", KITTI, float(correct.mean()), seed=seed, ckpt=ckpt)
        line["metrics"]["examples"] = 711
        line["outcomes"] = outcomes.write(tmp_path, "vtab1k", line["config_hash"],
                                          {"test": (~correct).astype(int)}, labels)
        return line

    old = record("vtab1k", KITTI, 0.7, ckpt="old")
    old["metrics"]["examples"] = 711
    write_records(tmp_path, "vtab1k", [scored(0, right[0]), scored(0, right[0], "b"),
                                       scored(1, right[1], "b"), old])
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "vtab1k.md").read_text())
    low, high = statistics.wilson(int(right[0].sum()), 711)
    assert rows["a"]["KITTI-Dist"] == f"{100 * right[0].mean():.2f} ± {50 * (high - low):.2f}"
    both = statistics.accuracy_estimate(np.stack(right))
    assert rows["b"]["KITTI-Dist"] == f"{100 * both.mean:.2f} ± {50 * (both.high - both.low):.2f}"
    low, high = statistics.wilson(498, 711)
    assert rows["old"]["KITTI-Dist"] == f"70.00 ± {50 * (high - low):.2f}‡"
    csv = pd.read_csv(tmp_path / "vtab1k.csv").set_index("row")
    assert csv.loc["b", "KITTI-Dist low"] == pytest.approx(100 * both.low, abs=1e-4)
    assert csv.loc["b", "KITTI-Dist high"] == pytest.approx(100 * both.high, abs=1e-4)


def test_means_carry_an_interval_summing_their_tasks_variances_with_the_means_weights(
        tmp_path):
    """Each task is trained and scored apart: the variance of a weighted mean is the sum of
    its tasks' variances times the squared weights; both VTAB means get one."""
    from vitbench.evaluate import outcomes, statistics
    from vitbench.leaderboards import intervals

    suite = tasks.load_suite("vtab1k")
    rng = np.random.default_rng(1)
    lines, estimates = [], {}
    for task in suite.tasks:
        examples = 200 + 50 * len(lines)
        right = rng.uniform(size=examples) < 0.5 + 0.02 * len(lines)
        line = record("vtab1k", task.name, float(right.mean()), ckpt="a")
        line["metrics"]["examples"] = examples
        line["outcomes"] = outcomes.write(tmp_path, "vtab1k", line["config_hash"],
                                          {"test": (~right).astype(int)},
                                          np.zeros(examples, int))
        lines.append(line)
        estimates[task.display_name] = statistics.accuracy_estimate(right)
    write_records(tmp_path, "vtab1k", lines)
    publish.write_all(tmp_path, generated=GENERATED)
    ours = rows_by_checkpoint((tmp_path / "vtab1k.md").read_text())["a"]
    csv = pd.read_csv(tmp_path / "vtab1k.csv").set_index("row").loc["a"]
    groups = {}
    for task in suite.tasks:
        groups.setdefault(task.group, []).append(task.display_name)
    weights = {"Mean": {t: 1 / 19 for g in groups.values() for t in g},
               "Mean of group means": {t: 1 / (3 * len(g)) for g in groups.values() for t in g}}
    for header, weight in weights.items():
        mean = sum(w * estimates[t].mean for t, w in weight.items())
        se = np.sqrt(sum(w ** 2 * estimates[t].se_item ** 2 for t, w in weight.items()))
        half = 1.96 * se  # every task one run: the item parts, with hundreds of items each
        assert ours[header] == f"{100 * mean:.2f} ± {100 * half:.2f}"
        assert csv[f"{header} high"] - csv[f"{header} low"] == pytest.approx(200 * half,
                                                                           rel=1e-3)
    natural = intervals.mean_estimate(estimates, {t: 1 / 7 for t in groups["natural"]})
    assert ours["Natural mean"] == (f"{100 * natural.mean:.2f} ± "
                                    f"{50 * (natural.high - natural.low):.2f}")


def test_records_written_in_another_order_give_the_same_table(tmp_path):
    lines = [record("demo", "demo_count", 0.5, ckpt=name) for name in ("x", "y")] + \
        [record("demo", "demo_shape", 0.5, ckpt=name) for name in ("y", "x")]
    write_records(tmp_path / "one", "demo", lines)
    write_records(tmp_path / "two", "demo", lines[::-1])
    for results in ("one", "two"):
        publish.write_all(tmp_path / results, generated=GENERATED)
    one, two = ((tmp_path / r / "demo.md").read_text().split("records)")[1]
                for r in ("one", "two"))
    assert one == two


def test_a_suite_file_of_the_users_keeps_runs_of_other_settings_apart(tmp_path):
    """A suite outside `vitbench/suites/`: its defaults come from the records (the runner stores its
    protocol's settings); an older record without them sets every setting apart."""
    protocol = tasks.load_suite("demo").task("demo_count").protocol

    def mine(accuracy, seed=0, stored=True, **overrides):
        line = record("demo", "demo_count", accuracy, ckpt="a", seed=seed, **overrides)
        line["config"]["suite"] = "mine"
        line["config_hash"] = records.config_hash(line["config"])
        return {**line, "protocol": protocol.settings()} if stored else line

    write_records(tmp_path, "mine", [mine(1.0), mine(0.5, seed=1),
                                     mine(0.0, steps=1, resolution=8)])
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "mine.md").read_text())
    assert {label: row["demo_count"] for label, row in rows.items()} == {
        "a": "75.00", "a (steps 1, px 8)": "0.00"}  # test sizes unknown: no interval

    write_records(tmp_path, "mine", [mine(1.0, stored=False),
                                     mine(0.0, steps=1, stored=False)])
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "mine.md").read_text())
    every = f"batch {protocol.batch_size}, warm-up {protocol.warmup_steps}, " \
            f"px {protocol.resolution}, polyak {protocol.polyak}, " \
            f"momentum {protocol.momentum_dtype}"
    assert {label: row["demo_count"] for label, row in rows.items()} == {
        f"a (steps {protocol.steps}, {every})": "100.00", f"a (steps 1, {every})": "0.00"}


def test_a_suite_file_named_like_a_shipped_one_still_gets_its_board(tmp_path):
    """A copy of vitbench/suites/demo.toml keeps `name = "demo"` but adds its own task: the board is
    built from its records, not from the shipped suite (which would show nothing)."""
    line = record("demo", "demo_color", 0.9, ckpt="a")
    line["config"]["task"] = "colors"
    line["config_hash"] = records.config_hash(line["config"])
    line["protocol"] = tasks.load_suite("demo").task("demo_color").protocol.settings()
    write_records(tmp_path, "demo", [line])
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "demo.md").read_text())
    assert {label: row["colors"] for label, row in rows.items()} == {"a": "90.00"}


def test_vtab_board_group_means_deltas_and_reported_rows(tmp_path):
    suite = tasks.load_suite("vtab1k")
    accuracy = {"natural": 0.8, "specialized": 0.6, "structured": 0.4}
    write_records(tmp_path, "vtab1k", [record("vtab1k", task.name, accuracy[task.group],
                                              ckpt="vit_l16") for task in suite.tasks])
    publish.write_all(tmp_path, generated=GENERATED)
    page = (tmp_path / "vtab1k.md").read_text()
    rows = rows_by_checkpoint(page)
    ours = rows["vit_l16"]
    # vit_l16 is the paper's ViT-L/16 on ImageNet-21k: deltas against its Table 9 numbers
    assert ours["Caltech101"] == "80.00 (Δ -10.80)" and ours["Clevr-Count"] == "40.00 (Δ -30.30)"
    assert ours["Natural mean"] == "80.00 (Δ -3.27)"
    assert ours["Specialized mean"] == "60.00 (Δ -24.65)"
    assert ours["Structured mean"] == "40.00 (Δ -17.50)"
    mean = (7 * 80 + 4 * 60 + 8 * 40) / 19
    # Table 2's mean ± std over 3 runs, 72.72 ± 0.21: one run of ours outside what the same
    # pipeline gives (± 1.04) is marked ▼ (above: ▲)
    reported_mean = 72.72
    assert ours["Mean"] == f"{mean:.2f} (Δ {mean - reported_mean:+.2f} ▼)"
    # within it: ≈
    near = {"natural": 0.8, "specialized": 0.8, "structured": 0.6427}
    write_records(tmp_path / "near", "vtab1k", [record("vtab1k", task.name, near[task.group],
                                                       ckpt="vit_l16") for task in suite.tasks])
    publish.write_all(tmp_path / "near", generated=GENERATED)
    near_mean = (11 * 80 + 8 * 64.27) / 19
    assert rows_by_checkpoint((tmp_path / "near" / "vtab1k.md").read_text())["vit_l16"][
        "Mean"] == f"{near_mean:.2f} (Δ {near_mean - 72.72:+.2f} ≈)"
    # the PEFT papers' mean: each group's mean weighs a third
    reported_groups = (83.27 + 84.65 + 57.50) / 3
    assert ours["Mean of group means"] == f"60.00 (Δ {60 - reported_groups:+.2f})"
    h14 = rows["*ViT-H/14, JFT-300M (paper Table 9)*"]
    assert (h14["Caltech101"], h14["Natural mean"], h14["Mean"]) == ("95.30", "86.69", "77.63")
    assert h14["Mean of group means"] == "79.57"  # (86.69 + 87.00 + 65.03) / 3
    bit = rows["*BiT-L (ResNet152x4), JFT-300M (paper Table 2)*"]
    assert bit["Mean"] == "76.29"  # a reported mean is shown without a std
    assert bit["Caltech101"] == "–"
    # Table 2's ViT rows repeat Table 9's means: not shown twice
    assert "*ViT-H/14, JFT-300M (paper Table 2)*" not in rows
    header = table(page)[0]
    order = list(header)
    assert order.index("SVHN") < order.index("Natural mean") < order.index("Camelyon")
    numbers = pd.read_csv(tmp_path / "vtab1k.csv")
    ours_numbers = numbers[numbers["kind"] == "ours"].iloc[0]
    assert ours_numbers["Mean"] == pytest.approx(mean, abs=1e-4)
    assert ours_numbers["Mean Δ"] == pytest.approx(mean - reported_mean, abs=1e-4)


def test_upstream_board_joins_the_upstream_suites(tmp_path):
    write_records(tmp_path, "imagenet", [record(
        "imagenet", "imagenet2012", {"accuracy": 0.8, "real_accuracy": 0.85}, ckpt="vit_b16")])
    write_records(tmp_path, "cifar10", [
        record("cifar10", "cifar10", 0.97, ckpt="vit_b16", lr=0.003, phase="tune"),
        record("cifar10", "cifar10", 0.95, ckpt="vit_b16", lr=0.01, phase="tune"),
        record("cifar10", "cifar10", 0.98, ckpt="vit_b16", lr=0.003)])
    written = publish.write_all(tmp_path, generated=GENERATED)
    assert sorted(path.name for path in written) == ["upstream.csv", "upstream.md"]
    page = (tmp_path / "upstream.md").read_text()
    assert "`runs/cifar10.jsonl` (3 records), `runs/imagenet.jsonl` (1 records)" in page or \
        "`runs/imagenet.jsonl` (1 records), `runs/cifar10.jsonl` (3 records)" in page
    rows = rows_by_checkpoint(page)
    ours = rows["vit_b16"]
    # ViT-B/16 (ImageNet-21k) in Table 5: ImageNet 83.97, ReaL 88.35, CIFAR-10 98.95
    assert ours["ImageNet"] == "80.00 (Δ -3.97)" and ours["ImageNet ReaL"] == "85.00 (Δ -3.35)"
    assert ours["CIFAR-10"] == "98.00 (Δ -0.95)"
    assert ours["missing"] == "CIFAR-100, Pets, Flowers"
    assert rows["*ViT-H/14, JFT-300M (paper Table 2)*"]["ImageNet"] == "88.55 ± 0.04"
    assert rows["*Noisy Student (EfficientNet-L2), ImageNet+JFT-300M (paper Table 2)*"][
        "ImageNet ReaL"] == "90.55"
    assert "Mean" not in ours  # the paper does not average upstream tasks


def test_a_probe_with_other_shot_counts_fills_its_cells_only():
    """`--shots 5` after the default shots replaces the 5-shot cell, not the 1-shot one."""
    from vitbench.leaderboards import collect

    def probe(shots, **metrics):
        return record("demo", "demo_shape", {**metrics, "seeds": {k: [v] for k, v in
                                                                  metrics.items()}},
                      lr=None, method="fewshot", shots=shots)

    table = collect.collect([probe([1, 5], **{"1shot": 0.3, "5shot": 0.4}),
                             probe([5], **{"5shot": 0.5})])
    (cells,) = table.values()
    cell = cells["demo_shape"]
    assert cell.values("1shot") == [30.0] and cell.values("5shot") == [50.0]
    assert cell.runs[0]["config"]["shots"] == [1, 5]
    assert cell.runs[0]["metrics"]["seeds"] == {"1shot": [0.3], "5shot": [0.5]}


def test_leaderboard_command_and_empty_results(tmp_path, capsys):
    from vitbench import cli

    assert cli.main(["leaderboard", f"--results_dir={tmp_path}"]) == 0
    assert "nothing to write" in capsys.readouterr().out
    write_records(tmp_path, "demo", [record("demo", "demo_count", 0.5)])
    assert cli.main(["leaderboard", f"--results_dir={tmp_path}"]) == 0
    assert str(tmp_path / "demo.md") in capsys.readouterr().out
    assert (tmp_path / "demo.csv").exists()
    # Lines that are not run records (another tool's, hand-written notes) stop no board.
    write_records(tmp_path, "notes", [{"config_hash": "x", "config": {"task": "t"}},
                                      {"config_hash": "y"}])
    with pytest.warns(UserWarning) as caught:
        assert cli.main(["leaderboard", f"--results_dir={tmp_path}"]) == 0
    assert [str(warning.message).split("notes.jsonl: ")[1] for warning in caught] == [
        "record x is not a run record (no suite, ckpt, phase, seed, lr); skipped",
        "record y is not a run record (no config); skipped"]
    assert str(tmp_path / "demo.md") in capsys.readouterr().out


def test_a_probe_with_a_class_short_of_k_is_marked_and_the_class_named(tmp_path):
    """The 5-shot cell of a probe where class 'dog' had 3 training images gets a †, its
    1-shot cell none, and the run's settings name the class and its count."""
    def probe(short):
        metrics = {"1shot": 0.3, "5shot": 0.4, "seeds": {"1shot": [0.3], "5shot": [0.4]},
                   "train_examples": 50, "test_examples": 20, **short}
        return record("demo", "demo_shape", metrics, lr=None, method="fewshot", shots=[1, 5],
                      seeds=1, l2_reg=1024.0)

    write_records(tmp_path, "demo", [probe({"short": {"5shot": {"dog": 3}}})])
    publish.write_all(tmp_path, GENERATED)
    page = (tmp_path / "demo_fewshot.md").read_text()
    row = table(page)[0]
    # Without outcomes files: intervals from accuracy and test size (20 items) alone, marked.
    assert row["Shape 5-shot"] == "40.00† ± 19.73‡" and row["Shape 1-shot"] == "30.00 ± 18.67‡"
    assert "5shot: dog (3)" in page and "classes short of k †" in page
    write_records(tmp_path, "demo", [probe({})])
    publish.write_all(tmp_path, GENERATED)
    assert "†" not in table((tmp_path / "demo_fewshot.md").read_text())[0]["Shape 5-shot"]


def test_a_later_probe_keeps_the_shortfall_of_the_shot_counts_it_does_not_replace():
    from vitbench.leaderboards import collect

    def probe(shots, short, **metrics):
        return record("demo", "demo_shape", {**metrics, "seeds": {k: [v] for k, v in
                                                                  metrics.items()}, **short},
                      lr=None, method="fewshot", shots=shots)

    first = probe([1, 25], {"short": {"25shot": {"dog": 20}}}, **{"1shot": 0.3, "25shot": 0.6})
    cell = collect.collect([first, probe([1], {}, **{"1shot": 0.4})])
    assert next(iter(cell.values()))["demo_shape"].short("25shot") == {"dog": 20}
    cell = collect.collect([first, probe([25], {}, **{"25shot": 0.7})])
    assert next(iter(cell.values()))["demo_shape"].short("25shot") == {}


def test_the_vtab_means_standard_errors_at_70_percent_are_the_specs():
    """Section 3 of the statistics spec: one run at 70% on every VTAB-1k task, at the real
    test sizes: SE 0.142 points for the 19-task mean (not lm-eval's pooled 0.074), 0.136 for
    the mean of group means."""
    from vitbench.evaluate import statistics
    from vitbench.leaderboards import boards, intervals

    sizes = [6084, 10000, 1880, 6149, 3669, 21750, 26032, 32768, 5400, 6300, 42670, 15000,
             15000, 73728, 73728, 12150, 12150, 711, 22735]  # in the suite's order
    board = boards.suite_board(tasks.load_suite("vtab1k"))
    estimates = {column.title: statistics.Estimate(0.7, 0.69, 0.71, 1, n, 0.0,
                                                   np.sqrt(0.21 / n), None, "wilson")
                 for column, n in zip(board.columns, sizes)}
    for name, se in (("", 0.142), (boards.MEAN_OF_GROUPS, 0.136)):
        estimate = intervals.mean_estimate(estimates, board.means_shown[name])
        assert 100 * np.hypot(estimate.se_seed, estimate.se_item) == pytest.approx(se, abs=1e-3)
