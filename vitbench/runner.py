"""The transfer runner: plan a suite's runs, skip those already recorded, run and record the rest.

For each task: if its learning-rate grid has one value (VTAB-1k as the paper ran it), one
final run trains on the task's `fit` split and is scored on `test`. With several values (the
upstream suites, or `--sweep`), each is first trained on `tune_train` and scored on
`tune_val`; the best (ties: the smaller rate) is retrained on `fit` and scored on `test`.
Every finished run appends a record (see `vitbench.records`); a run whose config hash is
recorded is not run again unless forced.

Runs train and evaluate under the global `keras.distribution` when one is set (`vitbench run`
sets data parallelism over every local device, `vitbench.train.distribute.configure`): each
batch and micro-batch is split over the devices, so both must divide evenly
(`check_batches`), and the numbers are one device's up to float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import pathlib
import platform
import shutil
import time
from collections.abc import Callable, Sequence

from vitbench import files, records, rules
from vitbench import tasks as tasks_lib
from vitbench.train import execution

# `--sweep` grid for suites that fix one learning rate (VTAB-1k): the paper's fine-tuning grid
# (Table 4). The paper's own VTAB sweep (two rates, two schedules) is not published.
DEFAULT_SWEEP = (0.001, 0.003, 0.01, 0.03)
SCRATCH_PREFIX = "scratch:"


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the suite's protocol (None keeps the protocol's)."""

    steps: int | None = None
    warmup_steps: int | None = None  # the protocol's (at most the steps) when None
    batch_size: int | None = None
    micro_batch_size: int | None = None
    lrs: tuple[float, ...] | None = None
    resolution: int | None = None
    polyak: float | None = None
    shots: tuple[int, ...] | None = None
    seed: int = 0
    repeats: int = 1  # the whole protocol once per seed: seed, seed + 1, ...
    remat: bool = False  # rematerialise each block's activations (memory, not numbers)
    as_released: bool = False  # score the checkpoint's own head instead of fine-tuning

    def __post_init__(self):
        for key, value in self.changes.items():  # as a suite file's values are checked
            rules.check(tasks_lib.PROTOCOL_RULES, key, value, f"--{key}")
        rules.check({"repeats": rules.integer(1)}, "repeats", self.repeats, "--repeats")

    @property
    def seeds(self) -> range:
        return range(self.seed, self.seed + self.repeats)

    @property
    def changes(self) -> dict:
        """The protocol fields these overrides set."""
        return {key: value for key, value in [
            ("steps", self.steps), ("warmup_steps", self.warmup_steps),
            ("batch_size", self.batch_size), ("lrs", self.lrs),
            ("resolution", self.resolution), ("polyak", self.polyak), ("shots", self.shots)]
            if value is not None}

    def apply(self, task: tasks_lib.Task) -> tasks_lib.Task:
        changes = self.changes
        if self.as_released and task.protocol.method == "finetune":
            changes["method"] = "evaluate"
        return dataclasses.replace(task, protocol=dataclasses.replace(task.protocol, **changes))


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: `phase` is 'tune' (scored on tune_val) or 'final' (scored on test)."""

    suite: str
    task: tasks_lib.Task
    ckpt: str
    phase: str
    lr: float | None  # None for a final run whose rate the sweep chooses
    # Images per pass; None: `execution.pass_size` of the loaded model (the batch on an
    # accelerator, cache-sized passes on a CPU).
    micro_batch_size: int | None
    seed: int
    precision: str = "float32"  # the compute dtype policy (see `precision_policy`)
    ckpt_sha256: str | None = None  # content of a local checkpoint file (see `content_key`)
    data_sha256: str | None = None  # a folder or CSV task's files (`sources.fingerprint`)
    remat: bool = False  # rematerialised blocks: less memory, the same numbers (not in config)
    # The suite's own protocol settings (`Protocol.settings`, before overrides), recorded for
    # the leaderboards: the row of a run whose settings differ (not in config).
    defaults: tuple[tuple[str, object], ...] = ()

    @property
    def method(self) -> str:
        return self.task.protocol.method

    @property
    def needs_lr(self) -> bool:
        """A final fine-tuning run whose rate the tune runs choose."""
        return self.method == "finetune" and self.lr is None

    @property
    def train_split(self) -> str:
        return "tune_train" if self.phase == "tune" else "fit"

    @property
    def eval_split(self) -> str:
        return "tune_val" if self.phase == "tune" else "test"

    def config(self, lr: float | None = None) -> dict:
        """Everything that decides this run's number (its hash identifies the run): the fields
        of every run, and those of its method (`Method.settings`)."""
        p = self.task.protocol
        common = {
            "suite": self.suite, "task": self.task.name, "ckpt": self.ckpt,
            "ckpt_sha256": self.ckpt_sha256, "precision": self.precision, "method": self.method,
            "phase": self.phase, "seed": self.seed, "resolution": p.resolution,
            "train_split": self.task.split(self.train_split),
            "eval_split": self.task.split(self.eval_split), "eval_pp": self.task.pp("eval"),
            "dataset": self.task.tfds_spec, "source": self.task.source,
            "num_classes": self.task.num_classes,
            **({"data_sha256": self.data_sha256} if self.data_sha256 else {})}
        return {**common, **METHODS[self.method].settings(self, lr)}


def plan(suite: tasks_lib.Suite, task_names: Sequence[str], ckpt: str, overrides: Overrides,
         sweep: bool = False, fewshot: bool = True) -> list[Run]:
    """All runs of the chosen tasks, in order: per fine-tuning task and seed
    (`overrides.seeds`) its tune runs then its final run (each seed selects its own rate);
    then the few-shot probes (the suite's few-shot tasks, and with `fewshot` the probes its
    `[fewshot]` table adds to its fine-tuning tasks)."""
    runs, precision, ckpt_sha256 = [], precision_policy(), content_key(ckpt)
    released = released_head(ckpt) if overrides.as_released else None  # read once
    for task in suite.select(task_names):
        if task.protocol.method == "fewshot":
            continue
        defaults = tuple(task.protocol.settings().items())
        task = overrides.apply(task)
        micro = overrides.micro_batch_size
        check_batches([task], micro)
        if task.protocol.method == "evaluate":
            runs.append(_as_released_run(suite, task, ckpt, overrides, precision, ckpt_sha256,
                                         defaults, released))
            continue
        grid = task.protocol.lrs
        if sweep and len(grid) == 1 and overrides.lrs is None:
            grid = DEFAULT_SWEEP
            task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol,
                                                                          lrs=grid))
        common = dict(suite=suite.name, task=task, ckpt=ckpt, micro_batch_size=micro,
                      precision=precision, ckpt_sha256=ckpt_sha256, remat=overrides.remat,
                      defaults=defaults, data_sha256=_data_key(task))
        for seed in overrides.seeds:
            if len(grid) > 1:
                runs += [Run(phase="tune", lr=lr, seed=seed, **common) for lr in grid]
                runs.append(Run(phase="final", lr=None, seed=seed, **common))
            else:
                runs.append(Run(phase="final", lr=grid[0], seed=seed, **common))
    if overrides.as_released:  # heads only: no probes
        if not runs:
            raise ValueError(f"--as_released scores fine-tuning tasks' test splits; the chosen "
                             f"tasks of suite {suite.name} are few-shot probes")
        return runs
    probes = suite.fewshot_tasks(task_names) if fewshot else tuple(
        task for task in suite.select(task_names) if task.protocol.method == "fewshot")
    # A probe's shot draws have seeds of their own (protocol.seeds); the run's seed only draws
    # a scratch model's weights, so another seed of a checkpoint is the same probe.
    probe_seeds = overrides.seeds if ckpt.startswith(SCRATCH_PREFIX) else [0]
    for task in probes:
        probe = overrides.apply(task)
        check_batches([probe], overrides.micro_batch_size)
        runs += [Run(suite.name, probe, ckpt, "final", None, overrides.micro_batch_size, seed,
                     precision, ckpt_sha256, data_sha256=_data_key(task),
                     defaults=tuple(task.protocol.settings().items()))
                 for seed in probe_seeds]
    return runs


def _as_released_run(suite, task, ckpt, overrides, precision, ckpt_sha256, defaults,
                     known) -> Run:
    """The run scoring `ckpt`'s own head on the task's test split: at the checkpoint's own
    resolution where that is known without loading it (`known`, from `released_head`) and
    `--resolution` does not say, with seed 0 (nothing random: `--repeats` would only repeat
    it)."""
    if known and known[1] and overrides.resolution is None:
        task = dataclasses.replace(task, protocol=dataclasses.replace(
            task.protocol, resolution=known[1]))
    return Run(suite.name, task, ckpt, "final", None, overrides.micro_batch_size, 0, precision,
               ckpt_sha256, data_sha256=_data_key(task), defaults=defaults)


def released_head(ckpt: str) -> tuple[int, int | None] | None:
    """(head classes, resolution) of a registry checkpoint or a local `.npz` (also a pretrain
    workdir's), read without loading the model; None where only loading tells (a scratch
    model, a `.keras` file, a URL not in the registry)."""
    from vitbench.checkpoints import download, npz, registry
    from vitbench.checkpoints.loader import resolve

    entry = registry.find_checkpoint(ckpt)
    if entry is not None:
        return entry.num_classes, entry.resolution
    if ckpt.startswith(SCRATCH_PREFIX) or download.is_remote(ckpt):
        return None
    path = resolve(ckpt, progress=False)  # a missing file raises, naming it
    return npz.head_and_resolution(path) if path.suffix == ".npz" else None


def _data_key(task: tasks_lib.Task) -> str | None:
    """The content key of a folder or CSV task's files; TFDS data counts by name and version."""
    if task.source == "tfds":
        return None
    from vitbench.data import sources

    return sources.fingerprint(task)


