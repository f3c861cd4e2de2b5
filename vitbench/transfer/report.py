"""`vitbench run --dry_run`: the plan as a table, what is done, and what is left to train."""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from vitbench import records
from vitbench.data import sources
from vitbench.transfer.methods import METHODS
from vitbench.transfer.plan import check_checkpoint, choose_lr, data_needed, images, is_done, plan


def describe_plan(suite, task_names, ckpt, overrides, results_dir, sweep=False,
                  speed: Callable[[], float] | None = None, fewshot: bool = True,
                  data_dir=None, force: bool = False) -> str:
    """The plan as a table: every run, whether it is done (with `force`, none is: all are
    redone), and its cost, with the time it takes at the images/s `speed` measures (called
    only where training images are left); then the tasks whose data is missing (the run
    would stop on them before training).

    Args:
        suite, task_names, ckpt, overrides, sweep, fewshot: as `plan.plan` takes them.
        results_dir: where the suite's records are read from.
        speed: measures training images/s on this machine (e.g. `sizing.measure_throughput`).
        data_dir: the TFDS data dir whose datasets are checked.
        force: count every run as to do.
    Returns:
        The table and its summary, as `vitbench run --dry_run` prints them.
    Raises:
        ValueError, KeyError, FileNotFoundError: what `vitbench run` would refuse.
    """
    runs = plan(suite, task_names, ckpt, overrides, sweep, fewshot)
    check_checkpoint(ckpt, runs)  # what the run would refuse, the plan refuses
    done = {} if force else records.by_hash(records.read(records.records_path(results_dir,
                                                                              suite.name)))
    rows, todo_images = [], 0
    any_fewshot = any(run.method == "fewshot" for run in runs)
    for run in runs:
        lr = choose_lr(run, done)
        run_done = is_done(run, done)
        todo_images += 0 if run_done else images(run)
        protocol, trains = run.task.protocol, METHODS[run.method].trains
        rows.append({"task": run.task.name, "phase": run.phase,
                     **({"seed": run.seed} if overrides.repeats > 1 else {}),
                     "method": run.method,
                     "lr": "best of tune" if run.needs_lr and lr is None else lr,
                     "train": run.task.split(run.train_split)
                     if METHODS[run.method].reads_train_split else "",
                     "eval": run.task.split(run.eval_split),
                     # a few-shot probe trains no steps: its shots instead
                     "steps": protocol.steps if trains else "",
                     "batch": protocol.batch_size if trains else "",
                     **({"shots": "" if trains else ",".join(map(str, protocol.shots))}
                        if any_fewshot else {}),
                     "res": protocol.resolution, "status": "done" if run_done else "to do"})
    text = tabulate(rows, headers="keys")
    summary = f"\n{sum(r['status'] == 'done' for r in rows)} of {len(rows)} runs done; " \
              f"{todo_images:,} training images to go"
    images_per_second = speed() if speed and todo_images else None
    if images_per_second:
        hours = todo_images / images_per_second / 3600
        took = (f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
                if hours * 60 >= 1 else f"{hours * 3600:.0f} s")
        summary += (f", about {took} at the {images_per_second:.1f} images/s measured for "
                    f"{ckpt} on this machine")
    blocked = [state.detail for state in (sources.status(task, data_dir)
                                          for task in data_needed(runs)) if not state.usable]
    if blocked:
        summary += "\ndata missing (the run would stop here before training):\n  " + \
            "\n  ".join(blocked)
    return text + summary
