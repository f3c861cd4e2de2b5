"""The model a run starts from: a checkpoint or a scratch model, at the task's resolution."""

from __future__ import annotations

from vitbench import tasks as tasks_lib
from vitbench.checkpoints import identity
from vitbench.checkpoints.loader import load_model
from vitbench.models.vit import create_model
from vitbench.train import distribute, execution


def _load(ckpt: str, task: tasks_lib.Task, num_classes: int, normalization=None,
          new_head: bool = False, **options):
    """`ckpt` (or a scratch model) at the task's resolution with a `num_classes` head (with
    `new_head`, always a new zero one, without the pre-logits layer); `normalization`
    replaces the checkpoint's where given; `options` are ViTConfig fields to override (e.g.
    remat=True)."""
    size = task.protocol.resolution
    if normalization:
        options["normalization"] = normalization
    if identity.is_scratch(ckpt):
        return create_model(identity.scratch_model(ckpt), num_classes=num_classes,
                            image_size=size, **options)
    return load_model(ckpt, num_classes=num_classes, image_size=size, progress=False,
                      new_head=new_head, **options)


def load_for_task(ckpt: str, task: tasks_lib.Task, remat: bool = False,
                  normalization: str | None = None, dropout: float | None = None,
                  **options):
    """The model to fine-tune: `ckpt` with a new zero head for the task and without its
    pre-logits layer, at its resolution, as the official fine-tuning starts every task, also
    when the checkpoint's head already has the task's classes (e.g. an ImageNet-1k pretraining
    fine-tuned on ImageNet). With `remat`, each block's activations are recomputed in the
    backward pass; `dropout` replaces the checkpoint's dropout rate where given; `options`
    are other ViTConfig fields (e.g. `trainable`, `lora_rank`)."""
    options.update({} if dropout is None else {"dropout": dropout})
    return _load(ckpt, task, task.num_classes, normalization, new_head=True, remat=remat,
                 **options)


def load_for_features(ckpt: str, task: tasks_lib.Task, normalization: str | None = None):
    """The frozen model of a few-shot probe: `ckpt` without its head (keeping the pre-logits
    layer where it has one), at the task's resolution."""
    return _load(ckpt, task, 0, normalization)


def pass_size(micro_batch_size: int | None, model, batch_size: int) -> int:
    """The micro-batch asked for, else `execution.pass_size` of the model."""
    return micro_batch_size or execution.pass_size(model.config, model.image_size, batch_size,
                                                   distribute.replicas())


def load_frozen(ckpt: str, task: tasks_lib.Task, normalization: str | None = None):
    """The frozen model of a linear or kNN probe under the VPT protocol: `ckpt` without its
    head and without its pre-logits layer (the final LayerNorm's class token is the
    feature, as VPT's code feeds its head), at the task's resolution."""
    return _load(ckpt, task, task.num_classes, normalization, new_head=True)
