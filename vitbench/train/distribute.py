"""Training on every device through `keras.distribution` (JAX backend).

Several local devices: data parallel. `model_parallel=M`: a (devices / M, M) mesh, each encoder
block's weights split over "model" as in Megatron (`MEGATRON_LAYOUT`), within one host. Several
hosts: `initialize_hosts` first, then data parallel over every host's devices.
Design notes: docs/design/training.md.
"""

from __future__ import annotations

import contextlib

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
    """Joins the multi-host job (before anything touches a device).

    The coordinator address, process count and id come from the environment
    (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`, `..._PROCESS_ID`) or the TPU
    runtime (`keras.distribution.initialize`).
    """
    import jax
    import keras

    # CPU processes (tests, CPU clusters) need a collectives library; GPUs and TPUs have theirs.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize()


def configure(model_parallel: int = 1, device_count: int | None = None):
    """Sets (and returns) the global distribution for all devices, or the first
    `device_count`; None on one device.

    Args:
        model_parallel: devices each encoder block's weights are split over; 1 for data
            parallelism only.
        device_count: use only the first this many devices; None for all.

    Returns:
        The `keras.distribution.DataParallel` or `ModelParallel` now set globally, or None
        (one device, or a backend other than JAX).

    Raises:
        ValueError: several devices or model parallelism without the JAX backend; more
            devices asked for than there are; `model_parallel` with several processes, or
            not dividing the device count.
    """
    import keras

    if keras.backend.backend() != "jax":
        if model_parallel > 1:
            raise ValueError("model parallelism needs the JAX backend (KERAS_BACKEND=jax)")
        if device_count not in (None, 1):
            raise ValueError("several devices need the JAX backend (KERAS_BACKEND=jax)")
        return None
    devices = keras.distribution.list_devices()
    if device_count is not None:
        if not 1 <= device_count <= len(devices):
            raise ValueError(f"{device_count} devices asked for; there are {len(devices)}: "
                             f"{', '.join(devices)}")
        devices = devices[:device_count]
    if model_parallel > 1 and process_index_and_count()[1] > 1:
        raise ValueError("--model_parallel with several processes is not supported: checkpoints "
                         "and evaluations read the weights on the first host, which then holds "
                         "only its shards. Use data parallelism across hosts")
    if model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"--model_parallel {model_parallel} does not divide the "
                         f"{len(devices)} devices")
    if len(devices) == 1:
        return None
    if model_parallel == 1:
        # vitbench's input pipeline reads each process's shard itself.
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
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


@contextlib.contextmanager
def local_devices(count: int | None = None):
    """Data parallelism over every local device, or the first `count` (`configure`), for the
    length of a `with` block, which yields the distribution (None on one device); the global
    distribution that was set before is set again after it.

    Args:
        count: how many devices; None for all.

    Yields:
        The distribution set for the block, or None on one device.

    Raises:
        ValueError: `count` is out of range, or over 1 without the JAX backend.
    """
    import keras

    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield configure(device_count=count)
    finally:
        keras.distribution.set_distribution(previous)


def replicas() -> int:
    """How many ways the global distribution splits each batch (1 on one device).

    Returns:
        The size of the global distribution's batch axis; 1 where none is set.
    """
    import keras

    return data_parallel_size(keras.distribution.distribution())


def data_parallel_size(distribution) -> int:
    """How many ways each global batch is split (1 without a distribution).

    Args:
        distribution: a `keras.distribution` distribution, or None.

    Returns:
        The size of its mesh's batch axis; 1 for None.
    """
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def process_index_and_count():
    """(this process's index, number of processes) of a multi-host job; (0, 1) otherwise.

    Returns:
        (index, count) from JAX; (0, 1) on other backends.
    """
    import keras

    if keras.backend.backend() != "jax":
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def local_copy(weights, build):
    """`build()` outside any distribution (on this process's default device), holding
    `weights` (from `model.get_weights()`, which every process must call: reading weights
    spread over several processes is a collective operation)."""
    import keras

    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        copy = build()
        copy.set_weights(weights)
    finally:
        keras.distribution.set_distribution(current)
    return copy


def describe(distribution: object | None) -> str:
    """The distribution in words, for logs and run records.

    Args:
        distribution: a `keras.distribution` distribution, or None.

    Returns:
        "one device", or e.g. "DataParallel over 8 devices (mesh batch=8)".
    """
    if distribution is None:
        return "one device"
    mesh = distribution.device_mesh
    axes = " x ".join(f"{name}={size}" for name, size in zip(mesh.axis_names, mesh.shape))
    return f"{type(distribution).__name__} over {mesh.devices.size} devices (mesh {axes})"