def _data_version(task: tasks_lib.Task, data_dir=None) -> str | None:
    """The TFDS version a run read (its config holds the task's version pattern, `3.*.*`)."""
    if task.source != "tfds":
        return None
    from vitbench.data import sources

    return str(sources.tfds_prepared_builder(task, data_dir).version)


def choose_lr(run: Run, done: dict) -> float | None:
    """The run's rate, or for a final run after tune runs the grid's best rate on tune_val from
    the records (None while tune runs are missing)."""
    from vitbench.leaderboards.collect import best_lr

    if not run.needs_lr:
        return run.lr
    scores = {}
    for lr in run.task.protocol.lrs:
        tune = dataclasses.replace(run, phase="tune", lr=lr)
        record = done.get(records.config_hash(tune.config()))
        if record is None:
            return None
        scores[lr] = record["metrics"]["accuracy"]
    return best_lr(scores)  # as the leaderboards choose


def _load(ckpt: str, task: tasks_lib.Task, num_classes: int, **options):
    """`ckpt` (or a scratch model) at the task's resolution with a `num_classes` head;
    `options` are ViTConfig fields to override (e.g. remat=True)."""
    from vitbench.checkpoints.loader import load_model
    from vitbench.models.vit import create_model

    size = task.protocol.resolution
    if ckpt.startswith(SCRATCH_PREFIX):
        return create_model(ckpt[len(SCRATCH_PREFIX):], num_classes=num_classes,
                            image_size=size, **options)
    return load_model(ckpt, num_classes=num_classes, image_size=size, progress=False,
                      **options)


