"""Runs every `backends`-marked test again under the other Keras backend, in a subprocess.

The Keras backend is fixed when Keras is first imported, so one process tests one backend.
"""

import os
import pathlib
import subprocess
import sys

import keras
import pytest

OTHER = {"jax": "tensorflow", "tensorflow": "jax"}


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VITBENCH_BACKEND_RUN") == "1", reason="already the re-run")
def test_backend_marked_tests_pass_under_the_other_backend():
    other = OTHER[keras.backend.backend()]
    tests = pathlib.Path(__file__).parent
    env = {**os.environ, "KERAS_BACKEND": other, "VITBENCH_BACKEND_RUN": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "backends", "-p", "no:cacheprovider",
         str(tests)], env=env, capture_output=True, text=True, cwd=tests.parent)
    assert result.returncode == 0, f"under KERAS_BACKEND={other}:\n{result.stdout[-6000:]}"
    assert " passed" in result.stdout and " failed" not in result.stdout
