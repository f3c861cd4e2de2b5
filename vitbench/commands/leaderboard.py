"""`vitbench leaderboard`: write the markdown leaderboards from the run records."""

from __future__ import annotations

from vitbench.commands import command, options


def _define(fv):
    options.define_results_dir(fv, "Where the run records are (runs/*.jsonl); the tables are "
                               "written there.")


@command("leaderboard", _define)
def run(fv):
    """Write results/<board>.md (and a .csv beside each) from the run records.

    Boards: `upstream` (ImageNet, ReaL, CIFAR-10/100, Pets, Flowers), one per other suite with
    records (`vtab1k`, `demo`, your own). `vitbench run` also rewrites them when it finishes.
    """
    from vitbench.leaderboards import publish

    written = publish.write_all(fv.results_dir)
    for path in written:
        print(path)
    if not written:
        print(f"no run records under {fv.results_dir}/runs; nothing to write")
    return 0
