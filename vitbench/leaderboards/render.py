"""A board as tables: numbers (CSV) and a markdown page for readers.

Accuracy is in %, two decimals. A mean over tasks is the plain mean of the task columns (for
VTAB-1k: over all 19 tasks, as the paper); with tasks missing it is the mean of those present,
marked `partial k/n`, and the missing tasks are listed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from vitbench.evaluate import comparison, statistics
from vitbench.leaderboards import best, intervals
from vitbench.leaderboards import collect as collect_lib
from vitbench.leaderboards import reference as reference_lib
from vitbench.leaderboards.boards import MEAN_OF_GROUPS, Board, Column

MISSING = "–"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


class Line:
    """One table row: a column title -> value (%), with the means and, for ours, deltas."""

    def __init__(self, board: Board, values: dict[str, float | None],
                 given_means: dict[str, float] | None = None):
        self.board, self.values = board, values
        self.means: dict[str, tuple[float | None, int, int]] = {}  # name -> (mean, k, n)
        for name, weights in board.means_shown.items():
            present = {t: w for t, w in weights.items() if values.get(t) is not None}
            total = sum(present.values())
            mean = sum(w * values[t] for t, w in present.items()) / total if present else None
            self.means[name] = (mean, len(present), len(weights))
        for name, value in (given_means or {}).items():  # printed where tasks are not
            if name in self.means and self.means[name][1] < self.means[name][2]:
                self.means[name] = (value, self.means[name][2], self.means[name][2])

    @property
    def missing(self) -> list[str]:
        return [c.title for c in self.board.columns if self.values.get(c.title) is None]

    def mean(self, group: str = "") -> float | None:
        value, k, n = self.means.get(group, (None, 0, 0))
        return value

    @property
    def rank(self) -> float:
        """What rows are sorted by (best first): the mean, else the mean of all cells."""
        value = self.mean() if self.board.overall_mean else _mean(
            [v for v in self.values.values() if v is not None])
        return value or 0.0


# The task name under which a reported file prints a mean (`Board.means_shown`'s key ->).
PRINTED_MEANS = {"": "mean", MEAN_OF_GROUPS: MEAN_OF_GROUPS}


def _printed_means(board: Board, found: dict) -> dict[str, float]:
    """The board's means that a reported row prints (mean name -> value)."""
    keys = {name: (board.suites[0], PRINTED_MEANS.get(name, name), "accuracy")
            for name in board.means_shown}
    return {name: found[key][0] for name, key in keys.items() if key in found}


def _reported_line(board: Board, found: dict) -> Line:
    """A row of reported numbers (`found`: key -> (value, ...)); a printed mean stands where
    the per-task numbers are missing."""
    values = {c.title: found[c.key][0] for c in board.columns if c.key in found}
    return Line(board, values, _printed_means(board, found) or None)


def mean_title(name: str) -> str:
    """The header of a mean (`Board.means_shown`'s key)."""
    if name == MEAN_OF_GROUPS:
        return "Mean of group means"
    return f"{name.capitalize()} mean" if name else "Mean"


def board_lines(board: Board, records_by_suite: dict[str, list[dict]],
                reported: Sequence[reference_lib.Reported]):
    """(our rows as (Row, cells, Line), reported rows as (Reported, Line)), sorted."""
    from vitbench.leaderboards.boards import protocol_defaults

    ours = {}
    for suite in board.suites:
        shown = [record for record in records_by_suite.get(suite, [])
                 if collect_lib.board_method(record) == board.method]
        table = collect_lib.collect(shown, protocol_defaults)
        for row, cells in table.items():
            for column in board.columns:
                if column.suite == suite and column.task in cells:
                    ours.setdefault(row, {})[column.key] = cells[column.task]
    our_lines = []
    for row, cells in ours.items():
        values = {}
        for column in board.columns:
            cell = cells.get(column.key)
            values[column.title] = _mean(cell.values(column.metric)) if cell else None
        our_lines.append((row, cells, Line(board, values)))
    our_lines.sort(key=lambda item: (bool(item[2].missing), -item[2].rank, item[0].label))
    # Reported rows: those with numbers in this board's columns, and the mean-only rows (Table
    # 2's VTAB means) of models no per-task row shows.
    reported_lines, shown_models = [], set()
    for table in sorted(reported, key=lambda t: reference_lib.SOURCE_ORDER.index(t.source)):
        line = _reported_line(board, table.values)
        model = (table.model, table.pretrain, table.method)
        if not line.values and (not _printed_means(board, table.values)
                                or model in shown_models):
            continue
        shown_models.add(model)
        reported_lines.append((table, line))
    return our_lines, reported_lines


