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
# Published VTAB-1k rows of other protocols, with their protocol tags
# (../shared/spec/external_vtab1k_results.csv; the CLIP zero-shot rows, which are not
# VTAB-1k, left out). `suite` names the shipped suite that runs the row's protocol (VPT's:
# vtab1k_vpt); a row of a protocol no suite runs yet has none and shows on no board.
PUBLISHED_CSV = SUITES_DIR / "reference" / "published_vtab1k.csv"
RUNS = 3  # the runs a reported std is over (the ViT paper's Table 2: "over three runs")
# Which table a delta is taken against, first match first: the per-task VTAB table, then
# Table 5 (the paper's default fine-tuning protocol, as vitbench runs it), then Table 2
# (ImageNet there was fine-tuned at 512/518 px with Polyak averaging).
SOURCE_ORDER = ("table9", "table5", "table2", "vpt_paper_table13_via_vpetl_readme",
                "vpt_paper_table4", "vpt_paper_table2", "vpt_paper_table5",
                "vpetl_bench_readme", "vtab_paper_results_csv")
SOURCE_NAMES = {"vpt_paper_table13_via_vpetl_readme": "VPT paper Table 13",
                "vpt_paper_table4": "VPT paper Table 4", "vpt_paper_table2": "VPT paper Table 2",
                "vpt_paper_table5": "VPT paper Table 5",
                "vpetl_bench_readme": "NOAH Table 1 via V-PETL Bench",
                "vtab_paper_results_csv": "VTAB paper results"}
METHOD_NAMES = {"finetune": "full fine-tuning", "linear": "linear probe", "vpt_deep": "VPT-deep",
                "lora": "LoRA", "bitfit": "BitFit", "vpt_shallow": "VPT-shallow"}
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
    method: str = "finetune"  # how the number was had (`METHOD_NAMES`)

    @property
    def label(self) -> str:
        pretrain = PRETRAIN_NAMES.get(self.pretrain, self.pretrain)
        if self.source in SOURCE_NAMES:
            return (f"{self.model}, {pretrain}, {METHOD_NAMES.get(self.method, self.method)} "
                    f"({SOURCE_NAMES[self.source]})")
        return f"{self.model}, {pretrain} (paper Table {self.source.removeprefix('table')})"


@functools.lru_cache(maxsize=4)
def load(paths: tuple[pathlib.Path, ...] = (REFERENCE_CSV, PUBLISHED_CSV)
         ) -> tuple[Reported, ...]:
    """The reported rows of every file of `paths`, one per source, model, pre-training and
    method."""
    tables: dict[tuple, dict[Key, tuple]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for line in csv.DictReader(f):
                key = (line["source"], line["model"], line["pretrain"],
                       line.get("method") or "finetune")
                values = tables.setdefault(key, {})
                values[(line["suite"], line["task"], line["metric"])] = (
                    float(line["value"]), float(line["std"]) if line["std"] else None)
    return tuple(Reported(source, model, pretrain, values, method)
                 for (source, model, pretrain, method), values in tables.items())


def paper_model(ckpt: str) -> tuple[str, str] | None:
    """(paper model name, pre-training data) of a published checkpoint that is one."""
    entry = find_checkpoint(ckpt)
    return (entry.paper, entry.upstream) if entry is not None and entry.paper else None


# The reported method a row of ours is compared with (a head scored as released: the
# fine-tuned numbers it claims).
COMPARED_METHOD = {"evaluate": "finetune"}


def reported_for(ckpt: str, reported: list[Reported], method: str = "finetune"
                 ) -> dict[Key, tuple[float, str, float | None]]:
    """key -> (value, source, std over the paper's runs or None) of the paper model `ckpt`
    is, by the same `method`, by SOURCE_ORDER; {} if none."""
    model = paper_model(ckpt)
    if model is None:
        return {}
    method = COMPARED_METHOD.get(method, method)
    found = {}
    for source in reversed(SOURCE_ORDER):  # earlier sources overwrite later ones
        for table in reported:
            if table.source == source and (table.model, table.pretrain) == model and \
                    table.method == method:
                found.update({key: (value, source, std)
                              for key, (value, std) in table.values.items()})
    return found
