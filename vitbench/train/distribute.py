"""Training on every device through `keras.distribution` (JAX backend).

- One device: nothing to set.
- Several local devices (GPUs of one host, TPU cores, or virtual CPU devices from
  `XLA_FLAGS=--xla_force_host_platform_device_count=N`): data parallel, the weights replicated
  and each global batch split along its first axis (`keras.distribution.DataParallel`).
- `model_parallel=M`: a (devices / M, M) mesh of axes ("batch", "model"); the weights of every
  encoder block are split over "model" as in Megatron (query/key/value by heads, the attention
  output by heads, the MLP's hidden units), everything else replicated, and the batch split
  over "batch" (`keras.distribution.ModelParallel` with the layout map below). For models whose
  weights and optimizer state do not fit one device (ViT-H/14).
- Several hosts: `keras.distribution.initialize()` first (JAX's `jax.distributed`; the
  coordinator address, process count and id come from the environment variables
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`, `..._PROCESS_ID`, or from the TPU
  runtime), then the above over the devices of all hosts. Each process reads its own shard of
  the data and feeds its share of the global batch.
"""

from __future__ import annotations

from typing import Optional

# Variable-path patterns (regular expressions, searched) -> the mesh axes of each dimension.
MEGATRON_LAYOUT = {
    r"MultiHeadDotProductAttention_1/(query|key|value)/kernel": (None, "model", None),
    r"MultiHeadDotProductAttention_1/(query|key|value)/bias": ("model", None),
    r"MultiHeadDotProductAttention_1/attention_output/kernel": ("model", None, None),
    r"encoderblock_\d+/Dense_0/kernel": (None, "model"),
    r"encoderblock_\d+/Dense_0/bias": ("model",),
    r"encoderblock_\d+/Dense_1/kernel": ("model", None),
}


def initialize_hosts() -> None:
    """Joins the multi-host job (before anything touches a device)."""
    import keras

    keras.distribution.initialize()


def configure(model_parallel: int = 1):
    """Sets (and returns) the global distribution for all devices; None on one device."""
    import keras

    if keras.backend.backend() != "jax":
        if model_parallel > 1:
            raise ValueError("model parallelism needs the JAX backend (KERAS_BACKEND=jax)")
        return None
    devices = keras.distribution.list_devices()
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"--model_parallel {model_parallel} does not divide the "
                         f"{len(devices)} devices")
    if len(devices) == 1:
        return None
    if model_parallel == 1:
        distribution = keras.distribution.DataParallel(devices=devices)
    else:
        mesh = keras.distribution.DeviceMesh((len(devices) // model_parallel, model_parallel),
                                             ("batch", "model"), devices)
        layout_map = keras.distribution.LayoutMap(mesh)
        for pattern, axes in MEGATRON_LAYOUT.items():
            layout_map[pattern] = axes
        distribution = keras.distribution.ModelParallel(layout_map=layout_map,
                                                        batch_dim_name="batch")
    keras.distribution.set_distribution(distribution)
    return distribution


def data_parallel_size(distribution) -> int:
    """How many ways each global batch is split (1 without a distribution)."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def process_index_and_count():
    """(this process's index, number of processes) of a multi-host job; (0, 1) otherwise."""
    import keras

    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def describe(distribution: Optional[object]) -> str:
    if distribution is None:
        return "one device"
    mesh = distribution.device_mesh
    axes = ", ".join(f"{name} {size}" for name, size in zip(mesh.axis_names, mesh.shape))
    return f"{type(distribution).__name__} over {mesh.devices.size} devices ({axes})"