def load_for_task(ckpt: str, task: tasks_lib.Task, remat: bool = False):
    """The model to fine-tune: `ckpt` with a new zero head for the task, at its resolution
    (with `remat`, each block's activations are recomputed in the backward pass)."""
    import keras

    model = _load(ckpt, task, task.num_classes, remat=remat)
    # The protocol always starts from a zero head, also when the checkpoint's head already has
    # the task's number of classes (e.g. an ImageNet fine-tune evaluated on ImageNet).
    for variable in model.get_layer("head").weights:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    return model


def load_for_features(ckpt: str, task: tasks_lib.Task):
    """The frozen model of a few-shot probe: `ckpt` without its head (keeping the pre-logits
    layer where it has one), at the task's resolution."""
    return _load(ckpt, task, 0)


def check_checkpoint(ckpt: str, runs: Sequence[Run]) -> None:
    """Fails, before any work, on a checkpoint that cannot be had (an unknown scratch model,
    a local file that is not there, a download in offline mode), whose patch is larger than a
    run's images (for zoo and registry models, whose patch size is known without reading the
    file), or whose head cannot score a task as released (a scratch model, another number of
    classes)."""
    from vitbench.checkpoints import download, registry
    from vitbench.checkpoints.loader import resolve
    from vitbench.models import zoo

    entry = registry.find_checkpoint(ckpt)
    scored = [run.task for run in runs if run.method == "evaluate"]
    if scored and ckpt.startswith(SCRATCH_PREFIX):
        raise ValueError(f"{ckpt} is untrained: scoring a head as released needs a trained "
                         "checkpoint")
    known = released_head(ckpt) if scored else None  # read once for all the tasks
    if known is not None:
        for task in scored:
            check_head(ckpt, known[0], task)
    if ckpt.startswith(SCRATCH_PREFIX):
        model = ckpt[len(SCRATCH_PREFIX):]
    elif entry is not None:
        download.check_fetchable(entry.url)  # offline and not cached: refused here
        model = entry.model
    elif download.is_remote(ckpt):
        download.check_fetchable(ckpt)
        return
    else:
        resolve(ckpt, progress=False)  # a missing file raises, naming it
        return
    config = zoo.get_config(model)  # an unknown name lists the valid ones
    for run in runs:
        config.grid(run.task.protocol.resolution)  # smaller than a patch: raises, naming both


