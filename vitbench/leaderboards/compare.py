"""`vitbench compare`: two rows of a suite's boards compared task by task on the same test
items, from the runs' per-item outcomes, with the differences of the boards' means.

Per board (fine-tuning; few-shot, whose cells are compared seed by seed): each task's
`comparison.TaskDifference`, p-values adjusted over the board's compared tasks (Holm, or
Benjamini-Hochberg on request), a verdict per task; each of the board's means (as
`Board.means_shown` weighs them) with its stratified paired bootstrap interval. The means are
the primary endpoints, declared before looking: they are not adjusted. Written as markdown and
CSV under `results/compare/<suite>/`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np
import pandas as pd

from vitbench import files, records
from vitbench.evaluate import comparison, outcomes, statistics
from vitbench.leaderboards import boards as boards_lib
from vitbench.leaderboards import collect, intervals, render
from vitbench.leaderboards.compare_columns import COLUMNS, MEAN_COLUMNS

ADJUSTMENTS = {"holm": ("p Holm", statistics.holm),
               "bh": ("p BH", statistics.benjamini_hochberg)}
class CompareError(ValueError):
    """The rows asked for are not on the suite's boards, or cannot be compared."""


@dataclasses.dataclass(frozen=True)
class TaskResult:
    column: boards_lib.Column
    difference: comparison.TaskDifference | None
    reason: str = ""  # why there is no difference
    adjusted: float | None = None


@dataclasses.dataclass(frozen=True)
class BoardComparison:
    board: boards_lib.Board
    row_a: collect.Row
    row_b: collect.Row
    tasks: list[TaskResult]
    means: list[tuple[str, int, int, comparison.MeanDifference]]  # name, compared, of, result
    adjust: str


def compare(results_dir, suite: str, a: str | set[collect.Row], b: str | set[collect.Row],
            adjust: str = "holm", replicates: int = comparison.REPLICATES
            ) -> list[BoardComparison]:
    """Rows `a` and `b` compared on every board of `suite` that shows both. A row is named by
    its label as the board prints it, or a checkpoint that one row of the board has; or given
    as the set of its rows (fine-tuning and few-shot rows of one run differ in settings).

    Raises:
        CompareError: no records of the suite, a row on none of its boards, or an unknown
            adjustment.
    """
    if adjust not in ADJUSTMENTS:
        raise CompareError(f"unknown adjustment {adjust!r}; choose from "
                           f"{', '.join(ADJUSTMENTS)}")
    results_dir = pathlib.Path(results_dir)
    available = boards_lib.record_files(results_dir)
    if suite not in available:
        raise CompareError(f"no records of suite {suite!r} under {results_dir}/runs; suites "
                           f"with records: {', '.join(available) or 'none'}")
    loaded = {suite: collect.run_records(records.read(available[suite]), available[suite])}
    compared, labels = [], set()
    for board in boards_lib.boards_for([suite], lambda name: loaded[name]):
        lines, _ = render.board_lines(board, loaded, ())
        rows = {row: cells for row, cells, _ in lines}
        labels |= {row.label for row in rows}
        row_a, row_b = _find(rows, a), _find(rows, b)
        if row_a is None or row_b is None:
            continue
        if row_a == row_b:
            raise CompareError(f"A and B are the same row: {row_a.label}")
        compared.append(_compare_board(board, row_a, rows[row_a], row_b, rows[row_b],
                                       results_dir, adjust, replicates))
    if not compared:
        missing = [name for name in (a, b) if isinstance(name, str) and not any(
            name == label or label.startswith(name + " ") for label in labels)]
        raise CompareError(f"no board of {suite} shows both {a!r} and {b!r}"
                           + (f" ({', '.join(map(repr, missing))} not found)" if missing else "")
                           + "; its rows: " + "; ".join(sorted(labels)))
    return compared


