"""Pretraining recipes: which data, and how to train a ViT on it (`vitbench/suites/pretrain/`).

A recipe file (`vitbench/suites/pretrain/<dataset>.toml`) has a `[data]` table (a task as in the
suite files: dataset, version, classes, splits, label op) and a `[recipe]` table of `Recipe` fields;
a `[model.<zoo name>]` table overrides fields for one model. `tfds.toml` serves every TFDS
dataset without a file of its own. `Recipe`'s defaults are the paper's pretraining settings
(Sec. 4.1, Appendix B.1): Adam (0.9, 0.999), batch 4096, 10k warm-up steps, 224 px, inception
crop and flip, a representation layer.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import tomllib

from vitbench import rules
from vitbench import tasks as tasks_lib
from vitbench.data import builders  # noqa: F401  (registers vitbench's datasets)
from vitbench.rules import setting
from vitbench.train.losses import LOSSES, loss_for_labels
from vitbench.train.schedules import SCHEDULES

RECIPES_DIR = tasks_lib.SUITES_DIR / "pretrain"
# Fields that only decide what is measured along the way, not the trained weights: a run may
# resume with other values.
EVALUATION_FIELDS = ("eval_every", "fewshot", "fewshot_shots", "fewshot_seeds")
ANY_TFDS = "tfds"  # the recipe file of TFDS datasets that have none of their own


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that decides a pretraining run's numbers, with the paper's defaults. Each
    field is defined once, with its rule and, where `vitbench pretrain` has a flag of the same
    name, the flag's help."""

    dataset: str = setting(rule=rules.TEXT)
    model: str = setting("vit_b16", rules.TEXT)
    epochs: float = setting(90.0, rules.NON_NEGATIVE, "Epochs over the train split (paper: 90 "
                            "for ImageNet-21k, 300 for ImageNet).")
    steps: int = setting(0, rules.integer(0), "Training steps (default or 0: the recipe's "
                         "epochs over the train split).")  # 0: epochs x examples / batch
    batch_size: int = setting(4096, rules.integer(1), "Global batch size (paper: 4096).")
    lr: float = setting(0.001, rules.NON_NEGATIVE, "Peak learning rate (paper Table 3: 1e-3 "
                        "ImageNet-21k, 3e-3 ImageNet).")
    warmup_steps: int = setting(10_000, rules.integer(0),
                                "Linear warm-up steps (paper: 10000).")
    # a key of vitbench.train.schedules.SCHEDULES
    lr_decay: str = setting("linear", rules.TEXT, "Decay after warm-up: linear or cosine.")
    # Decoupled weight decay, multiplied by the learning rate as flax.optim.Adam and Keras'
    # AdamW apply it; on every weight, as the paper's code did.
    weight_decay: float = setting(0.1, rules.NON_NEGATIVE, "Decoupled weight decay (paper: "
                                  "0.03 ImageNet-21k, 0.3 ImageNet).")
    b1: float = setting(0.9, rules.FRACTION)
    b2: float = setting(0.999, rules.FRACTION)
    epsilon: float = setting(1e-8, rules.POSITIVE)  # flax's default (Keras' is 1e-7)
    grad_clip_norm: float = setting(0.0, rules.NON_NEGATIVE, "Clip gradients at this global "
                                    "norm (0: off).")
    dropout: float = setting(0.0, rules.FRACTION, "Dropout rate (paper: 0.1 for ImageNet and "
                             "ImageNet-21k).")
    resolution: int = setting(224, rules.integer(1), "Image size (paper: 224).")
    # a pre-logits layer (Dense + tanh) of the model's width
    representation: bool = setting(True, rules.BOOLEAN)
    # None: the loss's (HEAD_BIAS), resolved when the recipe is loaded
    head_bias: float | None = setting(
        None, rules.NUMBER_OR_UNSET, "Initial value of the head's biases (default: -10 with "
        "the sigmoid loss, as big_vision starts ImageNet-21k, so that the first loss is small; "
        "0 with softmax).")
    # "": from the label feature (losses.loss_for_labels)
    loss: str = setting("", rules.TEXT, "softmax or sigmoid (default: the recipe's, else from "
                        "the labels).")
    train_pp: str = setting("inception_crop({resolution})|flip_lr|value_range(-1, 1)",
                            rules.TEXT)
    eval_pp: str = setting("resize({resolution})|value_range(-1, 1)", rules.TEXT)
    # TFDS split expressions; "": the `train` / `test` split of the recipe's [data] table.
    train_split: str = setting("", rules.TEXT, "TFDS split expression to train on (default: "
                               "the recipe's).")
    eval_split: str = setting("", rules.TEXT, "TFDS split expression of the held-out top-1 "
                              "(default: the recipe's).")
    seed: int = setting(0, rules.integer(0), "Seed of initialisation, data order and "
                        "augmentation.")
    # (and the fit epochs' length)
    log_every: int = setting(100, rules.integer(1), "Steps between metric lines.")
    checkpoint_every: int = setting(1000, rules.integer(1), "Steps between checkpoints (a "
                                    "multiple of log_every).")
    # held-out top-1 and few-shot probes
    eval_every: int = setting(5000, rules.integer(1), "Steps between evaluations (a multiple "
                              "of log_every).")
    # "suite/task" probes of the pre-logit features
    fewshot: tuple[str, ...] = setting((), rules.list_of(
        rules.TEXT, "'suite/task' names", '["demo/demo_color"]', may_be_empty=True))
    fewshot_shots: tuple[int, ...] = setting((10,), rules.list_of(
        rules.integer(1), "positive integers", "[10, 25]"))
    fewshot_seeds: int = setting(1, rules.integer(1))

    def __post_init__(self):
        for field in dataclasses.fields(self):
            rules.check(RECIPE_RULES, field.name, getattr(self, field.name), field.name)
        if self.lr_decay not in SCHEDULES:
            raise ValueError(f"lr_decay {self.lr_decay!r} is not one of {sorted(SCHEDULES)}")
        if self.loss and self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {sorted(LOSSES)}")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) % self.log_every:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of "
                                 f"log_every ({self.log_every})")

    def total_steps(self, train_examples: int | None) -> int:
        if self.steps:
            return self.steps
        if not train_examples:
            raise ValueError(f"{self.dataset}: the size of the train split is not known, so "
                             "epochs cannot be turned into steps; pass --steps")
        return max(1, math.ceil(self.epochs * train_examples / self.batch_size))

    def training_fields(self) -> dict:
        """The fields that decide the trained weights (all but EVALUATION_FIELDS)."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if key not in EVALUATION_FIELDS}


# Recipe field -> what it must be.
RECIPE_RULES = rules.rules_of(Recipe)
# The head's initial bias for each loss: with the sigmoid loss over 21,843 classes a zero bias
# starts at about 15,000 per image; big_vision starts it at -10 (configs/vit_i21k.py).
HEAD_BIAS = {"softmax": 0.0, "sigmoid": -10.0}


@dataclasses.dataclass(frozen=True)
class Pretraining:
    """A recipe with its data: `task` reads the splits with the recipe's preprocessing."""

    name: str
    description: str
    recipe: Recipe
    task: tasks_lib.Task
    path: pathlib.Path


