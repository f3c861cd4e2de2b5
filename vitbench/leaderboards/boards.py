"""Which leaderboards exist and what their columns are.

- `upstream`: ImageNet, ImageNet-ReaL, CIFAR-10, CIFAR-100, Pets, Flowers, from the records
  of the five upstream suites, as the paper's Tables 2 and 5.
- one board per other suite (`vtab1k`, `demo`, your own): a column per task in the suite's
  order, with a mean per group where the suite has several groups, and the mean over all its
  tasks. A suite whose TOML is not in `vitbench/suites/` gets its columns from its records.
- few-shot boards (`fewshot`, and `<suite>_fewshot` for a suite's `[fewshot]` probes): a
  column per task and shot count, grouped by shot count, with each shot count's mean.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

from vitbench import tasks as tasks_lib
from vitbench.leaderboards import collect as collect_lib

MEAN_OF_GROUPS = "mean of group means"


@dataclasses.dataclass(frozen=True)
class Column:
    suite: str
    task: str
    title: str
    group: str = ""
    metric: str = "accuracy"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.task, self.metric)


@dataclasses.dataclass(frozen=True)
class Board:
    name: str  # file name: results/<name>.md and .csv
    title: str
    columns: tuple[Column, ...]
    means: bool  # group means (where several groups) and the overall mean
    method: str = "finetune"  # which records it shows (`collect.board_method`)
    overall_mean: bool = True

    @property
    def suites(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(column.suite for column in self.columns))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(column.group for column in self.columns))

    @property
    def means_shown(self) -> dict[str, dict[str, float]]:
        """The board's means, each as {column title: weight}, by key: a group's name for its
        mean (where several groups), "" for the mean over all tasks (the ViT and VTAB
        papers' VTAB-1k number), `MEAN_OF_GROUPS` for the mean of the group means (the
        PEFT papers' number), where the board has them."""
        if not self.means:
            return {}
        several = len(self.groups) > 1
        members = {group: [c.title for c in self.columns if c.group == group]
                   for group in self.groups}
        shown = {group: dict.fromkeys(titles, 1 / len(titles))
                 for group, titles in members.items()} if several else {}
        if self.overall_mean:
            shown[""] = dict.fromkeys([c.title for c in self.columns], 1 / len(self.columns))
            if several:
                shown[MEAN_OF_GROUPS] = {title: 1 / (len(members) * len(titles))
                                         for titles in members.values() for title in titles}
        return shown


UPSTREAM = Board("upstream", "Upstream fine-tuning: ImageNet, ImageNet-ReaL, CIFAR, Pets, Flowers",
                 columns=(
                     Column("imagenet", "imagenet2012", "ImageNet"),
                     Column("imagenet", "imagenet2012", "ImageNet ReaL", metric="real_accuracy"),
                     Column("cifar10", "cifar10", "CIFAR-10"),
                     Column("cifar100", "cifar100", "CIFAR-100"),
                     Column("pets", "oxford_iiit_pet", "Pets"),
                     Column("flowers", "oxford_flowers102", "Flowers"),
                 ), means=False)
TITLES = {"vtab1k": "VTAB-1k: 19 tasks in three groups",
          "demo": "Demo suite (generated offline data)"}


def suite_board(suite: tasks_lib.Suite) -> Board:
    columns = tuple(Column(suite.name, task.name, task.display_name, task.group)
                    for task in suite.tasks)
    return Board(suite.name, TITLES.get(suite.name, suite.description or suite.name), columns,
                 means=True)


def fewshot_board(suite: str, tasks: list[tuple[str, str]], shots: tuple[int, ...]) -> Board:
    """Columns per shot count, then task; `tasks` are (name, title) pairs."""
    columns = tuple(Column(suite, name, f"{title} {k}-shot", f"{k}-shot", f"{k}shot")
                    for k in shots for name, title in tasks)
    name = suite if suite == "fewshot" else f"{suite}_fewshot"
    return Board(name, f"Few-shot linear evaluation: {suite}", columns, means=True,
                 method="fewshot", overall_mean=False)


def board_from_records(suite: str, records: list[dict]) -> Board:
    """A board for a suite known only from its records (a suite file outside `vitbench/suites/`)."""
    names = dict.fromkeys(record["config"]["task"] for record in records
                          if collect_lib.board_method(record) == "finetune")
    return Board(suite, suite, tuple(Column(suite, name, name, "custom") for name in names),
                 means=True)


def fewshot_board_for(suite: str, records: list[dict]) -> Board:
    fewshot = [r for r in records if collect_lib.method_of(r) == "fewshot"]
    known = _known_holding(suite, fewshot)
    recorded = {r["config"]["task"] for r in fewshot}
    if known is not None:  # the default selection, and other tasks where they have records
        probes = [t for t in known.fewshot_tasks([t.name for t in known.tasks])
                  if t.default or t.name in recorded]
        tasks = [(t.name, t.display_name) for t in probes]
        shots = probes[0].protocol.shots if probes else ()
    else:
        tasks = [(name, name) for name in sorted(recorded)]
        shots = ()
    seen = tuple(sorted({k for r in fewshot for k in r["config"].get("shots", ())}))
    return fewshot_board(suite, tasks, tuple(sorted(set(shots) | set(seen))))


def record_files(results_dir) -> dict[str, pathlib.Path]:
    """suite name -> its records file, for every `runs/*.jsonl` under `results_dir`."""
    return {path.stem: path for path in sorted(pathlib.Path(results_dir, "runs").glob("*.jsonl"))}


def boards_for(suites, read=lambda suite: []) -> list[Board]:
    """The boards showing these suites' records (`read(suite)` gives them)."""
    boards = []
    if any(suite in UPSTREAM.suites for suite in suites):
        boards.append(UPSTREAM)
    for suite in suites:
        records = read(suite)
        methods = {collect_lib.board_method(record) for record in records}
        if "finetune" in methods and suite not in UPSTREAM.suites:
            known = _known_holding(suite, records)
            boards.append(suite_board(known) if known else board_from_records(suite, records))
        if "fewshot" in methods:
            boards.append(fewshot_board_for(suite, records))
    return boards


@functools.cache
def _known_suite(name: str) -> tasks_lib.Suite | None:
    """The suite of that name in `vitbench/suites/` (parsed once: every record asks), or None."""
    return tasks_lib.load_suite(name) if name in tasks_lib.suite_names() else None


def _known_holding(suite: str, records: list[dict]) -> tasks_lib.Suite | None:
    """The shipped suite of that name if it has every recorded task, else None: a suite file
    of the user's that kept a shipped suite's name (a copy of `vitbench/suites/demo.toml`)
    gets a board from its records."""
    known = _known_suite(suite)
    names = {task.name for task in known.tasks} if known else set()
    return known if known and {r["config"]["task"] for r in records} <= names else None


def protocol_defaults(record: dict) -> dict | None:
    """The setting values of a record's task protocol (few-shot variant for few-shot runs):
    the shipped suite's, else those the record stored (a suite file of the user's), else None
    (an older record of such a suite: every setting then sets its row apart)."""
    config = record["config"]
    known = _known_suite(config["suite"])
    if known is None:
        return record.get("protocol")
    method = config.get("method", "finetune")
    own_protocol = method in tasks_lib.METHOD_DEFAULTS or method in known.methods
    candidates = known.fewshot_tasks([t.name for t in known.tasks]) if method == "fewshot" \
        else [known.with_method(task, method) for task in known.tasks] if own_protocol \
        else known.tasks
    protocol = next((t.protocol for t in candidates if t.name == config["task"]), None)
    return protocol.settings() if protocol else record.get("protocol")
