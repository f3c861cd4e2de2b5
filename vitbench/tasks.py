"""Tasks and suites, read from the TOML files shipped in `vitbench/suites/` (or a user's).

A suite file holds a `[protocol]` table (defaults for every task) and one `[[task]]` table per
task; a task may override any protocol field in its own `protocol` table. Preprocessing specs
are op strings (`vitbench.data.registry`) in which `{resolution}` is filled in from the
protocol, so `--resolution` changes every task at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib

import tomllib

from vitbench import protocols, rules
from vitbench.rules import setting

SUITES_DIR = pathlib.Path(__file__).resolve().parent / "suites"  # package data
GROUPS = ("natural", "specialized", "structured", "upstream", "fewshot", "demo", "custom")
# How a suite's task is evaluated (see `Protocol.method`); "linear" and "knn" probe frozen
# features under the VPT protocol's rules, "bitfit" fine-tunes the biases only, "lora" a
# low-rank update of the attention's query and value, "vpt_deep" and "vpt_shallow" learned
# prompt tokens (`vitbench.transfer.methods`).
METHODS = ("finetune", "fewshot", "linear", "knn", "bitfit", "lora", "vpt_deep",
           "vpt_shallow")
# What `vitbench run --method` offers (few-shot probes come from a suite's `[fewshot]` table
# or a few-shot suite; `--as_released` scores a head).
CHOOSABLE_METHODS = ("finetune", "linear", "knn", "bitfit", "lora", "vpt_deep", "vpt_shallow")
# Protocol fields of a task run with a method, before a suite's `[methods.<name>]` table
# (`Suite.with_method`): VPT's linear baseline (KMnP/vpt `tune_vtab.py`).
METHOD_DEFAULTS = {"linear": {"lrs": (50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05),
                              "weight_decays": (0.01, 0.001, 0.0001, 0.0), "batch_size": 1024,
                              "epochs": 100, "warmup_epochs": 10}}
# The protocols (`Protocol.name`) a method implements; a method not named: any.
METHOD_PROTOCOLS = {"finetune": ("vit", "vpt"), "fewshot": ("vit",), "evaluate": ("vit",),
                    "bitfit": ("vpt",), "lora": ("vpt",), "vpt_deep": ("vpt",),
                    "vpt_shallow": ("vpt",)}
# The protocol fields `vitbench run` can override (`transfer.plan.Overrides`).
OVERRIDABLE = ("steps", "warmup_steps", "tune_fraction", "batch_size", "lrs", "resolution",
               "polyak", "momentum_dtype", "shots", "epochs", "warmup_epochs", "weight_decays",
               "prompt_tokens")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a task is trained and evaluated; defaults are the paper's fine-tuning settings. Each
    field is defined once, with its rule (suite files and flags are checked against it) and,
    for those `vitbench run` overrides (`OVERRIDABLE`), its flag's help."""

    # The published protocol a suite follows: "vit" (the ViT paper's fine-tuning and
    # few-shot probes) or "vpt" (VPT's VTAB-1k protocol); methods say which they implement,
    # and `protocols.FINE_TUNING` how fine-tuning trains under each.
    name: str = setting("vit", rules.one_of(*protocols.FINE_TUNING))
    resolution: int = setting(384, rules.integer(1), "Image size (default: the protocol's).")
    steps: int = setting(2500, rules.integer(1), "Training steps (default: the protocol's).")
    batch_size: int = setting(512, rules.integer(1),
                              "Global batch size (default: the protocol's).")
    lrs: tuple[float, ...] = setting(
        (0.01,), rules.list_of(rules.POSITIVE, "positive numbers", "[0.003, 0.01]"),
        "Learning rates; more than one are swept on the validation split (default: the "
        "protocol's).")
    warmup_steps: int = setting(
        200, rules.integer(0), "Linear warm-up steps before the cosine decay (default: the "
        "protocol's, at most --steps: a run shorter than the protocol's warm-up is warm-up "
        "only).")
    tune_fraction: float = setting(
        1.0, rules.SHARE, "Tune runs (those of an lr sweep) train this fraction of --steps and "
        "of the warm-up, on the same schedule shape; the final run trains them all. VTAB-1k's "
        "0.2 tunes in 500-step runs, BiT-HyperRule's length for 1000 images (default: the "
        "protocol's; 1 tunes at full length).")
    polyak: float = setting(
        0.0, rules.FRACTION, "Evaluate the Polyak (exponential moving) average of the weights "
        "with this decay; the paper's Table 2 ImageNet fine-tunes use 0.9999 at 512/518 px "
        "(default: the protocol's, 0 = off).")
    momentum_dtype: str = setting(
        "float32", rules.one_of("float32", "bfloat16"), "Dtype the SGD momentum is kept in: "
        "float32, or bfloat16 as the official fine-tuning code keeps it (default: the "
        "protocol's, float32).")
    # "finetune" (train, then score `test`) or "fewshot" (linear probes on frozen features of
    # the `fit` split, scored on `test`; see vitbench.evaluate.fewshot). `vitbench run
    # --as_released` makes fine-tuning tasks "evaluate": score the checkpoint's own head on
    # `test`, no training.
    method: str = "finetune"
    train_pp: str = setting("inception_crop({resolution})|flip_lr|value_range(-1, 1)",
                            rules.TEXT)
    eval_pp: str = setting("resize({resolution})|value_range(-1, 1)", rules.TEXT)
    # Split roles: final training, hyper-parameter selection (train on one, score on the
    # other) and the reported test split. Each names a key of the task's `splits`.
    fit_split: str = setting("train", rules.TEXT)
    tune_train_split: str = setting("train", rules.TEXT)
    tune_val_split: str = setting("val", rules.TEXT)
    test_split: str = setting("test", rules.TEXT)
    # Few-shot linear evaluation.
    shots: tuple[int, ...] = setting(
        (1, 5, 10, 25), rules.list_of(rules.integer(1), "positive integers", "[1, 5, 10, 25]"),
        "Few-shot: images per class (default: the protocol's, 1,5,10,25).")
    l2_reg: float = setting(1024.0, rules.NON_NEGATIVE)
    seeds: int = setting(3, rules.integer(1))
    # The VPT protocol (`protocols.FINE_TUNING["vpt"]`) and the linear probes of frozen
    # features (`vitbench.evaluate.linear_probe`): `lrs` x `weight_decays` trained for
    # `epochs` on tune_train and scored on tune_val at the last epoch, the best retrained on
    # fit with each of `final_seeds` (a probe's head seeds), scored on test.
    epochs: int = setting(100, rules.integer(1), "Epochs, under a protocol that counts them "
                          "(vpt) and of linear probes (default: the protocol's).")
    warmup_epochs: int = setting(10, rules.integer(0), "Epochs of linear warm-up from 0, under "
                                 "a protocol that counts epochs (default: the protocol's).")
    weight_decays: tuple[float, ...] = setting(
        (0.0,), rules.list_of(rules.NON_NEGATIVE, "numbers >= 0", "[0.01, 0.001, 0.0001, 0]"),
        "Weight decays swept with --lrs under the vpt protocol and by linear probes (default: "
        "the protocol's).")
    final_seeds: tuple[int, ...] = setting(
        (42, 44, 82, 100, 800), rules.list_of(rules.integer(0), "integers >= 0",
                                              "[42, 44, 82, 100, 800]"))
    # k-nearest-neighbour classification of frozen features (`vitbench.evaluate.knn`): k
    # chosen on tune_val with tune_train as the memory, then fit as the memory for test.
    neighbours: tuple[int, ...] = setting(
        (10, 20, 100, 200), rules.list_of(rules.integer(1), "positive integers",
                                          "[10, 20, 100, 200]"))
    temperature: float = setting(0.07, rules.POSITIVE)
    # LoRA's rank and alpha (the update is scaled by alpha / rank; `vitbench.models.lora`).
    lora_rank: int = setting(8, rules.integer(1))
    lora_alpha: float = setting(8.0, rules.POSITIVE)
    # VPT's prompts (`vitbench.models.prompts`): tokens per set and their dropout.
    prompt_tokens: tuple[int, ...] = setting(
        (10,), rules.list_of(rules.integer(1), "positive integers", "[1, 5, 10, 50, 100, 200]"),
        "VPT-deep and VPT-shallow: prompt tokens per set; several are chosen among on the "
        "validation split with the rates and decays (VPT searched 1,5,10,50,100,200; default: "
        "the protocol's).")
    prompt_dropout: float = setting(0.0, rules.FRACTION)

    @property
    def effective_warmup_steps(self) -> int:
        """The warm-up a run trains with: at most its steps (a short run is warm-up only)."""
        return min(self.warmup_steps, self.steps)

    def share(self, phase: str) -> float:
        """The share of the steps a run of `phase` trains: a tune run `tune_fraction`, a final
        run all of them."""
        return self.tune_fraction if phase == "tune" else 1.0

    def schedule(self, phase: str) -> tuple[int, int]:
        """The steps and warm-up steps a run of `phase` trains: its `share` of each (at least
        one step)."""
        steps, warmup, share = self.steps, self.effective_warmup_steps, self.share(phase)
        if share == 1:
            return steps, warmup
        return max(1, round(steps * share)), round(warmup * share)

    def settings(self) -> dict:
        """The fields that set a run apart on a leaderboard (`vitbench.leaderboards.collect`):
        a run whose values differ from its suite's gets a row of its own. A protocol counted
        in epochs has epochs where the others have steps."""
        length = ({"epochs": self.epochs, "batch_size": self.batch_size,
                   "warmup_epochs": self.warmup_epochs}
                  if protocols.fine_tuning(self).per_epoch else
                  {"steps": self.steps, "batch_size": self.batch_size,
                   "warmup_steps": self.effective_warmup_steps})
        return {**length, "resolution": self.resolution,
                "polyak": self.polyak, "momentum_dtype": self.momentum_dtype,
                "l2_reg": self.l2_reg}

    def pp(self, phase: str) -> str:
        """The train or eval preprocessing spec with `{resolution}` filled in, and
        `{crop_margin}`: the resolution x 256/224, the size a centre crop of the resolution is
        taken from (256 for 224 px, 439 for 384 px)."""
        template = {"train": self.train_pp, "eval": self.eval_pp}[phase]
        return template.format(resolution=self.resolution,
                               crop_margin=round(self.resolution * 256 / 224))


