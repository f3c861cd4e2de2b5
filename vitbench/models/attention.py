"""Multi-head attention that keeps the fused (flash) kernel in training for any sequence length.

In training on JAX on a GPU (bf16/fp16, no attention dropout or weights, flash attention not
disabled) queries, keys and values are zero-padded to a multiple of 64 tokens for cuDNN's fused
kernel; on a CPU, and for a query shorter than the keys, attention is normalised late.
Design notes: docs/design/models.md.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from vitbench.models import lora

FUSED_SEQUENCE_MULTIPLE = 64
FUSED_DTYPES = ("bfloat16", "float16")


def fused_attention_available(dtype) -> bool:
    """Whether `keras.ops.dot_product_attention` can use cuDNN's fused kernel here."""
    if keras.backend.backend() != "jax" or keras.config.is_flash_attention_enabled() is False:
        return False
    if keras.backend.standardize_dtype(dtype) not in FUSED_DTYPES:
        return False
    import jax

    return jax.devices()[0].platform == "gpu"


def padded_attention(query, key, value, scale, multiple=FUSED_SEQUENCE_MULTIPLE,
                     flash_attention=None):
    """Attention over (batch, tokens, heads, dim) inputs, computed on sequences zero-padded to
    a multiple of `multiple` with the padded keys masked out; returns the real tokens' rows."""
    length = query.shape[1]
    padded = -(-length // multiple) * multiple
    if padded == length:
        return ops.dot_product_attention(query, key, value, scale=scale,
                                         flash_attention=flash_attention)
    padding = [(0, 0), (0, padded - length), (0, 0), (0, 0)]
    query, key, value = (ops.pad(t, padding) for t in (query, key, value))
    # cuDNN takes the mask as a bias of full (query, key) extent, not a broadcast row.
    real_keys = ops.broadcast_to(ops.reshape(ops.arange(padded) < length, (1, 1, 1, padded)),
                                 (1, 1, padded, padded))
    output = ops.dot_product_attention(query, key, value, mask=real_keys, scale=scale,
                                       flash_attention=flash_attention)
    return output[:, :length]


def on_cpu() -> bool:
    """Whether the backend computes on the CPU (no GPU or TPU in use)."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].platform == "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return False


def late_normalised_attention(query, key, value, scale):
    """Softmax attention over (batch, tokens, heads, dim) inputs, heads-first, normalised after
    the weighted sum of the values (see docs/design/models.md). Exponentials and their sums are
    float32 whatever the input dtype."""
    query, key, value = (ops.swapaxes(t, 1, 2) for t in (query, key, value))
    scores = ops.cast(ops.einsum("bnqd,bnkd->bnqk", query * ops.cast(scale, query.dtype), key),
                      "float32")
    exponentials = ops.exp(scores - ops.stop_gradient(ops.max(scores, axis=-1, keepdims=True)))
    totals = ops.sum(exponentials, axis=-1, keepdims=True)
    output = ops.einsum("bnqk,bnkd->bnqd", ops.cast(exponentials, value.dtype), value)
    return ops.swapaxes(output / ops.cast(totals, value.dtype), 1, 2)


@keras.saving.register_keras_serializable(package="vitbench")
class MultiHeadDotProductAttention(layers.MultiHeadAttention):
    """Keras' multi-head attention, padded for the fused kernel where it applies and
    normalised late on a CPU and for queries shorter than the keys. With `lora_rank`, the
    query and value projections get a low-rank update (`lora.LowRankUpdate`)."""

    def __init__(self, *args, lora_rank: int = 0, lora_alpha: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if self.lora_rank:
            alpha = self.lora_rank if self.lora_alpha is None else self.lora_alpha
            for name in ("query", "value"):
                update = lora.LowRankUpdate(getattr(self, f"_{name}_dense"), self.lora_rank,
                                            alpha, name=f"{name}_lora")
                update.build(query_shape if name == "query" else value_shape)
                setattr(self, f"_{name}_dense", update)

    def get_config(self):
        return {**super().get_config(), "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha}

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        plain = not (return_attention_scores or attention_mask is not None or use_causal_mask
                     or self._dropout > 0.0 or len(query.shape) != 4)
        if plain and (on_cpu() or query.shape[1] != key.shape[1]):
            return late_normalised_attention(query, key, value, self._inverse_sqrt_key_dim), None
        # Inference runs fused at any length; only training (the backward pass) needs padding.
        if (plain and training and query.shape[1] % FUSED_SEQUENCE_MULTIPLE != 0
                and fused_attention_available(query.dtype)):
            return padded_attention(query, key, value, self._inverse_sqrt_key_dim,
                                    flash_attention=self._flash_attention), None
        return super()._compute_attention(
            query, key, value, attention_mask=attention_mask, training=training,
            return_attention_scores=return_attention_scores, use_causal_mask=use_causal_mask)
