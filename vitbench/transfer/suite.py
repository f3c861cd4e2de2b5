"""Runs a suite: every planned run not recorded yet, each claimed first (processes may share a
results dir), executed and appended to the suite's records."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import time
import warnings
from collections.abc import Sequence

import keras

from vitbench import environment, files, records
from vitbench import tasks as tasks_lib
from vitbench.checkpoints import identity
from vitbench.data import sources
from vitbench.evaluate import outcomes
from vitbench.train import distribute, progress
from vitbench.transfer import stacking
from vitbench.transfer.methods import METHODS, RunContext
from vitbench.transfer.plan import (
    Overrides,
    Run,
    check_checkpoint,
    data_needed,
    images,
    is_done,
    plan,
    resolve,
)


class RunsFailed(RuntimeError):
    """Runs of a suite failed; the others ran. `finished` holds the records of those that
    finished, `failures` one entry per failed run (also in `<results_dir>/failed/`)."""

    def __init__(self, finished: list[dict], failures: list[dict]):
        self.finished, self.failures = finished, failures
        lines = [f"{failure['label']}: {failure['error']}" for failure in failures]
        super().__init__(f"{len(failures)} of the suite's runs failed (the others ran; "
                         "running the command again retries them):\n  " + "\n  ".join(lines))


def failures_path(results_dir, suite: str) -> pathlib.Path:
    """Where a suite's failed runs are noted, one JSON line each (never read as records)."""
    return pathlib.Path(results_dir) / "failed" / f"{suite}.jsonl"


def execute(run: Run, lr: float, results_dir: pathlib.Path, data_dir=None,
            checkpoint_every: int = 0, verbose: int = 0, ckpt_info: dict | None = None,
            suite_bar=None, device_data: str = "auto") -> dict:
    """Trains or probes, evaluates and records one run.

    Args:
        run: the run (`plan.Run`); lr: its learning rate (None for a probe or a head).
        results_dir: where the record is appended and the run's work folder lives.
        data_dir, checkpoint_every, verbose, suite_bar, device_data: see
            `methods.RunContext`.
        ckpt_info: the record's `checkpoint` field (default: the name alone).
    Returns:
        The record, as appended to `<results_dir>/runs/<suite>.jsonl`.
    """
    context = _context(run, lr, results_dir, data_dir, checkpoint_every, verbose, suite_bar,
                       device_data)
    start = time.time()
    keras.utils.set_random_seed(run.seed)  # a scratch model's initial weights follow the seed
    with _precision(run.precision):
        outcome = METHODS[run.method].execute(run, lr, context)
    return _record(run, lr, outcome, context, start, results_dir, data_dir, ckpt_info)


def execute_stacked(runs: Sequence[Run], lrs: Sequence[float], results_dir: pathlib.Path,
                    data_dir=None, checkpoint_every: int = 0, verbose: int = 0,
                    ckpt_info: dict | None = None, suite_bar=None,
                    device_data: str = "auto") -> list[dict]:
    """Trains fine-tuning runs that differ in the rate and seed only (`stacking.groups`)
    together, then evaluates and records each as `execute` would (each record also names the
    others of its stack).

    Raises:
        `stack.NotStackable`: they cannot train together here (nothing trained).
    """
    contexts = [_context(run, lr, results_dir, data_dir, checkpoint_every, verbose, suite_bar,
                         device_data) for run, lr in zip(runs, lrs)]
    start = time.time()
    with _precision(runs[0].precision):
        outcomes = METHODS[runs[0].method].execute_stacked(runs, lrs, contexts)
    digests = [context.workdir.name for context in contexts]
    return [_record(run, lr, {**outcome, "stacked_with": [d for d in digests if d != digest]},
                    context, start, results_dir, data_dir, ckpt_info)
            for run, lr, outcome, context, digest in zip(runs, lrs, outcomes, contexts,
                                                         digests)]


def _context(run, lr, results_dir, *how) -> RunContext:
    """The run's context: its workdir, then `how` (the other `RunContext` fields)."""
    workdir = pathlib.Path(results_dir) / "work" / run.suite / records.config_hash(
        run.config(lr))
    return RunContext(workdir, *how)


