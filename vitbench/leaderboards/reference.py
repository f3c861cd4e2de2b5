"""Reported numbers (`suites/reference/paper.csv`) and which checkpoint is which paper model.

The CSV holds the ViT paper's Tables 2 (ViT, BiT-L, Noisy Student), 5 (ViT pre-trained on
ImageNet, ImageNet-21k and JFT-300M, fine-tuned at 384 px) and 9 (VTAB-1k per task), one
number per line keyed by vitbench's suite, task and metric names, in %. A checkpoint is a paper
model when its registry entry names one (`paper` in `checkpoints/known.toml`, with `upstream`
as the pre-training data).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import pathlib

from vitbench.checkpoints.registry import find_checkpoint
from vitbench.tasks import SUITES_DIR

REFERENCE_CSV = SUITES_DIR / "reference" / "paper.csv"
RUNS = 3  # the runs a reported std is over (the ViT paper's Table 2: "over three runs")
# Which table a delta is taken against, first match first: the per-task VTAB table, then
# Table 5 (the paper's default fine-tuning protocol, as vitbench runs it), then Table 2
# (ImageNet there was fine-tuned at 512/518 px with Polyak averaging).
SOURCE_ORDER = ("table9", "table5", "table2")
PRETRAIN_NAMES = {"jft300m": "JFT-300M", "imagenet21k": "ImageNet-21k",
                  "imagenet": "ImageNet", "imagenet+jft300m_unlabeled": "ImageNet+JFT-300M"}

Key = tuple[str, str, str]  # (suite, task, metric)


@dataclasses.dataclass(frozen=True)
class Reported:
    """One model's numbers from one table of the paper."""

    source: str
    model: str
    pretrain: str
    values: dict[Key, tuple[float, float | None]]  # key -> (value, std)

    @property
    def label(self) -> str:
        return (f"{self.model}, {PRETRAIN_NAMES.get(self.pretrain, self.pretrain)} "
                f"(paper Table {self.source.removeprefix('table')})")


@functools.lru_cache(maxsize=4)
def load(path: pathlib.Path = REFERENCE_CSV) -> tuple[Reported, ...]:
    tables: dict[tuple, dict[Key, tuple]] = {}
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            values = tables.setdefault((line["source"], line["model"], line["pretrain"]), {})
            values[(line["suite"], line["task"], line["metric"])] = (
                float(line["value"]), float(line["std"]) if line["std"] else None)
    return tuple(Reported(*key, values) for key, values in tables.items())


def paper_model(ckpt: str) -> tuple[str, str] | None:
    """(paper model name, pre-training data) of a published checkpoint that is one."""
    entry = find_checkpoint(ckpt)
    return (entry.paper, entry.upstream) if entry is not None and entry.paper else None


def reported_for(ckpt: str, reported: list[Reported]
                 ) -> dict[Key, tuple[float, str, float | None]]:
    """key -> (value, source, std over the paper's runs or None) of the paper model `ckpt`
    is, by SOURCE_ORDER; {} if none."""
    model = paper_model(ckpt)
    if model is None:
        return {}
    found = {}
    for source in reversed(SOURCE_ORDER):  # earlier sources overwrite later ones
        for table in reported:
            if table.source == source and (table.model, table.pretrain) == model:
                found.update({key: (value, source, std)
                              for key, (value, std) in table.values.items()})
    return found
