"""From run records to leaderboard cells: one result per (row, task).

A row is a checkpoint with the protocol settings that differ from the suite's; a cell holds a
task's final run per seed (the last written per config hash, at the swept rate with the best
validation accuracy where tune runs were recorded). Few-shot probes fill a cell per shot count.
Design notes: docs/design/leaderboards.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from vitbench.records import best_setting, setting_of
from vitbench.tasks import Protocol

# How a row's label names the runs of another method than fine-tuning (few-shot rows are on
# boards of their own): the checkpoint's own head scored without training, the probes of
# frozen features.
METHOD_NOTES = {"evaluate": "as released", "linear": "linear probe", "knn": "kNN",
                "bitfit": "BitFit", "lora": "LoRA", "vpt_deep": "VPT-deep",
                "vpt_shallow": "VPT-shallow"}
# Protocol fields that make a different row when they differ from the suite's defaults.
SETTING_FIELDS = tuple(dict.fromkeys([*Protocol().settings(), *Protocol(name="vpt").settings()]))
SETTING_NAMES = {"steps": "steps", "batch_size": "batch", "warmup_steps": "warm-up",
                 "epochs": "epochs", "warmup_epochs": "warm-up epochs",
                 "resolution": "px", "polyak": "polyak", "momentum_dtype": "momentum",
                 "l2_reg": "l2"}


@dataclasses.dataclass(frozen=True)
class Row:
    """A checkpoint and the settings by which its runs differ from the suite's protocol."""

    ckpt: str
    sha256: str | None = None
    setting: tuple[tuple[str, object], ...] = ()
    # Its input normalisation where not the official [-1, 1] ("inception"): the record's
    # checkpoint input (`identity.checkpoint_input`).
    normalization: str | None = None
    # Fine-tuned with Keras' momentum rule: recorded before vitbench took the official update
    # (their configs name no `update_rule`); never mixed with the runs of the official one.
    keras_momentum: bool = False
    method: str = "finetune"  # another method ("evaluate", "linear", "knn") is a row apart

    @property
    def label(self) -> str:
        label = self.ckpt + (f" @{self.sha256[:8]}" if self.sha256 else "")
        notes = ([METHOD_NOTES[self.method]] if self.method in METHOD_NOTES else []) + (
            ["Keras momentum rule, before 2026-12"] if self.keras_momentum else []) + (
            [f"input {self.normalization}"] if self.normalization else []) + [
            f"{SETTING_NAMES[k]} {v}" for k, v in self.setting]
        return label + (" (" + ", ".join(notes) + ")" if notes else "")


@dataclasses.dataclass
class Cell:
    """The selected final run of each seed of one task in one row."""

    runs: dict[int, dict] = dataclasses.field(default_factory=dict)  # seed -> final record
    # seed of tune runs -> setting (`records.setting_of`: the rate, or (rate, weight decay))
    # -> tune_val accuracy: each seed's own, or one seed's for all (VPT's)
    tune: dict[int, dict] = dataclasses.field(default_factory=dict)
    # seed -> the fraction of the steps its tune runs trained (`Protocol.tune_fraction`)
    tune_fraction: dict[int, float] = dataclasses.field(default_factory=dict)

    def values(self, metric: str = "accuracy") -> list[float]:
        """The metric in % of each seed's run (diverged runs have none)."""
        return [100.0 * r["metrics"][metric] for r in self.finished(metric)]

    def finished(self, metric: str = "accuracy") -> list[dict]:
        """The records of the seeds' runs that have the metric (diverged runs have none)."""
        return [r for r in self.runs.values() if r.get("status", "finished") == "finished"
                and r["metrics"].get(metric) is not None]

    @property
    def diverged(self) -> int:
        """How many of the seeds' runs diverged."""
        return sum(r.get("status") == "diverged" for r in self.runs.values())

    def short(self, metric: str) -> dict[str, int]:
        """Classes with fewer training images than a few-shot metric's k: {class: images
        used}, over the seeds' runs (none for other metrics)."""
        return {name: used for r in self.runs.values()
                for name, used in r["metrics"].get("short", {}).get(metric, {}).items()}

    @property
    def lrs(self) -> list[float]:
        return [r["config"]["lr"] for r in self.runs.values()]


# What a run record's config must hold to be placed on a board (`transfer.plan.Run.config`).
CONFIG_FIELDS = ("suite", "task", "ckpt", "phase", "seed", "lr")


