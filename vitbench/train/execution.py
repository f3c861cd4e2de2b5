"""How the loops execute a batch: in how many passes (`pass_size`: the micro-batch when the
user names none) and how many training steps Keras runs per call of its compiled train
function (`batches_per_call`, Keras' `steps_per_execution`: the host reads results, the loss
for TerminateOnNaN and the progress bar, once per call, not after every step). Used by every
training and evaluation loop and by `vitbench bench`, which times them as the loops run."""

from __future__ import annotations

import math

import keras

from vitbench.models import attention

# Micro-batches per call at most: enough to hide the host round-trip, few enough that the
# progress bar and NaN checks stay timely.
MAX_BATCHES_PER_CALL = 8


def batches_per_call(epoch_batches: int, remaining: int) -> int:
    """Keras' `steps_per_execution` for a fit of `remaining` batches in epochs of
    `epoch_batches`: the largest number up to MAX_BATCHES_PER_CALL that divides both, so that
    every epoch end (a save, a metrics line) and the stop fall on a call boundary."""
    common = math.gcd(epoch_batches, remaining)
    return max(k for k in range(1, MAX_BATCHES_PER_CALL + 1) if common % k == 0)


# On a CPU, a pass whose largest activation outgrows the last-level cache (32 MiB on the 2-core
# EPYC vitbench is measured on) runs slower per image: ViT-B/16 at 224 px (fp32, Keras fit,
# 2026-11-26) trained 0.95-0.97 images/s as 4 passes of 8 images per update of 32 (19 MiB of
# MLP activation a pass) against 0.79 as one pass of 32 (77 MiB).
CPU_PASS_BYTES = 32 * 2**20


def activation_bytes(config, image_size) -> int:
    """Bytes per image of a block's largest float32 activation: the MLP's hidden units
    (tokens x mlp_dim) or the attention weights (heads x tokens x tokens)."""
    tokens = config.num_tokens(image_size)
    return 4 * max(tokens * config.mlp_dim, config.num_heads * tokens * tokens)


def pass_size(config, image_size, batch_size: int, replicas: int = 1) -> int:
    """Images per forward/backward pass when nobody chose a micro-batch: the whole batch on an
    accelerator; on a CPU the batch halved, as long as it divides the batch and the
    `replicas`, until one replica's share of a pass fits CPU_PASS_BYTES of activation
    (`activation_bytes`). Gradients of the passes are accumulated into one update, which
    equals the whole batch's up to float rounding.

    Args:
        config: the model's `ViTConfig`.
        image_size: input size in pixels, an int or (height, width).
        batch_size: images per update.
        replicas: data-parallel devices the batch is split over.

    Returns:
        The micro-batch size: `batch_size`, or on a CPU a power-of-two fraction of it.
    """
    size = batch_size
    if not attention.on_cpu():
        return size
    per_image = activation_bytes(config, image_size)
    while (size // replicas * per_image > CPU_PASS_BYTES and size % 2 == 0
           and (size // 2) % replicas == 0):
        size //= 2
    return size


OUT_OF_MEMORY_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "OOM", "out of memory")


def device_peak_bytes() -> int | None:
    """The most bytes the process has held at once on its first accelerator, where the
    backend reports it (JAX on a GPU or TPU); None on a CPU. One figure for the process:
    a run's own peak where it is the process's first, else at most the larger of it and
    the earlier runs'."""
    if keras.backend.backend() != "jax":
        return None
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def is_out_of_memory(error: Exception) -> bool:
    """Whether `error` is a device running out of memory (XLA's, TensorFlow's)."""
    return any(marker in str(error) for marker in OUT_OF_MEMORY_MARKERS)


def halving_until_it_fits(attempt, micro_batch_size: int, replicas: int = 1):
    """(`attempt(micro)`'s result, micro): `attempt` called with `micro_batch_size`, then,
    after each out-of-memory error, with half as many images while the half is whole and
    splits over the `replicas`.

    Raises:
        Exception: `attempt`'s error where it is not out of memory, or where the micro-batch
            cannot be halved.
    """
    micro = micro_batch_size
    while True:
        try:
            return attempt(micro), micro
        except Exception as error:  # noqa: BLE001 -- only out-of-memory errors are retried
            if not is_out_of_memory(error) or micro % 2 or (micro // 2) % replicas:
                raise
            micro //= 2


def check_split(batch_size: int, micro_batch_size: int, replicas: int, remedy: str) -> None:
    """Raises unless the micro-batch divides the batch and both split evenly over the
    `replicas` data-parallel devices; `remedy` (which flags to change) ends the message.

    Args:
        batch_size: images per update.
        micro_batch_size: images per forward/backward pass.
        replicas: data-parallel devices.
        remedy: completes "make ..." in the message, e.g. which flags to change.

    Raises:
        ValueError: the micro-batch is larger than or does not divide the batch, or either
            does not split evenly over `replicas`.
    """
    batch, micro = batch_size, micro_batch_size
    if micro > batch or batch % micro:
        raise ValueError(f"micro-batch size {micro} must divide the batch size {batch}")
    if batch % replicas or micro % replicas:
        raise ValueError(f"the batch ({batch}) and the micro-batch ({micro}) must split evenly "
                         f"over the {replicas} devices: make {remedy}")
