"""How fine-tuning trains under each published protocol (`Protocol.name`): the ViT paper's
(SGD, steps, a zero head) and VPT's (AdamW, epochs, a Kaiming head, dropout). The protocol's
numbers (rates, decays, epochs, seeds) are its suite's data (`vitbench.tasks.Protocol`);
what is here is the rest of the recipe, fixed by the protocol. TensorFlow-free."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """The fixed part of a protocol's fine-tuning recipe."""

    optimizer: str  # a `train.finetune_config.OPTIMIZERS` name
    grad_clip_norm: float | None  # global norm; None: no clipping
    # Steps are counted in epochs of the training split (`Protocol.epochs`, warm-up
    # `warmup_epochs`) and the rate is stepped once per epoch; else `Protocol.steps`.
    per_epoch: bool
    # Base rates are per this many images of the batch (the rate is base x batch / it);
    # None: the rates are used as written.
    lr_per_images: int | None
    head_init: str  # "zeros", or "kaiming_normal(fan_out)" (`evaluate.linear_probe`'s)
    dropout: float | None  # the ViT's dropout while training; None: the checkpoint's
    # The tune grid is learning rate x `Protocol.weight_decays` (else rates only).
    sweeps_weight_decay: bool
    # Final runs take the protocol's `final_seeds` and the tune runs its first (else the
    # `--seed`/`--repeats` seeds, each with tune runs of its own).
    fixed_seeds: bool
    epsilon: float = 1e-6  # AdamW's

    def optimizer_name(self, optimizer: str) -> str:
        """How a record names `optimizer` (the protocol's, or a method's own), with this
        recipe's AdamW epsilon."""
        if optimizer == "sgd":
            return "sgd(momentum=0.9)"
        return f"adamw(beta_1=0.9, beta_2=0.999, epsilon={self.epsilon:g})"


FINE_TUNING = {
    # vit_jax/train.py: SGD with momentum 0.9, clipping at norm 1, a zero head, warm-up and
    # cosine per step, no weight decay.
    "vit": FineTuning("sgd", 1.0, per_epoch=False, lr_per_images=None, head_init="zeros",
                      dropout=None, sweeps_weight_decay=False, fixed_seeds=False),
    # KMnP/vpt `end2end` (configs/base-finetune.yaml, tune_vtab.py): AdamW with epsilon 1e-6,
    # no clipping, base rates x batch/256, VPT's head start, ViT dropout 0.1 while training,
    # the lr x weight-decay grid, seeds 42, 44, 82, 100, 800. The decay is the grid's value,
    # decoupled and not on biases or LayerNorms (VPT's own AdamW uses 0.01 for any value > 0
    # and switches to SGD at 0: spec pitfall 4.1).
    "vpt": FineTuning("adamw", None, per_epoch=True, lr_per_images=256,
                      head_init="kaiming_normal(fan_out)", dropout=0.1,
                      sweeps_weight_decay=True, fixed_seeds=True),
}


def fine_tuning(protocol) -> FineTuning:
    """The fine-tuning recipe of a `Protocol` (by its `name`).

    Raises:
        KeyError: a protocol name with no recipe, naming those that have one.
    """
    try:
        return FINE_TUNING[protocol.name]
    except KeyError:
        raise KeyError(f"no fine-tuning recipe for protocol {protocol.name!r}; protocols: "
                       f"{', '.join(FINE_TUNING)}") from None