def check_head(ckpt: str, head_classes: int, task: tasks_lib.Task) -> None:
    """Raises unless a checkpoint's head has the task's classes (scoring it as released)."""
    if head_classes != task.num_classes:
        what = "no head" if not head_classes else f"a {head_classes}-class head"
        raise ValueError(f"{ckpt} has {what} and {task.name} has {task.num_classes} classes: "
                         "scoring as released needs a checkpoint fine-tuned on the task's "
                         "label space (e.g. an ImageNet-1k fine-tune for imagenet); fine-tune "
                         "this one instead (without --as_released)")


def content_key(ckpt: str) -> str | None:
    """What identifies a checkpoint's weights in a run's config, beside its name.

    A local file is identified by its content (sha256): the same path trained again is a new
    checkpoint. A published checkpoint (registry name or URL) is identified by its name alone,
    so that a plan can be checked before anything is downloaded; records hold its hash too.
    """
    from vitbench.checkpoints import download, registry

    if (ckpt.startswith(SCRATCH_PREFIX) or registry.find_checkpoint(ckpt) is not None
            or download.is_remote(ckpt)):
        return None
    from vitbench.checkpoints.loader import resolve

    path = pathlib.Path(ckpt).expanduser()
    return file_sha256(resolve(ckpt, progress=False)) if path.exists() else None


def file_sha256(path: pathlib.Path) -> str:
    """sha256 of a file, computed once per (path, size, modification time)."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from vitbench.checkpoints import download

    return download.sha256_of(pathlib.Path(path))


def checkpoint_id(ckpt: str) -> dict:
    """Name, path and content hash of the checkpoint (for the record)."""
    if ckpt.startswith(SCRATCH_PREFIX):
        return {"name": ckpt, "sha256": None}
    from vitbench.checkpoints.loader import resolve

    path = resolve(ckpt, progress=False)
    return {"name": ckpt, "path": str(path), "sha256": file_sha256(path)}


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


def replicas() -> int:
    """How many ways the global distribution splits each batch (1 on one device)."""
    import keras

    from vitbench.train import distribute

    return distribute.data_parallel_size(keras.distribution.distribution())


def check_batches(task_list: Sequence[tasks_lib.Task],
                  micro_batch_size: int | None = None) -> None:
    """Raises, before any work, unless the micro-batch divides every task's batch and both
    split evenly over the data-parallel devices."""
    ways = replicas()
    for task in task_list:
        batch = task.protocol.batch_size
        try:
            execution.check_split(batch, micro_batch_size or batch, ways,
                                  f"--batch_size and --micro_batch_size multiples of {ways}, or "
                                  "show fewer devices (e.g. CUDA_VISIBLE_DEVICES)")
        except ValueError as error:
            raise ValueError(f"{task.name}: {error}") from None


def _pass_size(run: Run, model) -> int:
    """The run's micro-batch: the one asked for, else `execution.pass_size` of the model."""
    return run.micro_batch_size or execution.pass_size(
        model.config, model.image_size, run.task.protocol.batch_size, replicas())


