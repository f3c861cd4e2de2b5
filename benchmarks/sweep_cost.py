#!/usr/bin/env python3
"""What `--sweep` costs against the single-rate protocol, end to end: `vitbench run` timed on a
VTAB-1k-shaped folder task (1000 training photographs: tune on the first 800, select on the
last 200, the final run on all 1000; 200 test photographs), with VTAB-1k's protocol scaled
down (the same augmentation, warm-up share and `tune_fraction`).

    python benchmarks/sweep_cost.py [--ckpt scratch:vit_ti16] [--resolution 96] [--steps 250]

Each command runs in its own process, into its own results folder, one after another:
the single-rate protocol; `--sweep` (tune runs of a fifth of the steps, stacked as the
device's default says); `--sweep` with `--stack 4` and with `--stack 1`; `--sweep
--tune_fraction 1` (full-length tune runs, as before issue 32). It prints one JSON
line per command with its seconds and its ratio to the single-rate one; each command's log
goes to OUT/logs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

from photos import write_photos

IMAGES = {"train": 1000, "test": 200}
COMMANDS = {"single rate": [], "sweep": ["--sweep"], "sweep, stack 4": ["--sweep", "--stack=4"],
            "sweep, stack 1": ["--sweep", "--stack=1"],
            "sweep, tune_fraction 1": ["--sweep", "--tune_fraction=1"]}


def suite_toml(folder: pathlib.Path, resolution: int, steps: int, batch: int) -> str:
    return f'''name = "vtab_shaped"
description = "VTAB-1k's protocol, scaled down, on a folder of photographs"
[protocol]
resolution = {resolution}
steps = {steps}
batch_size = {batch}
lrs = [0.01]
warmup_steps = {round(steps * 200 / 2500)}
tune_fraction = 0.2
train_pp = "inception_crop({{resolution}})|flip_lr|value_range(-1, 1)"
eval_pp = "resize({{resolution}})|value_range(-1, 1)"
fit_split = "train800val200"
tune_train_split = "train800"
tune_val_split = "val200"
test_split = "test"
[[task]]
name = "photos"
group = "custom"
source = "folder"
dataset = "{folder}"
num_classes = 2
[task.splits]
train800 = "train[:800]"
val200 = "train[800:]"
train800val200 = "train"
test = "test"
'''


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/vitbench_sweep_cost")
    parser.add_argument("--ckpt", default="scratch:vit_ti16")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if not (out / "photos").is_dir():
        write_photos(out / "photos", counts=IMAGES)
    suite = out / "vtab_shaped.toml"
    suite.write_text(suite_toml(out / "photos", args.resolution, args.steps, args.batch_size))
    first = None
    for name, flags in COMMANDS.items():
        results = out / "results" / name.replace(" ", "_").replace(",", "")
        command = [sys.executable, "-c", "import sys; from vitbench import cli; "
                   "sys.exit(cli.main(sys.argv[1:]))", "run", f"--suite={suite}",
                   f"--ckpt={args.ckpt}", "--nofewshot", f"--results_dir={results}",
                   "--force", *flags]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        (out / "logs").mkdir(exist_ok=True)
        (out / "logs" / f"{results.name}.txt").write_text(done.stdout + done.stderr)
        if done.returncode:
            sys.stderr.write(done.stderr[-4000:])
            return done.returncode
        seconds = time.perf_counter() - start
        first = first or seconds
        print(json.dumps({"command": name, "flags": " ".join(flags), "seconds": round(seconds, 1),
                          "ratio_to_single_rate": round(seconds / first, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