def run_records(records: Iterable[dict], source) -> list[dict]:
    """The records that are `vitbench run` records; others (notes, another tool's lines) are
    skipped with a warning naming `source`, so that one of them stops no board."""
    import warnings

    kept = []
    for record in records:
        config = record.get("config")
        missing = [key for key in CONFIG_FIELDS if key not in config] \
            if isinstance(config, dict) else ["config"]
        if missing or not isinstance(record.get("metrics"), dict):
            warnings.warn(f"{source}: record {record.get('config_hash')} is not a run record "
                          f"(no {', '.join(missing or ['metrics'])}); skipped", stacklevel=2)
            continue
        kept.append(record)
    return kept


def latest_per_config(records: Iterable[dict]) -> list[dict]:
    """One record per config hash, the one written last, in the order of those last writes."""
    last = {}
    for record in records:
        last.pop(record["config_hash"], None)
        last[record["config_hash"]] = record
    return list(last.values())


def row_of(record: dict, defaults: dict | None = None) -> Row:
    """The row of a record; `defaults` maps setting fields to the suite protocol's values
    (None: not known, so that every setting sets the row apart)."""
    config = record["config"]
    setting = tuple((key, config[key]) for key in SETTING_FIELDS if key in config and (
        defaults is None or (key in defaults and config[key] != defaults[key])))
    normalization = ((record.get("checkpoint") or {}).get("input") or {}).get("normalization")
    return Row(config["ckpt"], config.get("ckpt_sha256"), setting,
               normalization if normalization not in (None, "inception") else None,
               method_of(record) == "finetune" and "update_rule" not in config,
               method_of(record))


def method_of(record: dict) -> str:
    return record["config"].get("method", "finetune")


def board_method(record: dict) -> str:
    """The kind of board that shows a record: "fewshot", or "finetune" (whose boards also
    show checkpoints' heads scored as released)."""
    return "fewshot" if method_of(record) == "fewshot" else "finetune"


def collect(records: Iterable[dict], defaults_of=lambda record: None
            ) -> dict[Row, dict[str, Cell]]:
    """Cells by row and task. `defaults_of(record)` gives the protocol's setting values.

    Args:
        records: `vitbench run` records (see `run_records`), in the order written.
        defaults_of: record -> the suite protocol's setting values (`row_of`'s `defaults`);
            None where not known, so that every setting sets a row apart.

    Returns:
        Row -> task name -> `Cell`.
    """
    finals: dict[tuple, dict[object, dict]] = {}
    tunes: dict[tuple, dict[object, float | None]] = {}
    fractions: dict[tuple, float] = {}
    tune_seeds: dict[tuple, int] = {}
    for record in latest_per_config(records):
        config = record["config"]
        row = row_of(record, defaults_of(record))
        key, setting = (row, config["task"], config["seed"]), setting_of(config)
        if config["phase"] == "tune":
            tunes.setdefault(key, {})[setting] = record["metrics"].get("accuracy")
            fractions[key] = config.get("tune_fraction", 1.0)
        else:
            # a final run whose setting the tune runs of another seed chose (VPT's)
            tune_seeds[key] = config.get("tune_seed", config["seed"])
            runs = finals.setdefault(key, {})
            earlier = runs.pop(setting, None)  # keep the order of writing: the last is last
            if earlier is not None and method_of(record) == "fewshot":
                record = _merged_probes(earlier, record)
            runs[setting] = record
    table: dict[Row, dict[str, Cell]] = {}
    for (row, task, seed), runs in finals.items():
        tuned = (row, task, tune_seeds[(row, task, seed)])
        scores = tunes.get(tuned, {})
        best = best_setting(scores)
        chosen = runs[best] if best in runs else list(runs.values())[-1]
        cell = table.setdefault(row, {}).setdefault(task, Cell())
        cell.runs[seed] = chosen
        if scores:
            cell.tune[tuned[2]], cell.tune_fraction[tuned[2]] = scores, fractions[tuned]
    return table


def _merged_probes(earlier: dict, later: dict) -> dict:
    """Two few-shot records of one row, task and seed as one: each shot count's result from
    the later record that has it (a `--shots 5` probe replaces the 5-shot cell only), and
    each shot count's shortfall from the record its result came from."""
    replaced = {f"{k}shot" for k in later["config"].get("shots", ())}
    short = {metric: classes for metric, classes in earlier["metrics"].get("short", {}).items()
             if metric not in replaced}
    short.update(later["metrics"].get("short", {}))
    metrics = {**earlier["metrics"], **later["metrics"],
               "seeds": {**earlier["metrics"].get("seeds", {}),
                         **later["metrics"].get("seeds", {})}}
    metrics.pop("short", None)
    metrics.update({"short": short} if short else {})
    shots = sorted(set(earlier["config"].get("shots", ())) | set(later["config"].get("shots", ())))
    return {**later, "metrics": metrics, "config": {**later["config"], "shots": shots}}
