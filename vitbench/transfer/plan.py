"""Which runs a suite needs: per task its tune runs and final run, per seed; then the few-shot
probes. A run's `config` is what decides its number; its hash identifies the run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vitbench import environment, protocols, records, rules
from vitbench import tasks as tasks_lib
from vitbench.checkpoints import identity
from vitbench.data import sources
from vitbench.models.zoo import NORMALIZATIONS
from vitbench.train import distribute, execution
from vitbench.transfer.methods import METHODS

# `--sweep` grid for suites that fix one learning rate (VTAB-1k): the paper's fine-tuning grid
# (Table 4). The paper's own VTAB sweep (two rates, two schedules) is not published. Its tune
# runs train the protocol's `tune_fraction` of the steps.
DEFAULT_SWEEP = (0.001, 0.003, 0.01, 0.03)
PROBE_PRECISION = "float32"  # few-shot features, whatever the device


@dataclasses.dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the suite's protocol (None keeps the protocol's)."""

    steps: int | None = None
    warmup_steps: int | None = None  # the protocol's (at most the steps) when None
    tune_fraction: float | None = None
    batch_size: int | None = None
    micro_batch_size: int | None = None
    lrs: tuple[float, ...] | None = None
    resolution: int | None = None
    polyak: float | None = None
    momentum_dtype: str | None = None
    shots: tuple[int, ...] | None = None
    epochs: int | None = None
    warmup_epochs: int | None = None
    weight_decays: tuple[float, ...] | None = None
    prompt_tokens: tuple[int, ...] | None = None
    seed: int = 0
    repeats: int = 1  # the whole protocol once per seed: seed, seed + 1, ...
    remat: bool = False  # rematerialise each block's activations (memory, not numbers)
    as_released: bool = False  # score the checkpoint's own head instead of fine-tuning
    strict_shots: bool = False  # refuse a probe whose class has fewer than k training images
    # The checkpoint's input normalisation (a zoo.NORMALIZATIONS name) instead of the one its
    # file says (or [-1, 1] where it says none).
    normalization: str | None = None
    method: str | None = None  # `--method`: how the tasks are run (None: the suite's)

    def __post_init__(self):
        if self.method is not None and self.method not in tasks_lib.CHOOSABLE_METHODS:
            raise ValueError(f"--method {self.method!r} is not one of "
                             f"{', '.join(tasks_lib.CHOOSABLE_METHODS)}"
                             " (few-shot probes come from a suite's [fewshot] table or "
                             "--suite fewshot; --as_released scores a checkpoint's head)")
        if self.method not in (None, "finetune") and self.as_released:
            raise ValueError(f"--as_released scores the checkpoint's own head; it does not "
                             f"combine with --method {self.method}")
        if self.normalization is not None and self.normalization not in NORMALIZATIONS:
            raise ValueError(f"--normalization {self.normalization!r} is not one of "
                             f"{', '.join(NORMALIZATIONS)}")
        for key, value in self.changes.items():  # as a suite file's values are checked
            rules.check(tasks_lib.PROTOCOL_RULES, key, value, f"--{key}")
        rules.check({"repeats": rules.integer(1)}, "repeats", self.repeats, "--repeats")

    @property
    def seeds(self) -> range:
        return range(self.seed, self.seed + self.repeats)

    @property
    def changes(self) -> dict:
        """The protocol fields these overrides set."""
        return {name: getattr(self, name) for name in tasks_lib.OVERRIDABLE
                if getattr(self, name) is not None}

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
    precision: str = "float32"  # the compute dtype policy (`environment.precision_policy`)
    ckpt_sha256: str | None = None  # content of a local checkpoint file (`identity.content_key`)
    data_sha256: str | None = None  # a folder or CSV task's files (`sources.fingerprint`)
    remat: bool = False  # rematerialised blocks: less memory, the same numbers (not in config)
    strict_shots: bool = False  # a probe refuses a class short of k (not in config)
    # The suite's own protocol settings (`Protocol.settings`, before overrides), recorded for
    # the leaderboards: the row of a run whose settings differ (not in config).
    defaults: tuple[tuple[str, object], ...] = ()
    normalization: str | None = None  # overrides the checkpoint's (in config where set)
    # A fine-tuning run whose grid varies the weight decay too (`FineTuning.
    # sweeps_weight_decay`): its decay; None for a final run until its tune runs choose.
    weight_decay: float | None = None
    # Images of its training split, where its protocol counts steps in epochs of it.
    train_examples: int | None = None
    # Prompt tokens of a VPT run (its grid may vary them); None for a final run until its
    # tune runs choose, and for other methods.
    prompt_tokens: int | None = None

    @property
    def method(self) -> str:
        return self.task.protocol.method

    @property
    def recipe(self) -> protocols.FineTuning:
        """How fine-tuning trains under the run's protocol."""
        return protocols.fine_tuning(self.task.protocol)

    @property
    def needs_lr(self) -> bool:
        """A final fine-tuning run whose rate the tune runs choose."""
        return METHODS[self.method].fine_tunes and self.lr is None

    @property
    def steps_per_epoch(self) -> int:
        """Updates per epoch where the protocol counts epochs (each epoch's last batch is
        filled from the next pass over the split, so every update is a whole batch); else 0."""
        if not (METHODS[self.method].fine_tunes and self.recipe.per_epoch):
            return 0
        return -(-self.train_examples // self.task.protocol.batch_size)

    @property
    def schedule(self) -> tuple[int, int]:
        """Steps and warm-up steps it trains: whole epochs where the protocol counts epochs,
        else `Protocol.schedule` (a tune run may be shorter)."""
        if self.steps_per_epoch:
            p = self.task.protocol
            return p.epochs * self.steps_per_epoch, p.warmup_epochs * self.steps_per_epoch
        return self.task.protocol.schedule(self.phase)

    @property
    def tune_seed(self) -> int:
        """The seed of the tune runs that choose this run's setting: its own, or the
        protocol's first final seed where the protocol fixes its seeds (VPT's)."""
        if METHODS[self.method].fine_tunes and self.recipe.fixed_seeds:
            return self.task.protocol.final_seeds[0]
        return self.seed

    def grid(self) -> list[tuple[float, float | None, int | None]]:
        """The (rate, weight decay, prompt tokens) settings its tune runs try (decay None
        where the protocol does not vary it, tokens None where the method has no prompts)."""
        p = self.task.protocol
        decays = p.weight_decays if self.recipe.sweeps_weight_decay else (None,)
        tokens = p.prompt_tokens if METHODS[self.method].prompted else (None,)
        return [(lr, decay, count) for lr in p.lrs for decay in decays for count in tokens]

    @property
    def train_split(self) -> str:
        return "tune_train" if self.phase == "tune" else "fit"

    @property
    def eval_split(self) -> str:
        return "tune_val" if self.phase == "tune" else "test"

    def config(self, lr: float | None = None) -> dict:
        """Everything that decides this run's number (its hash identifies the run): the fields
        of every run, and those of its method (`Method.settings`). A fine-tuning tune run
        shortened by `tune_fraction` keeps its protocol's `steps` and `warmup_steps` (it
        tunes that protocol, on the final runs' leaderboard row) and adds `tune_fraction`."""
        p = self.task.protocol
        common = {
            "suite": self.suite, "task": self.task.name, "ckpt": self.ckpt,
            "ckpt_sha256": self.ckpt_sha256, "precision": self.precision, "method": self.method,
            "phase": self.phase, "seed": self.seed, "resolution": p.resolution,
            "train_split": self.task.split(self.train_split),
            "eval_split": self.task.split(self.eval_split), "eval_pp": self.task.pp("eval"),
            "dataset": self.task.tfds_spec, "source": self.task.source,
            "num_classes": self.task.num_classes,
            **({"data_sha256": self.data_sha256} if self.data_sha256 else {}),
            **({"normalization": self.normalization} if self.normalization else {})}
        return {**common, **METHODS[self.method].settings(self, lr)}


def plan(suite: tasks_lib.Suite, task_names: Sequence[str], ckpt: str, overrides: Overrides,
         sweep: bool = False, fewshot: bool = True) -> list[Run]:
    """All runs of the chosen tasks, in order: per fine-tuning task the tune runs of each seed
    (`overrides.seeds`), then each seed's final run (each seed selects its own rate); per task
    of a method that selects and seeds inside one run (`Method.whole_task`: linear, kNN),
    that run; then the few-shot probes (the suite's few-shot tasks, and with `fewshot` the
    probes its `[fewshot]` table adds to its fine-tuning tasks), unless one method is asked
    for (`overrides.method`) or heads are scored as released.

    Raises:
        ValueError: a batch that does not split as asked, `--as_released` or `--method` with
            only probes, or a method the task's protocol does not implement.
        KeyError: an unknown task name.
    """
    runs = []
    precision, ckpt_sha256 = environment.precision_policy(), identity.content_key(ckpt)
    released = identity.released_head(ckpt) if overrides.as_released else None  # read once
    for task in suite.select(task_names):
        if task.protocol.method == "fewshot":
            continue
        task = suite.with_method(task, overrides.method or task.protocol.method)
        defaults = tuple(task.protocol.settings().items())
        task = overrides.apply(task)
        if overrides.as_released and task.protocol.method != "evaluate":
            raise ValueError(f"--as_released scores a checkpoint's head on fine-tuning tasks; "
                             f"suite {suite.name} runs {task.name} with method "
                             f"{task.protocol.method}")
        suite.check_method(task)
        micro = overrides.micro_batch_size
        if METHODS[task.protocol.method].whole_task:  # one run: its grid and seeds inside
            runs += [Run(suite.name, task, ckpt, "final", None, micro, seed,
                         PROBE_PRECISION, ckpt_sha256, data_sha256=sources.fingerprint(task),
                         defaults=defaults, normalization=overrides.normalization)
                     for seed in _probe_seeds(ckpt, overrides)]
            continue
        check_batches([task], micro)
        if task.protocol.method == "evaluate":
            runs.append(_as_released_run(suite, task, ckpt, overrides, precision, ckpt_sha256,
                                         defaults, released))
            continue
        if sweep and len(task.protocol.lrs) == 1 and overrides.lrs is None:
            task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol,
                                                                          lrs=DEFAULT_SWEEP))
        common = dict(suite=suite.name, task=task, ckpt=ckpt, micro_batch_size=micro,
                      precision=precision, ckpt_sha256=ckpt_sha256, remat=overrides.remat,
                      defaults=defaults, data_sha256=sources.fingerprint(task),
                      normalization=overrides.normalization)
        runs += _fine_tuning_runs(Run(phase="final", lr=None, seed=0, **common), overrides)
    if overrides.as_released or overrides.method:  # heads only, or one method: no probes
        if not runs:
            raise ValueError(f"{'--as_released' if overrides.as_released else '--method'} "
                             f"runs fine-tuning tasks; the chosen tasks of suite {suite.name} "
                             "are few-shot probes")
        return runs
    probes = suite.fewshot_tasks(task_names) if fewshot else tuple(
        task for task in suite.select(task_names) if task.protocol.method == "fewshot")
    probe_seeds = _probe_seeds(ckpt, overrides)
    for task in probes:
        probe = overrides.apply(task)
        check_batches([probe], overrides.micro_batch_size)
        # Probe features are extracted in float32 on every device (bf16 features would make
        # a checkpoint's few-shot numbers depend on the machine).
        runs += [Run(suite.name, probe, ckpt, "final", None, overrides.micro_batch_size, seed,
                     PROBE_PRECISION, ckpt_sha256, data_sha256=sources.fingerprint(task),
                     strict_shots=overrides.strict_shots,
                     defaults=tuple(task.protocol.settings().items()),
                     normalization=overrides.normalization)
                 for seed in probe_seeds]
    return runs


