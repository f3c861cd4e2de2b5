#!/usr/bin/env python3
"""How long `vitbench compare` takes on two full VTAB-1k rows, and how much the per-item
outcomes of a VTAB-1k run weigh on disk:

    python benchmarks/compare_speed.py [--seeds 3] [--workdir /tmp/compare_speed]

Writes two rows' records and outcomes files (19 tasks at their real test sizes, 387,904
items, `--seeds` fine-tuning seeds each; predictions drawn at about 70% accuracy with
correlated errors), then times `leaderboards.compare.compare` (10,000 bootstrap replicates)
and `publish.write_all` (the board with its intervals and best cells). Prints one JSON line.
Run it on one core (`taskset -c 0`) to read the number the target (under 10 s) is about.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np

# Test sizes of the 19 VTAB-1k tasks (../shared/spec/statistics.md, section 3).
TEST_SIZES = {
    "caltech101": 6084, "cifar100": 10000, "dtd": 1880, "oxford_flowers102": 6149,
    "oxford_iiit_pet": 3669, "sun397": 21750, "svhn": 26032, "patch_camelyon": 32768,
    "eurosat": 5400, "resisc45": 6300, "diabetic_retinopathy": 42670, "clevr_count_all": 15000,
    "clevr_closest_object_distance": 15000, "dsprites_label_x_position": 73728,
    "dsprites_label_orientation": 73728, "smallnorb_label_azimuth": 12150,
    "smallnorb_label_elevation": 12150, "kitti_closest_vehicle_distance": 711, "dmlab": 22735}


def write_rows(results_dir: pathlib.Path, seeds: int) -> int:
    """Records and outcomes of rows `a` and `b`; returns the bytes of one run's outcomes
    over the 19 tasks."""
    from vitbench import records, tasks
    from vitbench.evaluate import outcomes

    suite = tasks.load_suite("vtab1k")
    rng = np.random.default_rng(0)
    lines, one_run_bytes = [], 0
    for task in suite.tasks:
        examples = TEST_SIZES[task.name]
        labels = rng.integers(0, task.num_classes, examples)
        difficulty = rng.uniform(0.4, 1.0, examples)
        for ckpt in ("a", "b"):
            for seed in range(seeds):
                right = rng.uniform(size=examples) < difficulty
                predicted = np.where(right, labels, (labels + 1) % task.num_classes)
                config = {"suite": "vtab1k", "task": task.name, "ckpt": ckpt, "phase": "final",
                          "seed": seed, "lr": 0.01, "update_rule": "optax",
                          "train_split": "train800val200", "eval_split": "test",
                          **task.protocol.settings()}
                line = {"config_hash": records.config_hash(config), "config": config,
                        "status": "finished", "precision": "float32",
                        "metrics": {"accuracy": float(right.mean()), "examples": examples}}
                line["outcomes"] = outcomes.write(results_dir, "vtab1k", line["config_hash"],
                                                  {"test": predicted}, labels)
                if ckpt == "a" and seed == 0:
                    one_run_bytes += (results_dir / line["outcomes"]["file"]).stat().st_size
                lines.append(line)
    path = records.records_path(results_dir, "vtab1k")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return one_run_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    from vitbench.leaderboards import compare, publish

    results_dir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="compare_speed_"))
    one_run_bytes = write_rows(results_dir, args.seeds)
    start = time.perf_counter()
    results = compare.compare(results_dir, "vtab1k", "a", "b")
    compare.write(results_dir, "vtab1k", results)
    compared = time.perf_counter() - start
    start = time.perf_counter()
    publish.write_all(results_dir)
    published = time.perf_counter() - start
    print(json.dumps({"benchmark": "compare", "tasks": 19, "items": sum(TEST_SIZES.values()),
                      "seeds": args.seeds, "compare_s": round(compared, 2),
                      "leaderboard_s": round(published, 2),
                      "outcomes_bytes_per_vtab_run": one_run_bytes}))


if __name__ == "__main__":
    main()
