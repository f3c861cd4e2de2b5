"""The transfer runner: plan a suite's runs, skip those already recorded, run and record the rest.

For each task: if its learning-rate grid has one value (VTAB-1k as the paper ran it), one
final run trains on the task's `fit` split and is scored on `test`. With several values (the
upstream suites, or `--sweep`), each is first trained on `tune_train` and scored on
`tune_val`; the best (ties: the first in the grid) is retrained on `fit` and scored on `test`.
Every finished run appends a record (see `vitbench.records`); a run whose config hash is
recorded is not run again unless forced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import platform
import shutil
import time
from typing import List, Optional, Sequence, Tuple

from vitbench import records, tasks as tasks_lib

# `--sweep` grid for suites that fix one learning rate (VTAB-1k): the paper's fine-tuning grid
# (Table 4). The paper's own VTAB sweep (two rates, two schedules) is not published.
DEFAULT_SWEEP = (0.001, 0.003, 0.01, 0.03)
SCRATCH_PREFIX = "scratch:"


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the suite's protocol (None keeps the protocol's)."""

    steps: Optional[int] = None
    batch_size: Optional[int] = None
    micro_batch_size: Optional[int] = None
    lrs: Optional[Tuple[float, ...]] = None
    resolution: Optional[int] = None
    seed: int = 0

    def apply(self, task: tasks_lib.Task) -> tasks_lib.Task:
        changes = {key: value for key, value in [
            ("steps", self.steps), ("batch_size", self.batch_size), ("lrs", self.lrs),
            ("resolution", self.resolution)] if value is not None}
        return dataclasses.replace(task, protocol=dataclasses.replace(task.protocol, **changes))


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: `phase` is 'tune' (scored on tune_val) or 'final' (scored on test)."""

    suite: str
    task: tasks_lib.Task
    ckpt: str
    phase: str
    lr: Optional[float]  # None for a final run whose rate the sweep chooses
    micro_batch_size: int
    seed: int

    @property
    def train_split(self) -> str:
        return "tune_train" if self.phase == "tune" else "fit"

    @property
    def eval_split(self) -> str:
        return "tune_val" if self.phase == "tune" else "test"

    def config(self, lr: Optional[float] = None) -> dict:
        """Everything that decides this run's number (its hash identifies the run)."""
        p = self.task.protocol
        return {
            "suite": self.suite, "task": self.task.name, "ckpt": self.ckpt,
            "phase": self.phase, "lr": lr if lr is not None else self.lr, "steps": p.steps,
            "batch_size": p.batch_size, "warmup_steps": min(p.warmup_steps, p.steps),
            "resolution": p.resolution, "seed": self.seed,
            "train_split": self.task.split(self.train_split),
            "eval_split": self.task.split(self.eval_split),
            "train_pp": self.task.pp("train"), "eval_pp": self.task.pp("eval"),
            "dataset": self.task.tfds_spec, "source": self.task.source,
            "num_classes": self.task.num_classes, "optimizer": "sgd(momentum=0.9)",
            "grad_clip_norm": 1.0, "schedule": "warmup_cosine",
        }


def plan(suite: tasks_lib.Suite, task_names: Sequence[str], ckpt: str, overrides: Overrides,
         sweep: bool = False) -> List[Run]:
    """All runs of the chosen tasks, in order: tune runs, then each task's final run."""
    runs = []
    for task in suite.select(task_names):
        task = overrides.apply(task)
        grid = task.protocol.lrs
        if sweep and len(grid) == 1 and overrides.lrs is None:
            grid = DEFAULT_SWEEP
            task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol,
                                                                          lrs=grid))
        micro = overrides.micro_batch_size or task.protocol.batch_size
        if micro > task.protocol.batch_size or task.protocol.batch_size % micro:
            raise ValueError(f"micro-batch size {micro} must divide the batch size "
                             f"{task.protocol.batch_size} of {task.name}")
        common = dict(suite=suite.name, task=task, ckpt=ckpt, micro_batch_size=micro,
                      seed=overrides.seed)
        if len(grid) > 1:
            runs += [Run(phase="tune", lr=lr, **common) for lr in grid]
            runs.append(Run(phase="final", lr=None, **common))
        else:
            runs.append(Run(phase="final", lr=grid[0], **common))
    return runs


def choose_lr(run: Run, done: dict) -> Optional[float]:
    """The grid's best rate on tune_val from the records, or None while tune runs are missing."""
    scores = []
    for lr in run.task.protocol.lrs:
        tune = dataclasses.replace(run, phase="tune", lr=lr)
        record = done.get(records.config_hash(tune.config()))
        if record is None:
            return None
        accuracy = record["metrics"]["accuracy"]
        scores.append((-1.0 if accuracy is None else accuracy,  # a diverged run never wins
                       -run.task.protocol.lrs.index(lr), lr))
    return max(scores)[2]


