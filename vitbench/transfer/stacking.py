"""Which planned runs train together (`vitbench.train.stacked`): consecutive fine-tuning runs
whose configs differ in the learning rate and the seed only, such as a task's tune runs in a
`--sweep`, or its final runs of `--repeats` seeds, in groups of at most `--stack`."""

from __future__ import annotations

from collections.abc import Sequence

from vitbench import records
from vitbench.models import attention
from vitbench.train import stack
from vitbench.transfer import DEFAULT_STACK
from vitbench.transfer.plan import Run

__all__ = ["DEFAULT_STACK", "groups", "size", "stack_key"]


def size(asked: int | None) -> int:
    """Runs per stack: `asked` (`--stack`), or where None DEFAULT_STACK on a GPU or TPU and
    1 on a CPU, where stacks measured no faster than their runs one by one (docs/performance.md);
    1 wherever stacking is not available (`stack.available`)."""
    if not stack.available():
        return 1
    if asked is None:
        return 1 if attention.on_cpu() else DEFAULT_STACK
    return asked


def stack_key(run: Run) -> tuple | None:
    """What runs that train together share: their configs but for the rate and the seed (a
    final run's rate, which its tune runs choose, is known by the time it trains). None for
    a run that never stacks (not fine-tuning)."""
    if run.method != "finetune" or run.recipe.optimizer != "sgd":  # stacks train all, by SGD
        return None
    config = run.config()
    del config["lr"], config["seed"]
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
