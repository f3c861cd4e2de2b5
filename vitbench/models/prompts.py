"""Visual prompts (Jia et al. 2022, VPT; KMnP/vpt `src/models/vit_prompt/vit.py`): p learned
tokens inserted after the prefix tokens (class token, registers), after the position
embeddings, so they carry no position. VPT-shallow inserts them before the first block;
VPT-deep before every block, each block's set replacing the prompt outputs of the block
before. Only the class token is read out, so their order does not matter.

VPT's start: U(-v, v) with v = sqrt(6 / (3 x patch² + D)) ("xavier" over the patch
embedding's fan-in and the width); dropout on the prompts each time they are inserted.
The prompts are not a checkpoint's weights (`lora.ADAPTER_WEIGHTS`): loading one leaves them at
their start, and `initialize` draws them from a seed.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from vitbench.models.dropout import Dropout

DEPTHS = ("deep", "shallow")


@keras.saving.register_keras_serializable(package="vitbench")
class Prompts(layers.Layer):
    """Puts `count` learned tokens after the first `prefix` tokens: inserted (`replace`
    False: the sequence grows by `count`) or in place of the `count` tokens there."""

    def __init__(self, count: int, prefix: int, replace: bool, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.count, self.prefix, self.replace, self.rate = count, prefix, replace, dropout
        self.dropout = Dropout(dropout)

    def build(self, input_shape):
        self.prompts = self.add_weight(name="prompts", shape=(1, self.count, input_shape[-1]),
                                       initializer="zeros")

    def call(self, x, training=None):
        batch = ops.shape(x)[0]
        prompts = ops.broadcast_to(ops.cast(self.prompts, x.dtype),
                                   (batch, self.count, x.shape[-1]))
        prompts = self.dropout(prompts, training=training)
        rest = self.prefix + (self.count if self.replace else 0)
        return ops.concatenate([x[:, :self.prefix], prompts, x[:, rest:]], axis=1)

    def get_config(self):
        return {**super().get_config(), "count": self.count, "prefix": self.prefix,
                "replace": self.replace, "dropout": self.rate}


def layers_for(count: int, depth: str, blocks: int, prefix: int, dropout: float) -> list:
    """The prompt layers before each block: one for every block (deep) or for the first only
    (shallow); None where a block gets none."""
    if depth not in DEPTHS:
        raise ValueError(f"prompt depth {depth!r} is not one of {', '.join(DEPTHS)}")
    return [Prompts(count, prefix, replace=i > 0, dropout=dropout, name=f"prompt_{i}")
            if i == 0 or depth == "deep" else None for i in range(blocks)]


def initialize(model, seed: int) -> None:
    """Draws every prompt set of `model` from VPT's U(-v, v) with numpy's generator of
    `seed`, in the model's layer order."""
    config = model.config
    bound = np.sqrt(6.0 / (3 * config.patch_size ** 2 + config.hidden_size))
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        if variable.path.rsplit("/", 1)[-1] == "prompts":
            variable.assign(rng.uniform(-bound, bound, variable.shape).astype("float32"))