def load_for_task(ckpt: str, task: tasks_lib.Task):
    """The model to fine-tune: `ckpt` with a new zero head for the task, at its resolution."""
    import keras

    from vitbench.checkpoints.loader import load_model
    from vitbench.models.vit import create_model

    size = task.protocol.resolution
    if ckpt.startswith(SCRATCH_PREFIX):
        return create_model(ckpt[len(SCRATCH_PREFIX):], num_classes=task.num_classes,
                            image_size=size)
    model = load_model(ckpt, num_classes=task.num_classes, image_size=size, progress=False)
    # The protocol always starts from a zero head, also when the checkpoint's head already has
    # the task's number of classes (e.g. an ImageNet fine-tune evaluated on ImageNet).
    for variable in model.get_layer("head").weights:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    return model


def checkpoint_id(ckpt: str) -> dict:
    """Name and content hash of the checkpoint (for the record)."""
    if ckpt.startswith(SCRATCH_PREFIX):
        return {"name": ckpt, "sha256": None}
    from vitbench.checkpoints.loader import resolve

    path = resolve(ckpt, progress=False)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": ckpt, "path": str(path), "sha256": digest.hexdigest()}


def precision_policy() -> str:
    """bf16 compute (float32 weights) on GPU and TPU, full float32 on CPU."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        accelerated = jax.devices()[0].platform in ("gpu", "tpu")
    else:
        import tensorflow as tf

        accelerated = bool(tf.config.list_logical_devices("GPU") or
                           tf.config.list_logical_devices("TPU"))
    return "mixed_bfloat16" if accelerated else "float32"


def environment() -> dict:
    import jax
    import keras
    import tensorflow as tf

    return {"keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tf.__version__, "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()] if keras.backend.backend() == "jax"
            else [d.name for d in tf.config.list_logical_devices()],
            "python": platform.python_version()}


def execute(run: Run, lr: float, results_dir: pathlib.Path, data_dir=None,
            checkpoint_every: int = 0, verbose: int = 0, ckpt_info: Optional[dict] = None):
    """Trains, evaluates and records one run; returns its record."""
    import keras

    from vitbench.evaluate import classification
    from vitbench.train import finetune

    config = run.config(lr)
    digest = records.config_hash(config)
    p = run.task.protocol
    train_config = finetune.TrainConfig(lr=lr, steps=p.steps, batch_size=p.batch_size,
                                        micro_batch_size=run.micro_batch_size,
                                        warmup_steps=min(p.warmup_steps, p.steps),
                                        seed=run.seed)
    workdir = pathlib.Path(results_dir) / "work" / run.suite / digest
    start = time.time()
    keras.utils.set_random_seed(run.seed)  # a scratch model's initial weights follow the seed
    policy, previous_policy = precision_policy(), keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    model = load_for_task(run.ckpt, run.task)
    status, error = "finished", None
    try:
        model, summary = finetune.fine_tune(model, run.task, run.train_split, train_config,
                                            data_dir=data_dir, workdir=workdir,
                                            checkpoint_every=checkpoint_every, verbose=verbose)
        metrics = classification.top1_accuracy(model, run.task, run.eval_split,
                                               run.micro_batch_size, data_dir)
        if run.phase == "final" and run.task.real_dataset:
            metrics.update(classification.real_accuracy_of(model, run.task,
                                                           run.micro_batch_size, data_dir))
    except finetune.DivergedError as diverged:
        status, error, summary, metrics = "diverged", str(diverged), {}, {"accuracy": None}
    finally:
        keras.config.set_dtype_policy(previous_policy)
    record = {
        "config_hash": digest, "config": config, "checkpoint": ckpt_info or {"name": run.ckpt},
        "status": status, "error": error,
        "metrics": metrics, "train": summary, "micro_batch_size": run.micro_batch_size,
        "accumulation_steps": train_config.accumulation, "precision": policy,
        "wall_seconds": time.time() - start,
        "environment": environment(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    records.append(records.records_path(results_dir, run.suite), record)
    shutil.rmtree(workdir, ignore_errors=True)  # the record holds what is kept of the run
    return record


OUT_OF_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "OOM", "out of memory")


def _is_out_of_memory(error: Exception) -> bool:
    return any(marker in str(error) for marker in OUT_OF_MEMORY_MARKERS)


def fitting_micro_batch(ckpt: str, task: tasks_lib.Task, try_step=None) -> int:
    """The largest micro-batch (the batch, halved until it divides it) whose training step fits.

    `try_step(micro)` runs one training step at that size and raises on out-of-memory; by
    default it builds the model and trains on zeros.
    """
    try_step = try_step or (lambda micro: _zero_batch_trainer(ckpt, task, micro)())
    micro = task.protocol.batch_size
    while True:
        try:
            try_step(micro)
            return micro
        except Exception as error:  # noqa: BLE001 -- only out-of-memory errors are retried
            if not _is_out_of_memory(error) or micro == 1 or micro % 2:
                raise
            micro //= 2


def _zero_batch_trainer(ckpt: str, task: tasks_lib.Task, micro: int):
    """A function running one training step of the task's model on a batch of zeros."""
    import numpy as np

    from vitbench.train import finetune

    model = load_for_task(ckpt, task)
    finetune.compile_for_finetuning(model, finetune.TrainConfig(0.0, 1, micro, micro))
    size = task.protocol.resolution
    images = np.zeros((micro, size, size, 3), np.float32)
    labels = np.zeros((micro,), np.int64)
    return lambda: model.train_on_batch(images, labels)


