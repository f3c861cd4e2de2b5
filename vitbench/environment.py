"""What a run ran on: the compute precision the machine gets, and the library versions."""

from __future__ import annotations

import platform

import keras


def precision_policy() -> str:
    """bf16 compute (float32 weights) on GPU and TPU, full float32 on CPU."""
    if keras.backend.backend() == "jax":
        import jax

        accelerated = jax.devices()[0].platform in ("gpu", "tpu")
    else:
        import tensorflow as tf

        accelerated = bool(tf.config.list_logical_devices("GPU") or
                           tf.config.list_logical_devices("TPU"))
    return "mixed_bfloat16" if accelerated else "float32"


def environment() -> dict:
    """Library versions and the devices, for a run's record."""
    import jax
    import tensorflow as tf

    return {"keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tf.__version__, "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()] if keras.backend.backend() == "jax"
            else [d.name for d in tf.config.list_logical_devices()],
            "python": platform.python_version()}