@contextlib.contextmanager
def _precision(policy: str):
    previous_policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _record(run, lr, outcome, context, start, results_dir, data_dir, ckpt_info) -> dict:
    """Writes the run's per-example outcomes (`outcomes.write`, where the method scored
    items), appends its record (its outcome, the outcomes file and how it ran) and removes its
    workdir."""
    config = run.config(lr)
    digest = records.config_hash(config)
    scored = outcome.pop("scored", None)
    if scored is not None:
        outcome["outcomes"] = outcomes.write(results_dir, run.suite, digest, *scored)
    record = {
        "config_hash": digest, "config": config,
        "checkpoint": ckpt_info or {"name": run.ckpt},
        "protocol": dict(run.defaults), **outcome, "precision": run.precision,
        "data_version": _data_version(run.task, data_dir),
        # what trained it ("one device" unless a Keras distribution is set), beside the
        # devices the environment lists
        "distribution": distribute.describe(keras.distribution.distribution()),
        "wall_seconds": time.time() - start,
        "environment": environment.environment(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    records.append(records.records_path(results_dir, run.suite), record)
    shutil.rmtree(context.workdir, ignore_errors=True)  # the record holds what is kept
    return record


def _data_version(task: tasks_lib.Task, data_dir=None) -> str | None:
    """The TFDS version a run read (its config holds the task's version pattern, `3.*.*`)."""
    if task.source != "tfds":
        return None
    return str(sources.tfds_prepared_builder(task, data_dir).version)


def run_suite(suite: tasks_lib.Suite, task_names: Sequence[str], ckpt: str,
              overrides: Overrides, results_dir, *, sweep: bool = False, data_dir=None,
              force: bool = False, checkpoint_every: int = 0, verbose: int = 1,
              log=None, fewshot: bool = True,
              stack: int | None = None, device_data: str = "auto"
              ) -> list[dict]:
    """Runs every planned run that is not recorded yet (all of them with `force`).

    Up to `stack` consecutive fine-tuning runs that differ in the rate and seed only (a
    sweep's tune runs, the final runs of several seeds: `stacking.groups`) train together
    where `stack.available()` (None: `stacking.size`'s default for this device); a stack that
    cannot (out of memory, say) trains its runs one by one. `device_data` ("auto", "on", "off"):
    whether a fine-tuning run keeps its training split on the device (`train.feed`).

    With `verbose`, a suite progress bar counts the training images of the runs to do and a
    run bar below it shows the current run's step, loss and accuracy. Processes may share a
    results dir: each run is claimed first (`claimed`), and one claimed elsewhere is skipped.

    A run that fails (its data cannot be read, a probe refused by `--strict_shots`, out of
    memory, ...) is noted in `failures_path` and the suite goes on; it is not recorded, so
    the next call tries it again.

    Returns:
        The records of the runs this call finished.
    Raises:
        ValueError, KeyError, FileNotFoundError: a bad plan, checkpoint or results dir, before
            any training; `sources.ManualDownloadError`: data that cannot be had.
        RunsFailed: at the end, when runs failed.
    """
    runs = plan(suite, task_names, ckpt, overrides, sweep, fewshot)
    check_checkpoint(ckpt, runs)
    path = records.records_path(results_dir, suite.name)
    files.make_folder(path.parent, f"the results dir {results_dir}")  # before any training
    sources.check_ready(data_needed(runs), data_dir)
    done = {} if force else records.by_hash(records.read(path))
    to_do = [run for run in runs if not is_done(run, done)]
    total = sum(images(run) for run in to_do)  # none for few-shot probes: no bar
    suite_bar = progress.bar(f"{suite.name} suite", total, enabled=bool(verbose and total))
    log = log or suite_bar.write
    ckpt_info, finished, failures = None, [], []
    numbers = {id(run): number for number, run in enumerate(runs, 1)}

    def label_of(run, chosen):
        """The log's name of planned `run`, as it trains (`chosen`, with its setting)."""
        return (f"[{numbers[id(run)]}/{len(runs)}] {run.task.name} "
                f"{METHODS[run.method].tag(chosen, chosen.lr)}"
                + (f" seed={run.seed}" if overrides.repeats > 1 else ""))

    def to_run(run):
        """(run, lr, digest, label) of a run to do now, or None (logged why not)."""
        nonlocal done
        if not force:  # runs that other processes on this results dir have finished
            done = records.by_hash(records.read(path))
        chosen = resolve(run, {**done, **{r["config_hash"]: r for r in finished}})
        if chosen is None:
            log(f"{label_of(run, run)}: its tune runs are not recorded (training in another "
                "process, or failed there), skipped")
            return None
        digest, label = records.config_hash(chosen.config()), label_of(run, chosen)
        if digest in done:
            log(f"{label}: done ({describe_result(done[digest])}), skipped")
            return None
        return chosen, chosen.lr, digest, label

    def finish(record, run, label):
        finished.append(record)
        speed = record.get("train", {}).get("images_per_second")
        log(f"{label}: {run.eval_split} {describe_result(record)}"
            + (f" ({speed:.1f} images/s)" if speed else ""))

    def one_by_one(items):
        for run, lr, digest, label in items:
            log(f"{label}: {METHODS[run.method].doing(run)} at "
                f"{run.task.protocol.resolution} px")
            try:
                record = execute(run, lr, results_dir, data_dir, checkpoint_every, verbose,
                                 ckpt_info, suite_bar if verbose else None, device_data)
            except Exception as error:  # noqa: BLE001  (noted; the other runs go on)
                failures.append(_note_failure(results_dir, run, lr, digest, label, error))
                log(f"{label}: failed: {type(error).__name__}: {error}")
                continue
            finish(record, run, label)

    def together(items) -> bool:
        """Trains the items as one stack; False where they must run one by one instead."""
        for run, _, _, label in items:
            log(f"{label}: {METHODS[run.method].doing(run)} at "
                f"{run.task.protocol.resolution} px, stacked with {len(items) - 1} other(s)")
        try:
            group_records = execute_stacked(
                [item[0] for item in items], [item[1] for item in items], results_dir,
                data_dir, checkpoint_every, verbose, ckpt_info, suite_bar if verbose else None,
                device_data)
        except Exception as error:  # noqa: BLE001  (out of memory, say: one by one instead)
            log(f"stack of {len(items)} runs not trained together ({type(error).__name__}: "
                f"{error}); training them one by one")
            return False
        for record, item in zip(group_records, items):
            finish(record, item[0], item[3])
        return True

    with suite_bar:
        for group in stacking.groups(runs, stacking.size(stack)):
            items = [item for item in map(to_run, group) if item is not None]
            with contextlib.ExitStack() as claims:
                mine = []
                for item in items:
                    run, _, digest, label = item
                    if claims.enter_context(claimed(results_dir, run.suite, digest)) and (
                            force or digest not in records.by_hash(records.read(path))):
                        mine.append(item)
                    else:  # finished meanwhile, or training elsewhere
                        log(f"{label}: running or done in another process, skipped")
                if mine:
                    ckpt_info = ckpt_info or identity.checkpoint_id(
                        ckpt, mine[0][0].normalization)
                if not (len(mine) > 1 and together(mine)):
                    one_by_one(mine)
    if failures:
        raise RunsFailed(finished, failures)
    return finished


def _note_failure(results_dir, run: Run, lr, digest: str, label: str, error: Exception
                  ) -> dict:
    """Appends a failed run's error to `failures_path`; returns the note."""
    note = {"config_hash": digest, "config": run.config(lr), "label": label,
            "error": f"{type(error).__name__}: {error}",
            "failed": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    records.append(failures_path(results_dir, run.suite), note)
    return note


@contextlib.contextmanager
def claimed(results_dir, suite: str, digest: str):
    """Holds `<results_dir>/work/<suite>/<digest>.lock` for this process, and yields True; or
    False where another process holds it (its run is being trained there). Processes sharing
    a results dir (one per GPU, say) so never train one run twice or share its work folder.
    The lock goes with the process, however it ends; a claimer checks the records again.
    Where the filesystem has no locks (Windows, Lustre without flock), it yields True."""
    try:
        import fcntl
    except ImportError:
        yield True
        return
    lock = pathlib.Path(results_dir) / "work" / suite / f"{digest}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            yield False
            return
        except OSError as error:  # no locks on this filesystem
            handle.close()
            warnings.warn(f"{lock}: cannot lock ({error}); processes sharing {results_dir} "
                          "could train this run twice", stacklevel=2)
            yield True
            return
        try:  # the file the previous holder removed (as it finished) is no claim: again
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield True
    finally:
        lock.unlink(missing_ok=True)  # a later claimer makes a new one, then reads records
        handle.close()


def recorded(suite, task_names, ckpt, overrides, results_dir, sweep=False,
             fewshot: bool = True) -> list[dict]:
    """The records of the planned runs that are recorded (the latest of each config)."""
    done = records.by_hash(records.read(records.records_path(results_dir, suite.name)))
    found = []
    for run in plan(suite, task_names, ckpt, overrides, sweep, fewshot):
        if is_done(run, done):
            found.append(done[records.config_hash(resolve(run, done).config())])
    return found


def describe_result(record: dict) -> str:
    """A record's outcome in a few words: its accuracy, few-shot scores or divergence."""
    if record.get("status") == "diverged":
        return f"diverged: {record['error']}"
    metrics = record["metrics"]
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.4f}"
    return ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()
                     if key.endswith("shot"))