def _fine_tuning_runs(template: Run, overrides: Overrides) -> list[Run]:
    """A fine-tuning task's runs: where its grid has several settings, each seed's tune
    runs (the protocol's first seed's only, where it fixes its seeds), then each seed's
    final run, whose setting they choose (every seed's tune runs come first: they stack);
    else each seed's final run at the one setting.

    Raises:
        ValueError: `--seed` or `--repeats` under a protocol that fixes its seeds.
    """
    recipe, p = template.recipe, template.task.protocol
    by_steps = [f"--{name}" for name in ("steps", "warmup_steps", "tune_fraction")
                if getattr(overrides, name) is not None]
    if recipe.per_epoch and by_steps:
        raise ValueError(f"the {p.name} protocol counts epochs: {', '.join(by_steps)} do not "
                         "apply (--epochs, --warmup_epochs)")
    if overrides.prompt_tokens and not METHODS[template.method].prompted:
        raise ValueError(f"--prompt_tokens applies to VPT's prompts (--method vpt_deep or "
                         f"vpt_shallow), not to method {template.method}")
    if recipe.fixed_seeds:
        if overrides.seed != 0 or overrides.repeats != 1:
            raise ValueError(f"the {p.name} protocol fixes its seeds (final_seeds "
                             f"{', '.join(map(str, p.final_seeds))}); --seed and --repeats "
                             "do not apply")
        seeds = list(p.final_seeds)
    else:
        seeds = list(overrides.seeds)
    task, tune_seeds = template.task, seeds[:1] if recipe.fixed_seeds else seeds
    examples = {role: _examples(task, role) if recipe.per_epoch else None
                for role in ("tune_train", "fit")}
    final = dataclasses.replace(template, train_examples=examples["fit"])
    grid = template.grid()
    if len(grid) == 1:
        (lr, decay, tokens), = grid
        return [dataclasses.replace(final, lr=lr, weight_decay=decay, prompt_tokens=tokens,
                                    seed=seed) for seed in seeds]
    tune = dataclasses.replace(template, phase="tune", train_examples=examples["tune_train"])
    return ([dataclasses.replace(tune, lr=lr, weight_decay=decay, prompt_tokens=tokens,
                                 seed=seed)
             for seed in tune_seeds for lr, decay, tokens in grid]
            + [dataclasses.replace(final, seed=seed) for seed in seeds])