def _display_columns(board: Board) -> list[tuple[str, Column | None, str | None]]:
    """(header, task column or None, group of a mean or None), tasks of a group before its
    mean."""
    out, means = [], board.means_shown
    for group in board.groups:
        out += [(c.title, c, None) for c in board.columns if c.group == group]
        if group in means:
            out.append((mean_title(group), None, group))
    return out + [(mean_title(name), None, name) for name in ("", MEAN_OF_GROUPS)
                  if name in means]


SHORT_MARK = "†"  # a few-shot cell where a class had fewer training images than k


def _interval(estimate) -> tuple[float | None, bool]:
    """(half-width in %, whether approximate) of a cell's or a mean's interval."""
    if estimate is None:
        return None, False
    return 50 * (estimate.high - estimate.low), estimate.method == intervals.APPROXIMATE


CONSISTENT, ABOVE, BELOW = "≈", "▲", "▼"


def _consistent(delta, values, std) -> bool | None:
    """Whether a delta to a reported mean ± std (over `reference.RUNS` runs) is what the same
    pipeline could give, for our `values` (one per run); None where not known."""
    if delta is None or std is None or not values:
        return None
    return abs(delta) <= statistics.reproduction_margin(values, std, reference_lib.RUNS)


def _per_seed_mean(runs: dict[str, list[float]], weights: dict[str, float]) -> list[float]:
    """A mean's value for each seed, where each of its tasks has the same number of runs
    (seeds are independent across tasks, so the i-th runs of the tasks make one mean)."""
    counts = {len(runs.get(title, [])) for title in weights}
    if len(counts) != 1 or 0 in counts:
        return []
    return [sum(w * runs[title][i] for title, w in weights.items()) for i in range(counts.pop())]


def _cell_text(value, delta=None, spread=None, approximate=False, diverged=0, partial=None,
               seeds=0, short=False, consistent=None) -> str:
    """A cell: mean, ± `spread` (ours: the 95% interval's half-width, `approximate` marking
    one from accuracy and test size alone; reported rows: the paper's std), how many of the
    seeds diverged (the mean is of the others), partial means, the delta to the paper;
    `SHORT_MARK` where a class was short."""
    if value is None:
        return "diverged" if diverged else MISSING
    text = _fmt(value) + (SHORT_MARK if short else "")
    if spread is not None:
        text += f" ± {spread:.2f}" + (intervals.APPROXIMATE_MARK if approximate else "")
    if diverged:
        text += f" ({diverged} of {diverged + seeds} seeds diverged)"
    if partial:
        text += f" (partial {partial[0]}/{partial[1]})"
    if delta is not None:
        mark = "" if consistent is None else " " + (
            CONSISTENT if consistent else ABOVE if delta > 0 else BELOW)
        text += f" (Δ {delta:+.2f}{mark})"
    return text