@dataclasses.dataclass(frozen=True)
class Task:
    """One dataset with its splits, label definition and protocol."""

    name: str
    group: str
    dataset: str  # TFDS name with config ("sun397/tfds"), or a folder / CSV path for custom data
    num_classes: int
    splits: dict[str, str]
    source: str = "tfds"  # "tfds", "folder" or "csv" (see vitbench.data.sources)
    version: str = ""  # TFDS version pattern, e.g. "3.*.*" or "3.1.0"
    image_ops: str = ""  # applied to the decoded image first (e.g. "to_rgb|scale(255)")
    label: str = ""  # label transform op; empty keeps the `label` feature as it is
    protocol: Protocol = Protocol()
    real_dataset: str = ""  # TFDS dataset with ImageNet-ReaL multi-labels for the test images
    note: str = ""
    title: str = ""  # short display name in tables (default: the name)
    default: bool = True  # in the suite's default selection (else only when named)

    @property
    def display_name(self) -> str:
        return self.title or self.name

    @property
    def tfds_spec(self) -> str:
        return f"{self.dataset}:{self.version}" if self.version else self.dataset

    def split(self, role_or_name: str) -> str:
        """The split expression for a role (`fit`, `tune_train`, `tune_val`, `test`) or a name."""
        name = getattr(self.protocol, f"{role_or_name}_split", role_or_name)
        if name not in self.splits:
            raise KeyError(f"task {self.name} has no split {name!r}; its splits: "
                           f"{', '.join(self.splits)}")
        return self.splits[name]

    def real_labels_task(self) -> Task | None:
        """The ImageNet-ReaL test set of this task (its `real_dataset`'s validation images)."""
        if not self.real_dataset:
            return None
        return dataclasses.replace(self, name=f"{self.name}_real", dataset=self.real_dataset,
                                   version="", splits={"test": "validation"},
                                   label=f"multi_hot('real_label', {self.num_classes})",
                                   real_dataset="")

    def pp(self, phase: str) -> str:
        """Full preprocessing spec of a phase: decode, image fix-ups, label, protocol ops, keep."""
        keep = "keep('image', 'labels')" if self.label.startswith("multi_hot") else \
            "keep('image', 'label')"
        parts = ["decode", self.image_ops, self.label, self.protocol.pp(phase), keep]
        return "|".join(part for part in parts if part)


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[Task, ...]
    path: pathlib.Path | None = None
    # A suite's `[fewshot]` table: protocol fields of the few-shot probes of its fine-tuning
    # tasks (None: no probes). A suite whose protocol method is "fewshot" needs none.
    fewshot: dict | None = None
    # A suite's `[methods.<name>]` tables: protocol fields of its tasks under that method
    # (`vitbench run --method`), over the method's own defaults.
    methods: dict[str, dict] = dataclasses.field(default_factory=dict)

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(_unknown("task", name, [t.name for t in self.tasks], f"suite {self.name}"))

    def fewshot_tasks(self, names) -> tuple[Task, ...]:
        """The few-shot probes of the named tasks (all when empty): the suite's own few-shot
        tasks, and the `[fewshot]` variants of its fine-tuning tasks."""
        probes = []
        for task in self.select(names):
            if task.protocol.method == "fewshot":
                probes.append(task)
            elif self.fewshot is not None:
                probes.append(dataclasses.replace(task, protocol=dataclasses.replace(
                    task.protocol, **{**self.fewshot, "method": "fewshot"})))
        return tuple(probes)

    def with_method(self, task: Task, name: str) -> Task:
        """`task` run with method `name`: its protocol takes the method's defaults
        (`METHOD_DEFAULTS`), then this suite's `[methods.<name>]` table.

        Raises:
            ValueError: the method does not implement the task's protocol.
        """
        self.check_method(dataclasses.replace(task, protocol=dataclasses.replace(
            task.protocol, method=name)))
        changes = {**METHOD_DEFAULTS.get(name, {}), **self.methods.get(name, {}),
                   "method": name}
        return dataclasses.replace(task, protocol=dataclasses.replace(task.protocol, **changes))

    def check_method(self, task: Task) -> None:
        """Raises ValueError unless the task's method implements its protocol
        (`METHOD_PROTOCOLS`), naming the methods that do."""
        name, protocol = task.protocol.method, task.protocol.name
        if protocol not in METHOD_PROTOCOLS.get(name, (protocol,)):
            offered = [m for m in CHOOSABLE_METHODS if protocol in
                       METHOD_PROTOCOLS.get(m, (protocol,))]
            raise ValueError(f"method {name} is not implemented under the {protocol} "
                             f"protocol of suite {self.name}; its methods: "
                             f"{', '.join(offered)}")

    def select(self, names) -> tuple[Task, ...]:
        """The named tasks (when `names` is empty: those with `default`), in the suite's order."""
        if not names:
            return tuple(task for task in self.tasks if task.default)
        chosen = {self.task(name).name for name in names}
        return tuple(task for task in self.tasks if task.name in chosen)