def _probe_seeds(ckpt: str, overrides: Overrides):
    """A probe's seeds: its own randomness is inside the run (shot draws, head seeds); the
    run's seed only draws a scratch model's weights."""
    return overrides.seeds if identity.is_scratch(ckpt) else [0]


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
               ckpt_sha256, data_sha256=sources.fingerprint(task), defaults=defaults,
               normalization=overrides.normalization)


def resolve(run: Run, done: dict) -> Run | None:
    """The run as it trains: itself, or for a final run after tune runs the run with the
    grid's best setting on tune_val from the records (None while tune runs are missing)."""
    if not run.needs_lr:
        return run
    scores, examples = {}, _examples(run.task, "tune_train") if run.train_examples else None
    for lr, decay, tokens in run.grid():
        tune = dataclasses.replace(run, phase="tune", lr=lr, weight_decay=decay,
                                   prompt_tokens=tokens, seed=run.tune_seed,
                                   train_examples=examples)
        record = done.get(records.config_hash(tune.config()))
        if record is None:
            return None
        scores[(lr, decay, tokens)] = record["metrics"]["accuracy"]
    lr, decay, tokens = records.best_setting(scores)  # as the leaderboards choose
    return dataclasses.replace(run, lr=lr, weight_decay=decay, prompt_tokens=tokens)