def frames(board: Board, records_by_suite: dict[str, list[dict]],
           reported: Sequence[reference_lib.Reported], results_dir=None):
    """(display frame for markdown, numeric frame for CSV, our rows for the details). Our
    cells' intervals read the runs' outcomes files under `results_dir` (None: from accuracy
    and test size alone)."""
    our_lines, reported_lines = board_lines(board, records_by_suite, reported)
    any_counted = any(backbone_parameters(cells) is not None for _, cells, _ in our_lines)
    shown, numbers, details = [], [], []
    floors = {}  # column title -> (items, accuracy %) of each of our cells
    for number, (row, cells, line) in enumerate(our_lines, 1):
        found = reference_lib.reported_for(row.ckpt, reported, row.method)
        paper_line = _reported_line(board, found)
        display = {"#": f"[{number}](#run-{number})", "checkpoint": row.label}
        numeric = {"kind": "ours", "row": row.label, "checkpoint": row.ckpt,
                   "ckpt_sha256": row.sha256, "details": number}
        if any_counted:
            trained = backbone_parameters(cells)
            display[PARAMS] = "" if trained is None else f"{trained / 1e6:.3g}"
            numeric[PARAMS] = trained
        estimates = {}  # column title -> the interval of its cell
        runs = {}  # column title -> its runs' values (%)
        for header, column, group in _display_columns(board):
            if column is not None:
                cell = cells.get(column.key)
                value = line.values.get(header)
                seeds = cell.values(column.metric) if cell else []
                estimate = intervals.cell_estimate(cell.finished(column.metric), column.metric,
                                                   results_dir) if seeds else None
                if value is not None:
                    estimates[header] = estimate
                    if estimate is not None:
                        floors.setdefault(header, []).append((estimate.examples, value))
                reported_value = paper_line.values.get(header)
                delta = value - reported_value if None not in (value, reported_value) else None
                runs[header] = seeds
                std = found.get(column.key, (None, None, None))[2]
                display[header] = _cell_text(
                    value, delta, *_interval(estimate), cell.diverged if cell else 0,
                    seeds=len(seeds), short=bool(cell and cell.short(column.metric)),
                    consistent=_consistent(delta, seeds, std))
                numeric[header] = value
                numeric[f"{header} seeds"] = len(seeds)
            else:
                value, k, n = line.means[group]
                reported_mean, std = paper_line.mean(group), None
                printed = found.get((board.suites[0], "mean", "accuracy"))
                if group == "" and printed and printed[2] is not None:
                    reported_mean, _, std = printed  # the paper's mean ± std over its runs
                complete = k == n
                delta = value - reported_mean if complete and None not in (
                    value, reported_mean) else None
                weights = board.means_shown[group]
                estimate = intervals.mean_estimate(estimates, weights)
                display[header] = _cell_text(
                    value, delta, *_interval(estimate), partial=None if complete else (k, n),
                    consistent=_consistent(delta, _per_seed_mean(runs, weights), std))
                numeric[header] = value
                numeric[f"{header} tasks"] = k
            numeric[f"{header} low"] = None if estimate is None else 100 * estimate.low
            numeric[f"{header} high"] = None if estimate is None else 100 * estimate.high
            if delta is not None:
                numeric[f"{header} Δ"] = delta
        display["missing"] = numeric["missing"] = ", ".join(line.missing)
        shown.append(display)
        numbers.append(numeric)
        details.append((number, row, cells))
    if len(our_lines) > 1:
        for header, indices in best.best_rows(board, [cells for _, cells, _ in our_lines],
                                              results_dir).items():
            for i in indices:
                shown[i][header] = f"**{shown[i][header]}**"
    for table, line in reported_lines:
        display = {"#": "", "checkpoint": f"*{table.label}*",
                   **({PARAMS: ""} if any_counted else {})}
        numeric = {"kind": "reported", "row": table.label, "source": table.source}
        for header, column, group in _display_columns(board):
            if column is not None:
                value, std = table.values.get(column.key, (None, None))
                display[header] = _cell_text(value, spread=std)
                numeric[header] = value
            else:
                value, k, n = line.means[group]
                value = value if k == n else None  # never a partial mean of reported numbers
                display[header] = _cell_text(value)
                numeric[header] = value
        display["missing"] = numeric["missing"] = ""
        shown.append(display)
        numbers.append(numeric)
    return pd.DataFrame(shown), pd.DataFrame(numbers), details, noise_floor(floors)


# The column of the parameters a row trains besides its heads, in millions to 3 significant
# digits (the "Params (M)" of the parameter-efficient fine-tuning papers: BitFit 0.103 and
# LoRA 0.295 on ViT-B/16), on boards where runs recorded them.
PARAMS = "Params (M)"


def backbone_parameters(cells) -> int | None:
    """The parameters a row's runs trained besides the head (`trainable_parameters` of their
    records: the same on every task of a model), the largest where they differ; None where
    no run recorded them (a kNN probe trains none; runs before 2026-12-08 kept no count)."""
    counts = [r["trainable_parameters"]["total"] - r["trainable_parameters"]["head"]
              for cell in cells.values() for r in cell.runs.values()
              if "trainable_parameters" in r]
    return max(counts) if counts else None


def noise_floor(floors: dict[str, list[tuple[int, float]]]) -> str:
    """Per task column: its test items, the 95% half-width of one run at the column's mean
    accuracy, and the smallest difference a paired test of two runs detects (power 0.8,
    level 0.05) where they err independently; '' where no cell says how many items."""
    parts = []
    for title, cells in floors.items():
        examples = max(n for n, _ in cells)
        accuracy = sum(v for _, v in cells) / len(cells) / 100
        low, high = statistics.wilson(round(accuracy * examples), examples)
        mde = comparison.mcnemar_mde(examples, 2 * accuracy * (1 - accuracy))
        parts.append(f"{title} ({examples:,} items) ± {50 * (high - low):.1f}"
                     + ("" if mde is None else f" / {100 * mde:.1f}"))
    if not parts:
        return ""
    return ("Noise floor per task, in points at the column's mean accuracy: the 95% "
            "half-width of one run / the smallest difference a paired test of two runs "
            "detects (power 0.8, level 0.05) where they err independently: "
            + "; ".join(parts) + ".")