def _find(rows: dict, wanted: str | set[collect.Row]) -> collect.Row | None:
    """The row labelled `wanted` (or in it), else the one row of checkpoint `wanted`."""
    if isinstance(wanted, set):
        return next((row for row in rows if row in wanted), None)
    exact = [row for row in rows if row.label == wanted]
    by_ckpt = [row for row in rows if row.ckpt == wanted]
    if exact or len(by_ckpt) == 1:
        return (exact or by_ckpt)[0]
    if len(by_ckpt) > 1:
        raise CompareError(f"checkpoint {wanted!r} has several rows; name one by its label: "
                           + "; ".join(row.label for row in by_ckpt))
    return None


def _compare_board(board, row_a, cells_a, row_b, cells_b, results_dir, adjust,
                   replicates) -> BoardComparison:
    paired_seeds = board.method == "fewshot"
    results = []
    for column in board.columns:
        cell_a, cell_b = cells_a.get(column.key), cells_b.get(column.key)
        runs_a = cell_a.finished(column.metric) if cell_a else []
        runs_b = cell_b.finished(column.metric) if cell_b else []
        if not runs_a or not runs_b:
            results.append(TaskResult(column, None, "not run by " + " and ".join(
                side for side, runs in (("A", runs_a), ("B", runs_b)) if not runs)))
            continue
        try:
            difference = intervals.cell_difference(runs_a, runs_b, column.metric, results_dir,
                                                   paired_seeds)
        except (outcomes.OutcomesError, ValueError) as error:
            results.append(TaskResult(column, None, str(error)))
            continue
        results.append(TaskResult(column, difference))
    done = [r for r in results if r.difference is not None]
    adjusted = iter(ADJUSTMENTS[adjust][1]([r.difference.p_value for r in done]) if done else [])
    results = [dataclasses.replace(r, adjusted=float(next(adjusted)))
               if r.difference is not None else r for r in results]
    means = []
    if done:
        drawn = comparison.bootstrap_tasks([r.difference for r in done], replicates)
        titles = [r.column.title for r in done]
        for name, weights in board.means_shown.items():
            present = np.array([weights.get(title, 0.0) for title in titles])
            if present.sum() == 0:
                continue
            result = comparison.mean_difference([r.difference for r in done],
                                                present / present.sum(), drawn)
            means.append((name, int(np.count_nonzero(present)), len(weights), result))
    return BoardComparison(board, row_a, row_b, results, means, adjust)


def _pp(value: float) -> str:
    return f"{100 * value:+.2f}"


def task_frame(result: BoardComparison, numeric: bool = False) -> pd.DataFrame:
    """The per-task table (display strings, or numbers for the CSV)."""
    adjusted_name = ADJUSTMENTS[result.adjust][0]
    lines = []
    for task in result.tasks:
        d = task.difference
        if d is None:
            lines.append({"task": task.column.title, "verdict": f"not compared: {task.reason}"})
            continue
        verdict = comparison.verdict(d.delta, task.adjusted)
        if numeric:
            lines.append({"task": task.column.title, "n": d.examples, "seeds A": d.seeds_a,
                          "seeds B": d.seeds_b, "A %": 100 * d.accuracy_a,
                          "B %": 100 * d.accuracy_b, "Δ pp": 100 * d.delta,
                          "low pp": 100 * d.low, "high pp": 100 * d.high, "b": d.b, "c": d.c,
                          "psi": d.psi, "test": d.test, "p": d.p_value, "mid-p": d.mid_p,
                          adjusted_name: task.adjusted,
                          "MDE pp": None if d.mde is None else 100 * d.mde,
                          "verdict": verdict})
            continue
        lines.append({"task": task.column.title, "n": f"{d.examples}",
                      "seeds": f"{d.seeds_a}/{d.seeds_b}", "A %": f"{100 * d.accuracy_a:.2f}",
                      "B %": f"{100 * d.accuracy_b:.2f}", "Δ pp": _pp(d.delta),
                      "95% CI": f"[{_pp(d.low)}, {_pp(d.high)}]", "b": _count(d.b),
                      "c": _count(d.c), "test": d.test, "p": f"{d.p_value:.4g}",
                      adjusted_name: f"{task.adjusted:.4g}",
                      "MDE pp": "–" if d.mde is None else f"{100 * d.mde:.2f}",
                      "verdict": verdict})
    frame = pd.DataFrame(lines)
    return frame if numeric else frame.fillna("–")


