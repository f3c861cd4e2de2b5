"""`vitbench compare`: two rows of a suite's boards, task by task on the same test items."""

from __future__ import annotations

from absl import flags

from vitbench.commands import command, options
from vitbench.leaderboards.compare_columns import COLUMNS, MEAN_COLUMNS


def _define(fv):
    options.define_results_dir(fv, "Where the run records and their outcomes are; the "
                               "comparison is written to compare/<suite>/ there.")
    flags.DEFINE_string("suite", None, "The suite whose rows are compared (e.g. vtab1k, demo).",
                        flag_values=fv)
    flags.DEFINE_string("a", None, "Row A: its label as the board prints it (e.g. "
                        "'vit_b16 (steps 500)'), or a checkpoint with one row on the board.",
                        flag_values=fv)
    flags.DEFINE_string("b", None, "Row B, as --a.", flag_values=fv)
    flags.DEFINE_enum("adjust", "holm", ["holm", "bh"], "How the per-task p-values are "
                      "adjusted over the board's tasks: holm (family-wise error, for claims "
                      "about tasks) or bh (Benjamini-Hochberg false discovery rate, for "
                      "screening).", flag_values=fv)


def _legend(columns: dict) -> str:
    return "\n".join(f"  {name}: {meaning}" for name, meaning in columns.items())


def run(fv):
    from vitbench.leaderboards import compare

    missing = [f"--{name}" for name in ("suite", "a", "b") if not fv[name].value]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ValueError(f"{', '.join(missing)} {verb} required, e.g. --suite demo --a "
                         "results/pretrain/demo_vit_mu8 --b scratch:vit_mu8")
    results = compare.compare(fv.results_dir, fv.suite, fv.a, fv.b, fv.adjust)
    print(compare.markdown(results, legend=False))
    for path in compare.write(fv.results_dir, fv.suite, results):
        print(path)
    return 0


run.__doc__ = f"""Compare two rows of a suite's boards on the same test items, task by task.

From the runs' per-item outcomes: per task, the difference in accuracy with its 95% interval,
the discordant counts, the exact McNemar test (one run a side) or a t test over seeds and
items (several seeds; few-shot draws compared draw by draw), p-values adjusted over the
board's tasks, the minimum detectable effect and a verdict; for each of the board's means,
the difference with a task-stratified paired bootstrap interval. Printed, and written to
results/compare/<suite>/<A>__vs__<B>.md and .csv.

Columns per task:
{_legend(COLUMNS)}

Columns per mean:
{_legend(MEAN_COLUMNS)}
"""
command("compare", _define)(run)
