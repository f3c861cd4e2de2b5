"""Which cells of a board's task column are best: the top row's, alone where it beats every
other row by a paired test on the same items after Holm's adjustment over the board's
comparisons, else together with every row it does not beat (a tie). Rows whose runs kept
no per-item outcomes cannot be told apart from the top: they tie. Means are not marked:
`vitbench compare` tests them.
"""

from __future__ import annotations

from vitbench.evaluate import comparison, outcomes, statistics
from vitbench.leaderboards import intervals
from vitbench.leaderboards.boards import Board

ALPHA = comparison.ALPHA


def best_rows(board: Board, rows: list[dict], results_dir) -> dict[str, set[int]]:
    """Column title -> the indices (into `rows`) of its best cells (several: a tie), for
    the columns where some row is significantly below the top (where none is, no row can be
    named best and none is marked).

    Args:
        board: the board.
        rows: each of our rows' cells, `{column.key: collect.Cell}`.
        results_dir: where the outcomes files are (None: no outcomes, every column ties).
    """
    tested = []  # (title, top, other, p-value or None)
    tops = {}
    for column in board.columns:
        runs = {i: cells[column.key].finished(column.metric) for i, cells in enumerate(rows)
                if column.key in cells and cells[column.key].finished(column.metric)}
        if len(runs) < 2:
            continue
        values = {i: cells[column.key].values(column.metric) for i, cells in enumerate(rows)
                  if i in runs}
        top = max(runs, key=lambda i: (sum(values[i]) / len(values[i]), -i))
        tops[column.title] = top
        for other in runs:
            if other != top:
                tested.append((column.title, top, other,
                               _p_value(runs[top], runs[other], column.metric, results_dir,
                                        board.method == "fewshot")))
    known = [p for *_, p in tested if p is not None]
    adjusted = iter(statistics.holm(known)) if known else iter(())
    best = {title: {top} for title, top in tops.items()}
    below = dict.fromkeys(tops, 0)  # rows significantly below the top
    for title, _, other, p in tested:
        if p is None or next(adjusted) >= ALPHA:
            best[title].add(other)
        else:
            below[title] += 1
    return {title: rows for title, rows in best.items() if below[title]}


def _p_value(runs_top, runs_other, metric, results_dir, paired_seeds) -> float | None:
    if results_dir is None:
        return None
    try:
        return intervals.cell_difference(runs_top, runs_other, metric, results_dir,
                                         paired_seeds).p_value
    except (outcomes.OutcomesError, ValueError):
        return None