def _count(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def mean_frame(result: BoardComparison, numeric: bool = False) -> pd.DataFrame:
    lines = []
    for name, compared, of, m in result.means:
        title = render.mean_title(name)
        verdict = comparison.verdict(m.delta, m.p_value)
        if numeric:
            lines.append({"mean": title, "tasks": compared, "of": of, "Δ pp": 100 * m.delta,
                          "low pp": 100 * m.low, "high pp": 100 * m.high, "p": m.p_value,
                          "se item pp": 100 * m.se_item, "se seed pp": 100 * m.se_seed,
                          "MDE pp": 100 * m.mde, "method": m.method,
                          "bootstrap": f"{comparison.REPLICATES} replicates, "
                                       f"default_rng({comparison.BOOTSTRAP_SEED})",
                          "verdict": verdict})
            continue
        lines.append({"mean": title, "tasks": f"{compared}/{of}", "Δ pp": _pp(m.delta),
                      "95% CI": f"[{_pp(m.low)}, {_pp(m.high)}]", "p": f"{m.p_value:.4g}",
                      "MDE pp": f"{100 * m.mde:.2f}", "verdict": verdict})
    return pd.DataFrame(lines)


def markdown(results: list[BoardComparison], legend: bool = True) -> str:
    first = results[0]
    text = [f"# {first.row_a.label} (A) vs {first.row_b.label} (B)", ""]
    for result in results:
        text += [f"## {result.board.title}", "",
                 task_frame(result).to_markdown(index=False, disable_numparse=True), ""]
        if result.means:
            text += [mean_frame(result).to_markdown(index=False, disable_numparse=True), ""]
    if legend:
        text += ["## Columns", ""] + [f"- `{name}`: {meaning}" for name, meaning in
                                      COLUMNS.items()]
        text += ["", "Means:", ""] + [f"- `{name}`: {meaning}" for name, meaning in
                                      MEAN_COLUMNS.items()]
        text += ["", f"Bootstrap: {comparison.REPLICATES:,} replicates, numpy "
                 f"`default_rng({comparison.BOOTSTRAP_SEED})`. McNemar compares the two "
                 "trained models; with one run a side it says nothing of how another "
                 "fine-tuning seed would do (run `--repeats` for that). See "
                 "docs/leaderboards.md, \"Reading the intervals\"."]
    return "\n".join(text).rstrip() + "\n"


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "row"


def write(results_dir, suite: str, results: list[BoardComparison]) -> list[pathlib.Path]:
    """results/compare/<suite>/<A>__vs__<B>.md and .csv, written atomically."""
    first = results[0]
    stem = pathlib.Path(results_dir) / "compare" / suite / (
        f"{_slug(first.row_a.label)}__vs__{_slug(first.row_b.label)}")
    frames = []
    for result in results:
        frames += [task_frame(result, numeric=True).assign(kind="task"),
                   mean_frame(result, numeric=True).assign(kind="mean")]
        frames[-2].insert(0, "board", result.board.name)
        frames[-1].insert(0, "board", result.board.name)
    numbers = pd.concat(frames, ignore_index=True)
    numbers.insert(0, "B", first.row_b.label)
    numbers.insert(0, "A", first.row_a.label)
    return [files.write_atomic(stem.parent / f"{stem.name}.md", markdown(results)),
            files.write_atomic(stem.parent / f"{stem.name}.csv", numbers.to_csv(index=False))]
