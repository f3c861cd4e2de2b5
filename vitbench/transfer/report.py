"""`vitbench run --dry_run`: the plan as a table, what is done, and what is left to train."""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from vitbench import records
from vitbench.data import sources
from vitbench.transfer import stacking
from vitbench.transfer.methods import METHODS
from vitbench.transfer.plan import (
    check_checkpoint,
    data_needed,
    images,
    is_done,
    plan,
    resolve,
)


def describe_plan(suite, task_names, ckpt, overrides, results_dir, sweep=False,
                  speed: Callable[[], float] | None = None, fewshot: bool = True,
                  data_dir=None, force: bool = False, stack: int = 1,
                  stacked_speed: Callable[[int], float] | None = None) -> str:
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
        stack: runs per stack (`stacking.groups`; 1: none stack), as `vitbench run --stack`;
            a column numbers the stacks of runs to do.
        stacked_speed: `stacked_speed(members)` measures the images/s of each member of a
            stack (e.g. `sizing.measure_stacked_throughput`), for the time stacks take.
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
    any_probe = any(METHODS[run.method].work(run) for run in runs)
    finished = {id(run) for run in runs if is_done(run, done)}
    stacks = [[run for run in group if id(run) not in finished]
              for group in stacking.groups(runs, stack)]
    stacks = [group for group in stacks if len(group) > 1]
    stack_of = {id(run): number for number, group in enumerate(stacks, 1) for run in group}
    several_seeds = len({run.seed for run in runs}) > 1
    decays = any(METHODS[run.method].fine_tunes and run.recipe.sweeps_weight_decay
                 for run in runs)
    prompted = any(METHODS[run.method].prompted for run in runs)
    for run in runs:
        chosen = resolve(run, done)
        lr, decay, tokens = (None, None, None) if chosen is None else (
            chosen.lr, chosen.weight_decay, chosen.prompt_tokens)
        run_done = id(run) in finished
        todo_images += 0 if run_done else images(run)
        protocol, trains = run.task.protocol, METHODS[run.method].trains
        rows.append({"task": run.task.name, "phase": run.phase,
                     **({"seed": run.seed} if several_seeds else {}),
                     "method": run.method,
                     "lr": "best of tune" if run.needs_lr and lr is None else lr,
                     **({"wd": "best of tune" if run.needs_lr and lr is None else decay}
                        if decays else {}),
                     **({"p": "best of tune" if run.needs_lr and lr is None else tokens}
                        if prompted else {}),
                     "train": run.task.split(run.train_split)
                     if METHODS[run.method].reads_train_split else "",
                     "eval": run.task.split(run.eval_split),
                     # a few-shot probe trains no steps: its shots instead
                     "steps": run.schedule[0] if trains else "",
                     "batch": protocol.batch_size if trains else "",
                     **({"shots": "" if trains else ",".join(map(str, protocol.shots))}
                        if any_fewshot else {}),
                     **({"probe": METHODS[run.method].work(run)} if any_probe else {}),
                     "res": protocol.resolution,
                     **({"stack": stack_of.get(id(run), "")} if stacks else {}),
                     "status": "done" if run_done else "to do"})
    text = tabulate(rows, headers="keys")
    summary = f"\n{sum(r['status'] == 'done' for r in rows)} of {len(rows)} runs done; " \
              f"{todo_images:,} training images to go"
    summary += _sweep_cost(runs)
    probes = [run for run in runs if METHODS[run.method].work(run) and id(run) not in finished]
    if probes:
        summary += (f"; {len(probes)} probe(s) of frozen features to do: each split embedded "
                    "once per checkpoint (cached), then the heads or neighbours in seconds "
                    "(benchmarks/linear_grid_cost.py)")
    if stacks:
        summary += (f"; {sum(map(len, stacks))} of them train in {len(stacks)} stack(s) of "
                    f"up to {max(map(len, stacks))} runs")
    images_per_second = speed() if speed and todo_images else None
    if images_per_second:
        seconds = todo_images / images_per_second
        summary += (f", about {_duration(seconds)}{' one by one' if stacks else ''} at the "
                    f"{images_per_second:.1f} images/s measured for {ckpt} on this machine")
        if stacks and stacked_speed:
            saved = _stacking_saves(stacks, images_per_second, stacked_speed)
            summary += (f"; stacked, about {_duration(seconds - saved)} "
                        f"({_duration(abs(saved))} {'less' if saved >= 0 else 'more'})")
    blocked = [state.detail for state in (sources.status(task, data_dir)
                                          for task in data_needed(runs)) if not state.usable]
    if blocked:
        summary += "\ndata missing (the run would stop here before training):\n  " + \
            "\n  ".join(blocked)
    return text + summary


def _sweep_cost(runs) -> str:
    """What the tune runs add, as a multiple of the final runs' training images (done or
    not), where there are tune runs."""
    tune = sum(images(run) for run in runs if run.phase == "tune")
    final = sum(images(run) for run in runs if run.phase == "final")
    if not (tune and final):
        return ""
    return f" (the tune runs make the plan {(tune + final) / final:.2f}x the final runs' images)"


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    return (f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
            if hours * 60 >= 1 else f"{hours * 3600:.0f} s")


def _stacking_saves(stacks, images_per_second: float,
                    stacked_speed: Callable[[int], float]) -> float:
    """Seconds the stacks save against training their runs one by one: a stack of n takes
    one member's images at each member's measured images/s (`stacked_speed(n)`)."""
    speeds, saved = {}, 0.0
    for group in stacks:
        members = len(group)
        if members not in speeds:
            speeds[members] = stacked_speed(members)
        each = images(group[0])
        saved += members * each / images_per_second - each / speeds[members]
    return saved