def _finetune_details(column, cell, runs, config) -> dict:
    decays = "weight_decay" in config  # a grid of rate x decay (VPT's)
    tune = "; ".join(
        f"seed {seed}{_shortened(cell.tune_fraction.get(seed, 1))}: " + ", ".join(
            f"{_setting(setting)} → {_fmt(None if acc is None else 100 * acc)}"
            for setting, acc in sorted(scores.items()))
        for seed, scores in sorted(cell.tune.items()))
    length = (f"{config['epochs']} epochs ({config['steps']} steps) × {config['batch_size']}"
              if "epochs" in config else f"{config['steps']} × {config['batch_size']}")
    return {"task": column.title,
            "lr": ", ".join(_setting(collect_lib.setting_of(r["config"])) for r in runs),
            f"validation accuracy by {'lr, wd' if decays else 'lr'}":
                tune or "(fixed lr, no sweep)",
            "seeds": ", ".join(str(s) for s in sorted(cell.runs)),
            "steps × batch": length, "px": config["resolution"]}


def _setting(setting) -> str:
    """A tune grid's setting (`records.setting_of`) as the details write it."""
    if isinstance(setting, tuple):
        prompts = f", p {setting[2]}" if len(setting) > 2 and setting[2] is not None else ""
        return f"{setting[0]:g} (wd {setting[1]:g}{prompts})"
    return f"{setting:g}"


def _shortened(fraction: float) -> str:
    return "" if fraction == 1 else f" (tune runs {fraction:g} of the steps)"


def _fewshot_details(column, cell, runs, config) -> dict:
    metrics = runs[0]["metrics"]
    short = {f"{k}shot": cell.short(f"{k}shot") for k in config["shots"]}
    return {"task": column.title.rsplit(" ", 1)[0],
            "shots": ", ".join(str(k) for k in config["shots"]),
            "seeds": config["seeds"], "l2": f"{config['l2_reg']:g}", "px": config["resolution"],
            "examples (train / test)": f"{metrics.get('train_examples')} / "
                                       f"{metrics.get('test_examples')}",
            f"classes short of k {SHORT_MARK}": "; ".join(
                f"{k}: " + ", ".join(f"{name} ({used})" for name, used in sorted(classes.items()))
                for k, classes in short.items() if classes) or "-"}


def _as_released_details(column, cell, runs, config) -> dict:
    return {"task": column.title, "lr": "-", "validation accuracy by lr": "(as released)",
            "seeds": "-", "steps × batch": "-", "px": config["resolution"]}


def _linear_details(column, cell, runs, config) -> dict:
    metrics = runs[0]["metrics"]
    return {"task": column.title,
            "lr": f"{metrics['lr']:g} × {config['batch_size']}/256, weight decay "
                  f"{metrics['weight_decay']:g}",
            "validation accuracy by lr": f"best of {len(metrics['validation'])} (lr/wd) "
                                         f"on {config['tune_splits'][1]}: "
                                         f"{100 * max(metrics['validation'].values()):.2f}",
            "seeds": ", ".join(str(s) for s in config["head_seeds"]),
            "steps × batch": f"{config['epochs']} epochs × {config['batch_size']}",
            "px": config["resolution"]}


def _knn_details(column, cell, runs, config) -> dict:
    metrics = runs[0]["metrics"]
    return {"task": column.title, "lr": f"k = {metrics['k']}, T = {config['temperature']:g}",
            "validation accuracy by lr": ", ".join(
                f"k {k} → {100 * a:.2f}" for k, a in metrics["validation"].items()),
            "seeds": "-", "steps × batch": "-", "px": config["resolution"]}


DETAILS = {"finetune": _finetune_details, "bitfit": _finetune_details,
           "lora": _finetune_details, "vpt_deep": _finetune_details,
           "vpt_shallow": _finetune_details, "fewshot": _fewshot_details,
           "evaluate": _as_released_details, "linear": _linear_details, "knn": _knn_details}


def details_markdown(board: Board, details) -> str:
    """Per our row: the hyper-parameters of each task's selected run."""
    parts = []
    for number, row, cells in details:
        parts.append(f'<a id="run-{number}"></a>\n\n### {number}. {row.label}\n')
        lines, seen = [], set()
        for column in board.columns:
            cell = cells.get(column.key)
            if cell is None or column.task in seen:
                continue
            seen.add(column.task)
            runs = list(cell.runs.values())
            line = DETAILS[collect_lib.method_of(runs[0])](column, cell, runs,
                                                           runs[0]["config"])
            line.update({
                "precision": ", ".join(sorted({r.get("precision", "?") for r in runs})),
                "train split": runs[0]["config"]["train_split"] or "-",
                "records": ", ".join(r["config_hash"][:8] for r in runs)})
            lines.append(line)
        parts.append(pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True) + "\n")
    return "\n".join(parts)