def measure_throughput(ckpt: str, task: tasks_lib.Task, micro_batch_size: int,
                       probe_steps: int = 3) -> float:
    """Training images/s of this model at the task's resolution on this machine (zero data)."""
    batch = min(micro_batch_size, 8)
    step = _zero_batch_trainer(ckpt, task, batch)
    step()  # compile
    start = time.perf_counter()
    for _ in range(probe_steps):
        step()
    return probe_steps * batch / (time.perf_counter() - start)


def run_suite(suite: tasks_lib.Suite, task_names: Sequence[str], ckpt: str,
              overrides: Overrides, results_dir, *, sweep: bool = False, data_dir=None,
              force: bool = False, checkpoint_every: int = 0, verbose: int = 1,
              log=print) -> List[dict]:
    """Runs every planned run that is not recorded yet (all of them with `force`)."""
    from vitbench.data import sources

    runs = plan(suite, task_names, ckpt, overrides, sweep)
    needed = {run.task.name: run.task for run in runs}
    needed.update({task.name: task for task in (t.real_labels_task() for t in list(needed.values()))
                   if task is not None})
    sources.check_ready(needed.values(), data_dir)
    path = records.records_path(results_dir, suite.name)
    done = {} if force else records.by_hash(records.read(path))
    ckpt_info, finished = None, []
    for number, run in enumerate(runs, 1):
        lr = run.lr if run.lr is not None else choose_lr(run, {**done, **{
            r["config_hash"]: r for r in finished}})
        digest = records.config_hash(run.config(lr))
        label = f"[{number}/{len(runs)}] {run.task.name} {run.phase} lr={lr}"
        if digest in done:
            log(f"{label}: done ({_result(done[digest])}), skipped")
            continue
        log(f"{label}: training {run.task.protocol.steps} steps of {run.task.protocol.batch_size}")
        ckpt_info = ckpt_info or checkpoint_id(ckpt)
        record = execute(run, lr, results_dir, data_dir, checkpoint_every, verbose, ckpt_info)
        finished.append(record)
        log(f"{label}: {run.eval_split} {_result(record)}")
    return finished


def _result(record: dict) -> str:
    if record.get("status") == "diverged":
        return f"diverged: {record['error']}"
    return f"accuracy {record['metrics']['accuracy']:.4f}"


def describe_plan(suite, task_names, ckpt, overrides, results_dir, sweep=False,
                  images_per_second: Optional[float] = None) -> str:
    """The plan as a table: every run, whether it is done, and its cost."""
    from tabulate import tabulate

    runs = plan(suite, task_names, ckpt, overrides, sweep)
    done = records.by_hash(records.read(records.records_path(results_dir, suite.name)))
    rows, todo_images = [], 0
    for run in runs:
        lr = run.lr if run.lr is not None else choose_lr(run, done)
        is_done = lr is not None and records.config_hash(run.config(lr)) in done
        images = run.task.protocol.steps * run.task.protocol.batch_size
        todo_images += 0 if is_done else images
        rows.append({"task": run.task.name, "phase": run.phase,
                     "lr": lr if lr is not None else "best of tune",
                     "train": run.task.split(run.train_split),
                     "eval": run.task.split(run.eval_split), "steps": run.task.protocol.steps,
                     "batch": run.task.protocol.batch_size, "res": run.task.protocol.resolution,
                     "status": "done" if is_done else "to do"})
    text = tabulate(rows, headers="keys")
    summary = f"\n{sum(r['status'] == 'done' for r in rows)} of {len(rows)} runs done; " \
              f"{todo_images:,} training images to go"
    if images_per_second:
        summary += (f", about {todo_images / images_per_second / 3600:.2f} h at the "
                    f"{images_per_second:.1f} images/s measured for {ckpt} on this machine")
    return text + summary
