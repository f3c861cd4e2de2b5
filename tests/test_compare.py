"""`vitbench compare`: two rows of hand-made records with outcomes files, compared task by
task; p-values against statsmodels on the stored predictions."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from test_leaderboards import record, write_records

from vitbench import cli
from vitbench.evaluate import comparison, outcomes
from vitbench.leaderboards import compare

DEMO = ("demo_count", "demo_shape", "demo_color", "demo_position")
EXAMPLES = 800


def scored(results_dir, line, predictions, labels):
    line["metrics"]["examples"] = len(labels)
    line["outcomes"] = outcomes.write(results_dir, line["config"]["suite"],
                                      line["config_hash"], predictions, labels)
    return line


def finetuned(results_dir, task, ckpt, correct, labels, seed=0):
    """A fine-tuning record of `ckpt` on `task` whose run got the `correct` items right."""
    predicted = np.where(correct, labels, (labels + 1) % 4)
    return scored(results_dir, record("demo", task, float(correct.mean()), ckpt=ckpt, seed=seed),
                  {"test": predicted}, labels)


@pytest.fixture
def two_rows(tmp_path):
    """Rows a and b on the demo suite; a is better on demo_shape by 8 points."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, EXAMPLES)
    lines, correct = [], {}
    for task in DEMO:
        chance = rng.uniform(0.4, 0.9, EXAMPLES)
        a = rng.uniform(size=EXAMPLES) < chance
        b = rng.uniform(size=EXAMPLES) < chance
        if task == "demo_shape":
            b &= rng.uniform(size=EXAMPLES) > 0.12
        correct[task] = a, b
        lines += [finetuned(tmp_path, task, "a", a, labels),
                  finetuned(tmp_path, task, "b", b, labels)]
    write_records(tmp_path, "demo", lines)
    return tmp_path, correct


def test_each_tasks_mcnemar_p_equals_statsmodels_on_the_stored_predictions(two_rows):
    results_dir, correct = two_rows
    [result] = compare.compare(results_dir, "demo", "a", "b")
    assert [t.column.task for t in result.tasks] == list(DEMO)
    p_values = []
    for task in result.tasks:
        a, b = correct[task.column.task]
        table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
        d = task.difference
        assert (d.b, d.c, d.test) == (table[0][1], table[1][0], comparison.MCNEMAR)
        assert d.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)
        p_values.append(d.p_value)
    assert [t.adjusted for t in result.tasks] == pytest.approx(
        multipletests(p_values, method="holm")[1], abs=1e-12)
    verdicts = compare.task_frame(result)["verdict"].tolist()
    assert verdicts == [comparison.NO_DIFFERENCE, comparison.A_BETTER,
                        comparison.NO_DIFFERENCE, comparison.NO_DIFFERENCE]
    [(name, compared, of, mean)] = result.means  # the demo board: one group, one mean
    assert (name, compared, of) == ("", 4, 4)
    assert mean.delta == pytest.approx(np.mean([t.difference.delta for t in result.tasks]))
    assert mean.low < mean.delta < mean.high


def test_the_command_prints_and_writes_markdown_and_csv(two_rows, capsys):
    results_dir, _ = two_rows
    assert cli.main(["compare", "--results_dir", str(results_dir), "--suite", "demo",
                     "--a", "a", "--b", "b", "--adjust", "bh"]) == 0
    out = capsys.readouterr().out
    assert "# a (A) vs b (B)" in out and "p BH" in out and "A better" in out
    page = (results_dir / "compare" / "demo" / "a__vs__b.md").read_text()
    assert "## Columns" in page and "- `MDE pp`:" in page
    numbers = pd.read_csv(results_dir / "compare" / "demo" / "a__vs__b.csv")
    tasks = numbers[numbers["kind"] == "task"].set_index("task")
    assert tasks.loc["Shape", "verdict"] == comparison.A_BETTER
    assert set(tasks.columns) >= {"b", "c", "psi", "p", "mid-p", "p BH", "MDE pp", "low pp",
                                  "high pp"}
    assert numbers[numbers["kind"] == "mean"]["mean"].tolist() == ["Mean"]


