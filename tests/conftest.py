"""Shared fixtures: tiny ViT configs, random weights, an isolated cache, mocked TFDS data."""

import contextlib
import fcntl
import importlib.util
import os
from unittest import mock

os.environ.setdefault("KERAS_BACKEND", "jax")
# The tests check numbers, not speed, and compiling is most of their time: XLA's LLVM backend
# compiles unoptimised (about 12 instead of 15 minutes on 2 cores). Benchmarks run as users
# run them.
# Tests that start processes with XLA_FLAGS of their own add UNOPTIMISED_BACKEND to them.
UNOPTIMISED_BACKEND = "--xla_backend_optimization_level=0"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {UNOPTIMISED_BACKEND}".strip()

# The oracle peer (timm) pulls in torch, torchvision and triton; triton's shared library
# crashes the process when TensorFlow was loaded before it. Loaded first, all of them work.
if importlib.util.find_spec("timm") is not None:
    import timm  # noqa: F401

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vitbench.models.zoo import ViTConfig

TINY = ViTConfig(name="vit_tiny_test", hidden_size=32, mlp_dim=64, num_heads=2, num_layers=2,
                 patch_size=8)


def randomize(model, seed=0, scale=0.2):
    """Gives every weight (zero-initialised head included) random values, so outputs differ."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(scale=scale, size=variable.shape).astype("float32"))
    return model


def images(batch=2, height=32, width=32, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def logits_gradient(model, images):
    """(step, weights): `jax.grad` over the trainable `weights` of a weighted sum of the model's
    training-mode logits, with the updated non-trainable state as its auxiliary output."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    weights = np.arange(model.num_classes, dtype="float32")

    def loss(trainable):
        logits, updated = model.stateless_call(trainable, non_trainable, images, training=True)
        return (logits * weights).sum(), updated

    return jax.grad(loss, has_aux=True), trainable


@pytest.fixture
def tiny():
    return TINY


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty checkpoint cache, and downloads from the local test
    servers even where the machine running the tests is marked offline."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("VITBENCH_CACHE", str(cache))
    monkeypatch.delenv("VITBENCH_OFFLINE", raising=False)
    return cache


@contextlib.contextmanager
def mock_tfds(num_examples=8):
    """`tfds.testing.mock_data`, with every variable-length feature 10 long (so that parallel
    sequences such as KITTI's objects/type and objects/location agree, as in real data) and
    every dataset reported as prepared (so manual-download datasets mock too)."""
    from tensorflow_datasets.testing import mocking

    original_init = mocking.RandomFakeGenerator.__init__

    def init(self, *args, **kwargs):
        kwargs.setdefault("constant_dynamic_shape", True)
        original_init(self, *args, **kwargs)

    with mock.patch.object(mocking.RandomFakeGenerator, "__init__", init), \
            mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True), \
            tfds.testing.mock_data(num_examples=num_examples):
        yield


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory, worker_id):
    """One prepared copy of the generated demo dataset for the whole test session, shared by
    the xdist workers: the first to take the lock builds it, the others find it prepared."""
    from vitbench.data import builders  # noqa: F401  (registers vitbench_demo)

    session_root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # each worker's base folder sits in the session's
        session_root = session_root.parent
    data_dir = session_root / "demo_tfds"
    data_dir.mkdir(exist_ok=True)
    with open(data_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tfds.builder("vitbench_demo", data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)
