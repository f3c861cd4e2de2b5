#!/usr/bin/env python3
"""What the 19-task linear-probe grid of the VPT protocol costs on this machine: the feature
pass against the head training, in one command:

    python benchmarks/linear_grid_cost.py --model vit_ti16 [--batches 4]

The feature pass embeds every image once per checkpoint: each task's train800, val200 and
test split (train800val200 is the first two joined), 406,904 images at 224 px. It is timed
on `--batches` batches of random images (`bench.model_throughput`, inference as the probes
run it, float32) and projected to that count. The head training is timed whole: for each of
the 19 tasks, VPT's grid of 10 rates x 4 weight decays trained together for 100 epochs on
800 feature vectors (batch 1024) and scored on 200, then the best retrained with 5 seeds on
1,000: random features of the model's width and the task's classes, as the cost does not
depend on their values. Prints one JSON line per part and the projected total, with a
progress bar over the tasks.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

VPT_LRS = (50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05)
VPT_WEIGHT_DECAYS = (0.01, 0.001, 0.0001, 0.0)
SEEDS = (42, 44, 82, 100, 800)
TRAIN, VALIDATION = 800, 200


def head_seconds(width: int, classes: list[int]) -> float:
    """Seconds to train and select VPT's linear grid, and retrain 5 seeds, for each task."""
    import keras

    from vitbench.evaluate import linear_probe

    schedule = linear_probe.Schedule(epochs=100, warmup_epochs=10, batch_size=1024)
    grid = [(lr * 1024 / 256, wd) for lr in VPT_LRS for wd in VPT_WEIGHT_DECAYS]
    rng = np.random.default_rng(0)
    bar = keras.utils.Progbar(len(classes), unit_name="task")
    start = time.perf_counter()
    for count in classes:
        x = rng.normal(size=(TRAIN + VALIDATION, width)).astype(np.float32)
        y = rng.integers(0, count, TRAIN + VALIDATION)
        heads = linear_probe.train_heads(x[:TRAIN], y[:TRAIN], count, [g[0] for g in grid],
                                         [g[1] for g in grid], schedule, seed=SEEDS[0])
        best = int(np.argmax(np.mean(linear_probe.predict(*heads, x[TRAIN:]) == y[TRAIN:],
                                     axis=1)))
        for seed in SEEDS:
            linear_probe.train_heads(x, y, count, [grid[best][0]], [grid[best][1]], schedule,
                                     seed=seed)
        bar.add(1)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_ti16")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    from vitbench import bench, tasks
    from vitbench.models import zoo

    suite = tasks.load_suite("vtab1k_vpt")
    test_images = {"caltech101": 6084, "cifar100": 10000, "dtd": 1880,
                   "oxford_flowers102": 6149, "oxford_iiit_pet": 3669, "sun397": 21750,
                   "svhn": 26032, "patch_camelyon": 32768, "eurosat": 5400, "resisc45": 6300,
                   "diabetic_retinopathy": 42670, "clevr_count_all": 15000,
                   "clevr_closest_object_distance": 15000, "dsprites_label_x_position": 73728,
                   "dsprites_label_orientation": 73728, "smallnorb_label_azimuth": 12150,
                   "smallnorb_label_elevation": 12150, "kitti_closest_vehicle_distance": 711,
                   "dmlab": 22735}
    images = sum(test_images[t.name] + TRAIN + VALIDATION for t in suite.tasks)
    speed = bench.model_throughput(args.model, "infer", args.batch_size, 224,
                                   steps=args.batches, warmup=1)["images_per_second"]
    features = {"part": "feature pass", "model": args.model, "images": images,
                "images_per_second": round(speed, 2), "seconds": round(images / speed, 1),
                "measured_on": f"{args.batches} batches of {args.batch_size}, projected"}
    print(json.dumps(features))
    width = zoo.get_config(args.model).hidden_size
    heads = head_seconds(width, [t.num_classes for t in suite.tasks])
    print(json.dumps({"part": "head training", "model": args.model, "width": width,
                      "heads_per_task": len(VPT_LRS) * len(VPT_WEIGHT_DECAYS) + len(SEEDS),
                      "seconds": round(heads, 1), "measured_on": "all 19 tasks"}))
    print(json.dumps({"part": "total", "seconds": round(features["seconds"] + heads, 1),
                      "feature_pass_share": round(features["seconds"]
                                                  / (features["seconds"] + heads), 3)}))


if __name__ == "__main__":
    main()
