"""A plain `pip install .` (a wheel, not the editable checkout) carries everything the commands
read: the suites, the pretraining recipes, the checkpoint registry and the paper's numbers."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and trains from it

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project built into a wheel (as `pip install .` builds it) and unpacked: a folder
    that, first on PYTHONPATH, is the installed package."""
    folder, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    # The project's files alone: a checkout's build/ or egg-info would fill gaps in the wheel.
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(folder), str(source)], check=True,
                   cwd=folder)
    wheel, = folder.glob("vitbench-*.whl")
    site = folder / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_holds_the_suites_recipes_registry_and_reference(installed):
    shipped = {path.relative_to(installed / "vitbench").as_posix()
               for path in (installed / "vitbench").rglob("*") if path.is_file()}
    for suite in (REPO / "vitbench" / "suites").glob("*.toml"):
        assert f"suites/{suite.name}" in shipped
    assert {"suites/pretrain/imagenet21k.toml", "suites/pretrain/tfds.toml",
            "suites/reference/paper.csv", "checkpoints/known.toml"} <= shipped


def test_vitbench_run_works_from_the_installed_package(installed, tmp_path, demo_data_dir):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    command = [sys.executable, "-c", "from vitbench.cli import run; run()"]
    where = subprocess.run(command[:2] + ["import vitbench; print(vitbench.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(installed))  # not the checkout
    done = subprocess.run(
        command + ["run", "--steps=2", "--batch_size=8", "--resolution=16", "--nofewshot",
                   "--tasks=demo_color", f"--data_dir={demo_data_dir}",
                   f"--results_dir={tmp_path / 'results'}"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 runs finished" in done.stdout
    assert (tmp_path / "results" / "runs" / "demo.jsonl").is_file()
    assert (tmp_path / "results" / "demo.md").is_file()
