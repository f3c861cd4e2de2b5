"""Which planned runs train together (`vitbench.train.stacked`): consecutive fine-tuning runs
whose configs differ in the learning rate only, such as the tune runs of one task and seed in
a `--sweep`, in groups of at most `--stack`."""

from __future__ import annotations

from collections.abc import Sequence

from vitbench import records
from vitbench.transfer import DEFAULT_STACK
from vitbench.transfer.plan import Run

__all__ = ["DEFAULT_STACK", "groups", "stack_key"]


def stack_key(run: Run) -> tuple | None:
    """What runs that train together share (None for a run that never stacks: not
    fine-tuning, or a final run whose rate the tune runs choose)."""
    if run.method != "finetune" or run.lr is None:
        return None
    config = run.config()
    config.pop("lr")
    return records.config_hash(config), run.micro_batch_size, run.remat


def groups(runs: Sequence[Run], size: int) -> list[list[Run]]:
    """`runs` in order, in groups of consecutive runs with the same `stack_key`, each of at
    most `size` runs; a run that does not stack is a group of its own."""
    grouped: list[list[Run]] = []
    for run in runs:
        key = stack_key(run)
        last = grouped[-1] if grouped else None
        if (key is not None and last and len(last) < size and stack_key(last[0]) == key):
            last.append(run)
        else:
            grouped.append([run])
    return grouped