def test_unknown_rows_list_the_boards_rows_and_old_records_are_not_compared(two_rows, capsys):
    results_dir, _ = two_rows
    with pytest.raises(compare.CompareError, match=r"'c' not found\); its rows: a; b"):
        compare.compare(results_dir, "demo", "a", "c")
    with pytest.raises(compare.CompareError, match="suites with records: demo"):
        compare.compare(results_dir, "vtab1k", "a", "b")
    assert cli.main(["compare", "--results_dir", str(results_dir), "--suite", "demo"]) == 1
    assert "--a, --b are required" in capsys.readouterr().err
    old = record("demo", "demo_count", 0.5, ckpt="b")  # written before outcomes were kept
    write_records(results_dir / "old", "demo", [old, record("demo", "demo_count", 0.6, ckpt="a")])
    [result] = compare.compare(results_dir / "old", "demo", "a", "b")
    assert "keeps no per-item outcomes" in result.tasks[0].reason
    assert "nan" not in compare.markdown([result])
    assert result.tasks[1].reason == "not run by A and B" and not result.means


def test_several_seeds_use_the_seed_and_item_test(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, EXAMPLES)
    a = rng.uniform(size=(3, EXAMPLES)) < 0.7
    b = rng.uniform(size=(2, EXAMPLES)) < 0.7
    write_records(tmp_path, "demo", [finetuned(tmp_path, "demo_count", "a", a[s], labels, s)
                                     for s in range(3)] +
                  [finetuned(tmp_path, "demo_count", "b", b[s], labels, s) for s in range(2)])
    [result] = compare.compare(tmp_path, "demo", "a", "b")
    d = result.tasks[0].difference
    expected = comparison.task_difference(a, b)
    assert (d.test, d.seeds_a, d.seeds_b) == (comparison.SEEDS_T, 3, 2)
    assert (d.delta, d.p_value, d.low) == pytest.approx((expected.delta, expected.p_value,
                                                         expected.low))


def test_few_shot_cells_compare_draw_by_draw(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, EXAMPLES)
    draws = {ckpt: rng.uniform(size=(3, EXAMPLES)) < 0.6 for ckpt in ("a", "b")}

    def probe(ckpt):
        correct = draws[ckpt]
        accuracies = correct.mean(1).tolist()
        metrics = {"5shot": float(np.mean(accuracies)), "seeds": {"5shot": accuracies},
                   "train_examples": 20, "test_examples": EXAMPLES}
        line = record("demo", "demo_shape", metrics, ckpt=ckpt, lr=None, method="fewshot",
                      shots=[5], seeds=3, l2_reg=1024.0)
        predictions = {f"5shot/seed{s}": np.where(correct[s], labels, (labels + 1) % 4)
                       for s in range(3)}
        return scored(tmp_path, line, predictions, labels)

    write_records(tmp_path, "demo", [probe("a"), probe("b")])
    [result] = compare.compare(tmp_path, "demo", "a", "b")
    assert result.board.method == "fewshot"
    shape = next(t for t in result.tasks if t.difference is not None)
    expected = comparison.task_difference(draws["a"], draws["b"], paired_seeds=True)
    assert shape.difference.test == comparison.PAIRED_SEEDS_T
    assert shape.difference.p_value == pytest.approx(expected.p_value)
    assert "nan" not in compare.markdown([result])  # the cells not run show dashes


def test_boards_bold_the_best_cell_only_where_a_paired_test_tells_it_apart(tmp_path):
    """Count: a (90%) and b (89%) tie, c (60%) is below: a and b in bold. Shape: three rows
    at about the same accuracy: no bold. The footnote gives each task's noise floor."""
    from test_leaderboards import GENERATED, rows_by_checkpoint

    from vitbench.leaderboards import publish

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, EXAMPLES)
    chance = {"demo_count": {"a": 0.90, "b": 0.89, "c": 0.60},
              "demo_shape": {"a": 0.71, "b": 0.70, "c": 0.70}}
    write_records(tmp_path, "demo", [
        finetuned(tmp_path, task, ckpt, rng.uniform(size=EXAMPLES) < p, labels)
        for task, rows in chance.items() for ckpt, p in rows.items()])
    publish.write_all(tmp_path, generated=GENERATED)
    page = (tmp_path / "demo.md").read_text()
    rows = rows_by_checkpoint(page)
    bold = {ckpt: {task: row[task].startswith("**") for task in ("Count", "Shape")}
            for ckpt, row in rows.items()}
    assert bold == {"a": {"Count": True, "Shape": False}, "b": {"Count": True, "Shape": False},
                    "c": {"Count": False, "Shape": False}}
    assert "Noise floor per task" in page and "Count (800 items) ± " in page