def recipe_names():
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml") if path.stem != ANY_TFDS)


def load(dataset: str, model: str | None = None, data_dir: str | None = None,
         **overrides) -> Pretraining:
    """The recipe of `dataset` (a recipe file's name, or any TFDS dataset, looked up in
    `data_dir` too), for `model` (default: the recipe's), with `overrides` (Recipe fields; None
    values are ignored) applied last."""
    path = RECIPES_DIR / f"{dataset}.toml"
    if not path.is_file():
        path = RECIPES_DIR / f"{ANY_TFDS}.toml"
    try:
        data = tomllib.loads(path.read_text().replace("{dataset}", dataset))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None
    values = dict(data.get("recipe", {}))
    model = model or values.get("model", Recipe.model)
    values.update(data.get("model", {}).get(model, {}))
    values.update({key: value for key, value in overrides.items() if value is not None})
    values = {key: tuple(value) if isinstance(value, list) else value
              for key, value in {**values, "model": model, "dataset": dataset}.items()}
    fields = {field.name for field in dataclasses.fields(Recipe)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown recipe field(s) {unknown}; valid: {sorted(fields)}")
    recipe = Recipe(**values)
    task = _task(data.get("data", {}), recipe, path, data_dir)
    pretraining = Pretraining(dataset, data.get("description", ""), recipe, task, path)
    if recipe.head_bias is None:
        pretraining = dataclasses.replace(pretraining, recipe=dataclasses.replace(
            recipe, head_bias=HEAD_BIAS[loss_of(pretraining)]))
    return pretraining


def _task(row: dict, recipe: Recipe, path: pathlib.Path, data_dir=None) -> tasks_lib.Task:
    protocol = tasks_lib.Protocol(resolution=recipe.resolution, train_pp=recipe.train_pp,
                                  eval_pp=recipe.eval_pp, fit_split="train", test_split="test")
    row = {"name": recipe.dataset, "group": "upstream", **row}
    splits = dict(row.get("splits", {}))
    splits.update({role: split for role, split in [("train", recipe.train_split),
                                                   ("test", recipe.eval_split)] if split})
    if not {"train", "test"} <= set(splits):
        raise ValueError(f"{path}, [data]: splits must name `train` and `test` (the held-out "
                         f"split), not only {sorted(splits)}")
    row["splits"] = splits
    if not row.get("num_classes"):  # any TFDS dataset: its label feature says
        feature = _tfds_label(row["dataset"], data_dir)
        multi_label = loss_for_labels(feature) == "sigmoid"
        row["num_classes"] = (feature.feature if multi_label else feature).num_classes
        if multi_label:
            row["label"] = f"multi_hot('label', {row['num_classes']})"
    try:
        return tasks_lib.Task(**row, protocol=protocol)
    except TypeError as error:
        raise ValueError(f"{path}, [data]: {error}") from None


def _tfds_label(dataset: str, data_dir=None):
    """The `label` feature of a TFDS dataset (read from its builder: no data is needed; a
    dataset only prepared in `data_dir` is found there)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except Exception as error:  # TFDS raises DatasetNotFoundError and others
        names = ", ".join(recipe_names())
        raise KeyError(f"unknown pretraining dataset {dataset!r}: it has no recipe ({names}) "
                       f"and TFDS does not know it ({str(error).splitlines()[0]})") from None
    features = builder.info.features
    if "label" not in features:
        raise ValueError(f"TFDS dataset {dataset} has no `label` feature (it has "
                         f"{', '.join(features.keys())}); write a recipe file in "
                         f"{RECIPES_DIR} with a `label` op")
    return features["label"]


def loss_of(pretraining: Pretraining) -> str:
    """The recipe's loss, else sigmoid for multi-hot labels and softmax for class ids."""
    if pretraining.recipe.loss:
        return pretraining.recipe.loss
    return "sigmoid" if pretraining.task.label.startswith("multi_hot") else "softmax"


def label_key(task: tasks_lib.Task) -> str:
    """The batch key of the training targets (multi-hot vectors are `labels`)."""
    return "labels" if task.label.startswith("multi_hot") else "label"