def _unknown(kind, name, valid, where=""):
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    place = f" in {where}" if where else ""
    return f"unknown {kind} {name!r}{place}.{hint} Valid: {', '.join(valid)}"


SUITE_KEYS = {"name", "description", "protocol", "task", "fewshot", "methods", "tasks_from"}


def suite_names():
    """Names of the suites shipped in `vitbench/suites/`."""
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (`vtab1k`) or from a TOML file path."""
    path = pathlib.Path(name_or_path).expanduser()
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise KeyError(_unknown("suite", str(name_or_path), suite_names()) +
                           " (or give the path of a .toml suite file)")
    elif not path.is_file():
        raise FileNotFoundError(f"suite file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    return parse_suite(data, path)


def parse_suite(data: dict, path: pathlib.Path | None = None) -> Suite:
    """A Suite from parsed TOML data; unknown or missing fields raise, naming the task."""
    where = str(path or "suite")
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown table(s) or key(s) {unknown}; valid: "
                         f"{sorted(SUITE_KEYS)}")
    defaults = _protocol(data.get("protocol", {}), Protocol(), where)
    tasks = []
    for row in data.get("task") or _borrowed_tasks(data.get("tasks_from"), where):
        row = dict(row)
        name = row.get("name", "?")
        protocol = _protocol(row.pop("protocol", {}), defaults, f"{where}, task {name}")
        fields = [f for f in dataclasses.fields(Task) if f.name != "protocol"]
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        missing = [field for field in required if field not in row]
        unknown = sorted(set(row) - {f.name for f in fields})
        if missing or unknown:
            problems = ([f"missing field(s) {', '.join(missing)}"] if missing else []) + (
                [f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
            raise ValueError(f"{where}, task {name}: {'; '.join(problems)} (required: "
                             f"{', '.join(required)}; optional: "
                             f"{', '.join(f.name for f in fields if f.name not in required)})")
        task = Task(**row, protocol=protocol)
        rules.check({"num_classes": rules.integer(1)}, "num_classes", task.num_classes,
                    f"{where}, task {name}: num_classes")
        if task.group not in GROUPS:
            raise ValueError(f"{where}, task {name}: group {task.group!r} is not one of {GROUPS}")
        tasks.append(task)
    if not tasks:
        raise ValueError(f"{where} defines no [[task]]")
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: task names repeat: {names}")
    name = data.get("name") or (path.stem if path else "suite")
    fewshot = None
    if "fewshot" in data:
        _protocol(data["fewshot"], Protocol(), f"{where}, [fewshot]")  # check the fields
        fewshot = {key: tuple(value) if isinstance(value, list) else value
                   for key, value in data["fewshot"].items()}
    methods = {}
    for method, values in data.get("methods", {}).items():
        if method not in METHODS:
            raise ValueError(f"{where}: [methods.{method}] names no method; methods: "
                             f"{', '.join(METHODS)}")
        _protocol(values, Protocol(), f"{where}, [methods.{method}]")  # check the fields
        methods[method] = {key: tuple(value) if isinstance(value, list) else value
                           for key, value in values.items()}
    return Suite(name, data.get("description", ""), tuple(tasks), path, fewshot, methods)


def _borrowed_tasks(suite: str | None, where: str) -> list[dict]:
    """The `[[task]]` tables of the shipped suite `tasks_from` names, without their own
    protocol tables: the same datasets, splits and labels under this suite's protocol."""
    if suite is None:
        return []
    if suite not in suite_names():
        raise ValueError(f"{where}: tasks_from {suite!r} is not a shipped suite; suites: "
                         f"{', '.join(suite_names())}")
    data = tomllib.loads((SUITES_DIR / f"{suite}.toml").read_text())
    return [{key: value for key, value in row.items() if key != "protocol"}
            for row in data.get("task", [])]


# Protocol field -> what it must be: TOML values and flags are checked alike.
PROTOCOL_RULES = rules.rules_of(Protocol)


def _protocol(values: dict, base: Protocol, where: str) -> Protocol:
    fields = {f.name for f in dataclasses.fields(Protocol)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown protocol field(s) {unknown}; valid: {sorted(fields)}")
    values = {key: tuple(value) if isinstance(value, list) else value
              for key, value in values.items()}
    if values.get("method", base.method) not in METHODS:
        raise ValueError(f"{where}: method {values['method']!r} is not one of {METHODS}")
    for key, value in values.items():
        rules.check(PROTOCOL_RULES, key, value, f"{where}: protocol field {key}")
    return dataclasses.replace(base, **values)
