#!/usr/bin/env python3
"""Where a training step's GPU time goes: vitbench's (Keras `fit` on JAX, as the loops run)
and timm + torch.compile's, profiled on the same model, batch and resolution in one command,
each summarised as its total kernel time per step and its largest kernels by category.

    python benchmarks/profile_kernels.py --model vit_l16 --batch_size 128 [--out DIR]

Needs a GPU, jax, keras, torch and timm.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATEGORIES = [("gemm", r"gemm|matmul|cutlass|sm90|xmma|cublas|triton_gemm|_mm_|addmm|nvjet"),
              ("attention", r"flash|fmha|cudnn|attention|sdpa"),
              ("reduction/norm", r"reduce|norm|softmax|layer_norm"),
              ("copy/transpose", r"copy|transpose|memcpy|memset")]


def category(name: str) -> str:
    for label, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "elementwise/fusion"


def summary(label, kernels, steps, wall):
    """Prints total kernel time per step, by category and the top kernels."""
    total = sum(kernels.values())
    print(f"--- {label}: {total / steps * 1e3:.1f} ms of kernels per step, "
          f"{wall / steps * 1e3:.1f} ms wall per step")
    by_category = collections.Counter()
    for name, seconds in kernels.items():
        by_category[category(name)] += seconds
    for name, seconds in by_category.most_common():
        print(f"  {name:20s} {seconds / steps * 1e3:8.2f} ms/step {seconds / total:6.1%}")
    for name, seconds in kernels.most_common(20):
        print(f"    {seconds / steps * 1e3:8.2f} ms/step  {name[:110]}")
    return {"label": label, "kernel_ms_per_step": total / steps * 1e3,
            "wall_ms_per_step": wall / steps * 1e3,
            "categories": {k: v / steps * 1e3 for k, v in by_category.items()},
            "top": [(k[:200], v / steps * 1e3) for k, v in kernels.most_common(60)]}


def jax_kernels(trace_dir):
    """Kernel name -> seconds from the newest JAX perfetto trace under `trace_dir`: events on
    the GPU's streams."""
    path = max(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True),
               key=os.path.getmtime)
    with gzip.open(path) as file:
        events = json.load(file)["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    gpu = {pid for pid, name in processes.items() if "GPU" in name or "gpu" in name}
    per_thread = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in gpu:
            per_thread[threads.get((e["pid"], e["tid"]), "?")] += e.get("dur", 0) / 1e6
    print("GPU lines in trace (s):", dict(per_thread))
    # The device's kernels are on its stream lines; "XLA Ops"/"XLA Modules" lines repeat them.
    streams = {t for t in per_thread if "Stream" in t} or set(per_thread)
    kernels = collections.Counter()
    for e in events:
        if (e.get("ph") == "X" and e.get("pid") in gpu
                and threads.get((e["pid"], e["tid"]), "?") in streams):
            kernels[e["name"]] += e.get("dur", 0) / 1e6
    return kernels


def vitbench_profile(model_name, batch_size, resolution, steps, out):
    import itertools

    import jax
    import keras
    import numpy as np

    from vitbench.models.vit import create_model
    from vitbench.train import optimizers

    keras.config.set_dtype_policy("mixed_bfloat16")
    model = create_model(model_name, num_classes=1000, image_size=resolution)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, resolution, resolution, 3)).astype(model.image_dtype)
    labels = rng.integers(0, 1000, batch_size)
    model.compile(optimizer=optimizers.SGD(0.001, momentum=0.9),  # fine-tuning's update
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=steps)
    feed = (batch for batch in itertools.repeat((images, labels)))
    # Two epochs to compile and warm up, then one profiled.
    model.fit(feed, epochs=2, steps_per_epoch=steps, verbose=0, shuffle=False)
    trace_dir = os.path.join(out, "jax_trace")
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    start = time.perf_counter()
    history = model.fit(feed, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    float(history.history["loss"][-1])
    wall = time.perf_counter() - start
    jax.profiler.stop_trace()
    return summary(f"vitbench {model_name} b{batch_size}", jax_kernels(trace_dir), steps, wall)


def timm_profile(model_name, batch_size, resolution, steps):
    import torch
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    from peers import timm_model

    model = torch.compile(timm_model(model_name, resolution, 1000).cuda().train())
    images = (torch.rand(batch_size, 3, resolution, resolution) * 2 - 1).bfloat16().cuda()
    labels = torch.randint(0, 1000, (batch_size,)).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        loss.item()
        wall = time.perf_counter() - start
    kernels = collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] += event.time_range.elapsed_us() / 1e6
    return summary(f"timm + torch.compile {model_name} b{batch_size}", kernels, steps, wall)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_l16")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/kernels"))
    parser.add_argument("--only", choices=["vitbench", "timm"])
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    sys.path.insert(0, REPO_ROOT)
    import timm  # noqa: F401  (before TensorFlow, which vitbench may import)

    results = []
    if args.only != "timm":
        results.append(vitbench_profile(args.model, args.batch_size, args.resolution,
                                        args.steps, args.out))
    if args.only != "vitbench":
        results.append(timm_profile(args.model, args.batch_size, args.resolution, args.steps))
    with open(os.path.join(args.out, f"kernels_{args.model}.json"), "w") as file:
        json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
