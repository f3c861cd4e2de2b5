"""vitbench: reproduce and extend the Vision Transformer study from one command line.

JAX is the default Keras backend (set KERAS_BACKEND=tensorflow to use TensorFlow); the choice
is made here, before Keras is first imported.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"

_LAZY = {
    "load_model": "vitbench.checkpoints.loader",
    "save_npz": "vitbench.checkpoints.npz",
    "create_model": "vitbench.models.vit",
    "VisionTransformer": "vitbench.models.vit",
}


def __getattr__(name):
    # Keras is imported on first use, so `vitbench --help` and `vitbench models` stay instant.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitbench' has no attribute {name!r}")