def _fine_tune_and_score(run: Run, lr: float, workdir: pathlib.Path, data_dir,
                         checkpoint_every: int, verbose: int, suite_bar) -> dict:
    """Fine-tunes from the checkpoint with a zero head, then scores the eval split."""
    from vitbench.train import finetune

    p = run.task.protocol
    model = load_for_task(run.ckpt, run.task, run.remat)
    micro = _pass_size(run, model)
    train_config = finetune.TrainConfig(lr=lr, steps=p.steps, batch_size=p.batch_size,
                                        micro_batch_size=micro,
                                        warmup_steps=min(p.warmup_steps, p.steps),
                                        seed=run.seed, polyak=p.polyak)
    outcome = {"status": "finished", "error": None, "micro_batch_size": micro,
               "accumulation_steps": train_config.accumulation}
    try:
        model, outcome["train"] = finetune.fine_tune(
            model, run.task, run.train_split, train_config, data_dir=data_dir,
            workdir=workdir, checkpoint_every=checkpoint_every, verbose=verbose,
            suite_bar=suite_bar)
    except finetune.DivergedError as diverged:
        return {**outcome, "status": "diverged", "error": str(diverged), "train": {},
                "metrics": {"accuracy": None}}
    return {**outcome, "metrics": _scores(model, run, micro, data_dir)}


def _scores(model, run: Run, micro: int, data_dir) -> dict:
    """Top-1 on the run's eval split, and ImageNet-ReaL's for a final run of a task that has
    it."""
    from vitbench.evaluate import classification

    metrics = classification.top1_accuracy(model, run.task, run.eval_split, micro, data_dir)
    if run.phase == "final" and run.task.real_dataset:
        metrics.update(classification.real_accuracy_of(model, run.task, micro, data_dir))
    return metrics


def _score_as_released(run: Run, lr, workdir, data_dir, checkpoint_every, verbose,
                       suite_bar) -> dict:
    """Scores the checkpoint's own head on the test split (and ImageNet-ReaL where the task
    has it): no training."""
    from vitbench.checkpoints.loader import load_model

    model = load_model(run.ckpt, image_size=run.task.protocol.resolution, progress=False)
    check_head(run.ckpt, model.num_classes, run.task)
    micro = _pass_size(run, model)
    return {"status": "finished", "error": None, "micro_batch_size": micro,
            "metrics": _scores(model, run, micro, data_dir)}


def _probe_few_shot(run: Run, lr, workdir, data_dir, checkpoint_every, verbose,
                    suite_bar) -> dict:
    """Few-shot linear probes of the frozen checkpoint (features cached per checkpoint)."""
    from vitbench.data import sources
    from vitbench.evaluate import fewshot

    p, model = run.task.protocol, None
    identity = {"ckpt": run.ckpt, "ckpt_sha256": run.ckpt_sha256, "precision": run.precision,
                "seed": run.seed if run.ckpt.startswith(SCRATCH_PREFIX) else None,
                "dataset": run.task.tfds_spec, "source": run.task.source,
                "data_sha256": run.data_sha256, "pp": run.task.pp("eval"),
                "data_dir": str(data_dir or sources.default_data_dir())}
    computed = []

    def features(role):
        def compute():
            nonlocal model
            model = model or load_for_features(run.ckpt, run.task)
            computed.append(role)
            x, y = fewshot.extract_features(model, run.task, role, _pass_size(run, model),
                                            data_dir)
            return {"features": x, "labels": y}

        arrays = fewshot.cached({**identity, "split": run.task.split(role)}, compute)
        return arrays["features"], arrays["labels"]

    start = time.perf_counter()
    train, test = features(run.train_split), features(run.eval_split)
    extracted = time.perf_counter() - start
    metrics = fewshot.evaluate(train, test, run.task.num_classes, p.shots, p.seeds, p.l2_reg,
                               run.task.name, sources.class_names(run.task, data_dir))
    return {"status": "finished", "error": None, "metrics": metrics,
            "features": {"computed": computed, "seconds": extracted,
                         "dimensions": int(train[0].shape[1])}}


