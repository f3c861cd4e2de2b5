"""`results/<board>.md` and `.csv` from `results/runs/*.jsonl`, written atomically."""

from __future__ import annotations

import pathlib
import time

from vitbench import files, records
from vitbench.leaderboards import boards as boards_lib
from vitbench.leaderboards import collect, reference, render

INTERVAL_NOTE = (
    "Our `± x`: the half-width of a 95% interval, from the per-item outcomes of the runs: one "
    "run, the Wilson interval on its test items; several seeds (or shot draws), mean ± t × SE "
    "over seeds and test items together; a mean over tasks, mean ± t × SE with its tasks' "
    "variances added with the mean's weights (the tasks are trained and scored apart). `‡`: "
    "an interval from the accuracy and the test size "
    "alone (runs recorded before per-item outcomes were kept). Reported rows: `± std` over the "
    "paper's runs. **Bold**: the best cells of a task column, the top one and each that a "
    "paired test on the same items cannot tell apart from it (Holm-adjusted over the "
    "board's comparisons): several in bold are tied; a column has none where no row is "
    "significantly below the top.")
EXPLANATIONS = {"finetune": f"""\
Top-1 accuracy (%) on each task's test split after fine-tuning with the suite's protocol
(the mean over seeds where there are several). `Mean`: over all tasks, each weighing the
same (the ViT and VTAB papers' VTAB-1k number); `Mean of group means`: each group's mean
weighing the same (the number parameter-efficient fine-tuning papers report). {INTERVAL_NOTE}
Our rows come first, best mean first; rows in *italics* are numbers reported in the ViT
paper. A row is a checkpoint (`@hash`: a local file's content) and the settings that differ
from the suite's protocol; `as released`: the checkpoint's own head scored without training
(`vitbench run --as_released`). `Params (M)` (where runs recorded it): the parameters a row
trains besides its task heads, in millions, as parameter-efficient fine-tuning papers count
them (a linear probe 0; a kNN probe none, blank). `(Δ ±x)`: ours minus the reported number
of the paper model the checkpoint is (Table 9, else Table 5, else Table 2). Where the paper
gives a mean ± std over 3 runs (Table 2's VTAB-1k means), `≈` marks a delta within what the
same pipeline
could give (one run of ours: inside the 95% prediction interval m ± t(0.975, 2) × s ×
√(4/3); several: the Welch 95% interval of the difference holds 0), `▲`/`▼` one outside it;
the paper does not say whether its std is over n or n − 1 (taken as n − 1). `(partial k/n)`:
a mean over the k of n tasks recorded so far, with the missing tasks listed. The `#` links to the
hyper-parameters of each run (the learning rate selected per task).""", "fewshot": f"""\
Few-shot linear accuracy (%) on each task's test split: a ridge-regression classifier on the
frozen checkpoint's pre-logit features of k training images per class (the mean over the
run's sampling seeds, and over runs where there are several). {INTERVAL_NOTE} Rows are ranked
by the mean of their cells; `(partial k/n)` marks a shot count's mean over the k of
n tasks recorded so far. `†`: a class had fewer than k training images, and all of them were
used, as big_vision does (the run's settings name the classes and how many they had). The `#`
links to the settings of each run."""}


def page(board: boards_lib.Board, records_by_suite: dict[str, list[dict]],
         sources: dict[str, pathlib.Path], results_dir, generated: str | None = None):
    """(markdown text, numeric frame) of one board."""
    shown, numbers, details, floor = render.frames(board, records_by_suite,
                                                   reference.load(), results_dir)
    generated = generated or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    origin = ", ".join(
        f"`{path.relative_to(results_dir) if path.is_relative_to(results_dir) else path}` "
        f"({len(records_by_suite.get(suite, []))} records)" for suite, path in sources.items())
    text = [f"# {board.title}", "",
            f"Generated {generated} by `vitbench leaderboard` from {origin}. "
            "Do not edit: it is rewritten from the records.", "",
            EXPLANATIONS[board.method], ""]
    text.append(shown.to_markdown(index=False, disable_numparse=True) if len(shown)
                else "No runs recorded yet.")
    if floor:
        text += ["", floor]
    if details:
        text += ["", "## Hyper-parameters of each run", "", render.details_markdown(board,
                                                                                    details)]
    return "\n".join(text).rstrip() + "\n", numbers


def write_all(results_dir="results", generated: str | None = None) -> list[pathlib.Path]:
    """Writes every board with records under `results_dir`; returns the files written.

    Args:
        results_dir: the folder whose `runs/*.jsonl` are read and that gets `<board>.md`
            and `<board>.csv` (each written atomically).
        generated: the "Generated ..." time shown on each page; None for now, in UTC.

    Returns:
        The `.md` and `.csv` paths written, two per board.

    Raises:
        OSError: a file cannot be written.
    """
    results_dir = pathlib.Path(results_dir)
    available = boards_lib.record_files(results_dir)
    loaded = {suite: collect.run_records(records.read(path), path)
              for suite, path in available.items()}
    written = []
    for board in boards_lib.boards_for(list(available), lambda suite: loaded[suite]):
        sources = {suite: available[suite] for suite in board.suites if suite in available}
        text, numbers = page(board, loaded, sources, results_dir, generated)
        written.append(files.write_atomic(results_dir / f"{board.name}.md", text))
        written.append(files.write_atomic(results_dir / f"{board.name}.csv",
                                          numbers.to_csv(index=False, float_format="%.4f")))
    return written