def is_done(run: Run, done: dict) -> bool:
    """Recorded already (a final run whose rate is not chosen yet counts as not done)."""
    chosen = resolve(run, done)
    return chosen is not None and records.config_hash(chosen.config()) in done


def _examples(task: tasks_lib.Task, role: str) -> int:
    """Images of a split role, for a protocol that counts epochs (`sources.split_size`).

    Raises:
        ValueError: the size is not known before the data is ready.
    """
    size = sources.split_size(task, task.split(role))
    if size is None:
        raise ValueError(f"{task.name}: the {task.protocol.name} protocol counts epochs of "
                         f"split {task.split(role)!r}, whose size is not known: give it "
                         "absolute slices (e.g. train[:800]) or prepare the data first "
                         "(vitbench tasks --download)")
    return size


def check_batches(task_list: Sequence[tasks_lib.Task],
                  micro_batch_size: int | None = None) -> None:
    """Raises, before any work, unless the micro-batch divides every task's batch and both
    split evenly over the data-parallel devices."""
    ways = distribute.replicas()
    for task in task_list:
        batch = task.protocol.batch_size
        try:
            execution.check_split(batch, micro_batch_size or batch, ways,
                                  f"--batch_size and --micro_batch_size multiples of {ways}, or "
                                  "show fewer devices (e.g. CUDA_VISIBLE_DEVICES)")
        except ValueError as error:
            raise ValueError(f"{task.name}: {error}") from None


def check_checkpoint(ckpt: str, runs: Sequence[Run]) -> None:
    """`identity.check_checkpoint` for the runs' resolutions and the tasks they score as
    released."""
    identity.check_checkpoint(ckpt, [run.task.protocol.resolution for run in runs],
                              [run.task for run in runs if run.method == "evaluate"])


def images(run: Run) -> int:
    """Training images of a run (a few-shot probe or a head scored as released: none)."""
    if not METHODS[run.method].trains:
        return 0
    return run.schedule[0] * run.task.protocol.batch_size


def data_needed(runs: Sequence[Run]) -> list[tasks_lib.Task]:
    """The tasks whose data the runs read: theirs, and the ImageNet-ReaL labels beside
    ImageNet's."""
    needed = {run.task.name: run.task for run in runs}
    needed.update({task.name: task for task in (t.real_labels_task() for t in list(needed.values()))
                   if task is not None})
    return list(needed.values())