@dataclasses.dataclass(frozen=True)
class Method:
    """What differs between the kinds of run (`Protocol.method`)."""

    execute: Callable  # (run, lr, workdir, data_dir, checkpoint_every, verbose, suite_bar)
    #                    -> the record's outcome: status, metrics, ...
    settings: Callable  # (run, lr) -> the config fields of this kind, beside the common ones
    tag: Callable  # (run, lr) -> how the log names the run after its task
    doing: Callable  # run -> what the run does, for the log
    trains: bool = False  # its training images count in the suite bar and the dry run
    reads_train_split: bool = True  # a training split (fine-tuning, few-shot features)


def _fine_tune_settings(run: Run, lr: float | None) -> dict:
    p = run.task.protocol
    return {"lr": lr if lr is not None else run.lr, "steps": p.steps,
            "batch_size": p.batch_size, "warmup_steps": min(p.warmup_steps, p.steps),
            "train_pp": run.task.pp("train"), "optimizer": "sgd(momentum=0.9)",
            "grad_clip_norm": 1.0, "schedule": "warmup_cosine", "polyak": p.polyak}


def _probe_settings(run: Run, lr: float | None) -> dict:
    p = run.task.protocol
    return {"lr": None, "shots": list(p.shots), "l2_reg": p.l2_reg, "seeds": p.seeds,
            "features": "pre_logits"}


def _probing(run: Run) -> str:
    p = run.task.protocol
    return f"probing frozen features ({', '.join(map(str, p.shots))} shots, {p.seeds} seeds)"


METHODS = {
    "finetune": Method(
        _fine_tune_and_score, _fine_tune_settings, lambda run, lr: f"{run.phase} lr={lr}",
        lambda run: (f"training {run.task.protocol.steps} steps of "
                     f"{run.task.protocol.batch_size}"), trains=True),
    "fewshot": Method(_probe_few_shot, _probe_settings, lambda run, lr: "few-shot", _probing),
    "evaluate": Method(  # `--as_released`
        _score_as_released,
        lambda run, lr: {"lr": None, "train_split": None, "head": "checkpoint"},
        lambda run, lr: "as released", lambda run: "scoring its own head as released",
        reads_train_split=False),
}


def execute(run: Run, lr: float, results_dir: pathlib.Path, data_dir=None,
            checkpoint_every: int = 0, verbose: int = 0, ckpt_info: dict | None = None,
            suite_bar=None):
    """Trains or probes, evaluates and records one run; returns its record."""
    import keras

    from vitbench.train import distribute

    config = run.config(lr)
    digest = records.config_hash(config)
    workdir = pathlib.Path(results_dir) / "work" / run.suite / digest
    start = time.time()
    keras.utils.set_random_seed(run.seed)  # a scratch model's initial weights follow the seed
    previous_policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(run.precision)
    try:
        outcome = METHODS[run.method].execute(run, lr, workdir, data_dir, checkpoint_every,
                                              verbose, suite_bar)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    record = {
        "config_hash": digest, "config": config, "checkpoint": ckpt_info or {"name": run.ckpt},
        "protocol": dict(run.defaults), **outcome, "precision": run.precision,
        "data_version": _data_version(run.task, data_dir),
        # what trained it ("one device" unless a Keras distribution is set), beside the
        # devices the environment lists
        "distribution": distribute.describe(keras.distribution.distribution()),
        "wall_seconds": time.time() - start,
        "environment": environment(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    records.append(records.records_path(results_dir, run.suite), record)
    shutil.rmtree(workdir, ignore_errors=True)  # the record holds what is kept of the run
    return record


OUT_OF_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "OOM", "out of memory")


def _is_out_of_memory(error: Exception) -> bool:
    return any(marker in str(error) for marker in OUT_OF_MEMORY_MARKERS)


def fitting_micro_batch(ckpt: str, task: tasks_lib.Task, try_step=None,
                        remat: bool = False) -> int:
    """The largest micro-batch whose training step fits: the default pass
    (`execution.pass_size`: the whole batch on an accelerator, cache-sized passes on a CPU,
    where a larger pass is only slower), halved while it divides (and still splits over the
    data-parallel devices), until a step runs.

    `try_step(micro)` runs one training step at that size and raises on out-of-memory; by
    default it trains the model (rematerialised with `remat`) on zeros.
    """
    check_batches([task])
    model = load_for_task(ckpt, task, remat)
    try_step = try_step or (lambda micro: _zero_batch_trainer(model, task, micro)())
    ways = replicas()
    micro = execution.pass_size(model.config, model.image_size, task.protocol.batch_size, ways)
    while True:
        try:
            try_step(micro)
            return micro
        except Exception as error:  # noqa: BLE001 -- only out-of-memory errors are retried
            if not _is_out_of_memory(error) or micro % 2 or (micro // 2) % ways:
                raise
            micro //= 2


def _zero_batch_trainer(model, task: tasks_lib.Task, micro: int):
    """A function running one training step of `model` on a batch of zeros at the task's
    resolution."""
    import numpy as np

    from vitbench.train import finetune

    finetune.compile_for_finetuning(model, finetune.TrainConfig(0.0, 1, micro, micro))
    size = task.protocol.resolution
    images = np.zeros((micro, size, size, 3), np.float32)
    labels = np.zeros((micro,), np.int64)
    return lambda: model.train_on_batch(images, labels)


def measure_throughput(ckpt: str, task: tasks_lib.Task, micro_batch_size: int,
                       probe_steps: int = 3, remat: bool = False) -> float:
    """Training images/s of this model at the task's resolution on this machine (zero data),
    from passes of at most 8 images per data-parallel device."""
    batch = min(micro_batch_size, 8 * replicas())
    step = _zero_batch_trainer(load_for_task(ckpt, task, remat), task, batch)
    step()  # compile
    start = time.perf_counter()
    for _ in range(probe_steps):
        step()
    return probe_steps * batch / (time.perf_counter() - start)


def run_suite(suite: tasks_lib.Suite, task_names: Sequence[str], ckpt: str,
              overrides: Overrides, results_dir, *, sweep: bool = False, data_dir=None,
              force: bool = False, checkpoint_every: int = 0, verbose: int = 1,
              log=None, fewshot: bool = True) -> list[dict]:
    """Runs every planned run that is not recorded yet (all of them with `force`).

    With `verbose`, a suite progress bar counts the training images of the runs to do and a
    run bar below it shows the current run's step, loss and accuracy. Processes may share a
    results dir: each run is claimed first (`_claimed`), and one claimed elsewhere is skipped.
    """
    from vitbench.data import sources
    from vitbench.train import progress

    runs = plan(suite, task_names, ckpt, overrides, sweep, fewshot)
    check_checkpoint(ckpt, runs)
    path = records.records_path(results_dir, suite.name)
    files.make_folder(path.parent, f"the results dir {results_dir}")  # before any training
    sources.check_ready(_data_needed(runs), data_dir)
    done = {} if force else records.by_hash(records.read(path))
    to_do = [run for run in runs if not _is_done(run, done)]
    images = sum(_images(run) for run in to_do)  # none for few-shot probes: no bar
    suite_bar = progress.bar(f"{suite.name} suite", images, enabled=bool(verbose and images))
    log = log or suite_bar.write
    ckpt_info, finished = None, []
    with suite_bar:
        for number, run in enumerate(runs, 1):
            if not force:  # runs that other processes on this results dir have finished
                done = records.by_hash(records.read(path))
            lr = choose_lr(run, {**done, **{
                r["config_hash"]: r for r in finished}})
            digest = records.config_hash(run.config(lr))
            label = (f"[{number}/{len(runs)}] {run.task.name} "
                     f"{METHODS[run.method].tag(run, lr)}"
                     + (f" seed={run.seed}" if overrides.repeats > 1 else ""))
            if digest in done:
                log(f"{label}: done ({_result(done[digest])}), skipped")
                continue
            if run.needs_lr and lr is None:
                log(f"{label}: its tune runs are not recorded (training in another "
                    "process, or failed there), skipped")
                continue
            with _claimed(results_dir, run.suite, digest) as claimed:
                if not claimed or (not force and digest in records.by_hash(
                        records.read(path))):  # finished meanwhile
                    log(f"{label}: running or done in another process, skipped")
                    continue
                log(f"{label}: {METHODS[run.method].doing(run)} at "
                    f"{run.task.protocol.resolution} px")
                ckpt_info = ckpt_info or checkpoint_id(ckpt)
                record = execute(run, lr, results_dir, data_dir, checkpoint_every, verbose,
                                 ckpt_info, suite_bar if verbose else None)
            finished.append(record)
            speed = record.get("train", {}).get("images_per_second")
            log(f"{label}: {run.eval_split} {_result(record)}"
                + (f" ({speed:.1f} images/s)" if speed else ""))
    return finished


@contextlib.contextmanager
def _claimed(results_dir, suite: str, digest: str):
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
            import warnings

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
        if _is_done(run, done):
            found.append(done[records.config_hash(run.config(choose_lr(run, done)))])
    return found


def _data_needed(runs: Sequence[Run]) -> list[tasks_lib.Task]:
    """The tasks whose data the runs read: theirs, and the ImageNet-ReaL labels beside
    ImageNet's."""
    needed = {run.task.name: run.task for run in runs}
    needed.update({task.name: task for task in (t.real_labels_task() for t in list(needed.values()))
                   if task is not None})
    return list(needed.values())


def _images(run: Run) -> int:
    """Training images of a run (a few-shot probe or a head scored as released: none)."""
    if not METHODS[run.method].trains:
        return 0
    return run.task.protocol.steps * run.task.protocol.batch_size


def _is_done(run: Run, done: dict) -> bool:
    """Recorded already (a final run whose rate is not chosen yet counts as not done)."""
    lr = choose_lr(run, done)
    return not (run.needs_lr and lr is None) and records.config_hash(run.config(lr)) in done


def _result(record: dict) -> str:
    if record.get("status") == "diverged":
        return f"diverged: {record['error']}"
    metrics = record["metrics"]
    if "accuracy" in metrics:
        return f"accuracy {metrics['accuracy']:.4f}"
    return ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()
                     if key.endswith("shot"))


def describe_plan(suite, task_names, ckpt, overrides, results_dir, sweep=False,
                  speed: Callable[[], float] | None = None, fewshot: bool = True,
                  data_dir=None, force: bool = False) -> str:
    """The plan as a table: every run, whether it is done (with `force`, none is: all are
    redone), and its cost, with the time it takes at the images/s `speed` measures (called
    only where training images are left); then the tasks whose data is missing (the run
    would stop on them before training)."""
    from tabulate import tabulate

    from vitbench.data import sources

    runs = plan(suite, task_names, ckpt, overrides, sweep, fewshot)
    check_checkpoint(ckpt, runs)  # what the run would refuse, the plan refuses
    done = {} if force else records.by_hash(records.read(records.records_path(results_dir,
                                                                              suite.name)))
    rows, todo_images = [], 0
    any_fewshot = any(run.method == "fewshot" for run in runs)
    for run in runs:
        lr = choose_lr(run, done)
        is_done = _is_done(run, done)
        todo_images += 0 if is_done else _images(run)
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
                     "res": protocol.resolution, "status": "done" if is_done else "to do"})
    text = tabulate(rows, headers="keys")
    summary = f"\n{sum(r['status'] == 'done' for r in rows)} of {len(rows)} runs done; " \
              f"{todo_images:,} training images to go"
    images_per_second = speed() if speed and todo_images else None
    if images_per_second:
        hours = todo_images / images_per_second / 3600
        took = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        summary += (f", about {took} at the {images_per_second:.1f} images/s measured for "
                    f"{ckpt} on this machine")
    blocked = [state.detail for state in (sources.status(task, data_dir)
                                          for task in _data_needed(runs)) if not state.usable]
    if blocked:
        summary += "\ndata missing (the run would stop here before training):\n  " + \
            "\n  ".join(blocked)
    return text + summary
