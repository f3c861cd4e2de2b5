#!/usr/bin/env python3
"""Training speed of each VPT-protocol method against full fine-tuning, on one model, in one
command:

    python benchmarks/peft_speed.py --model vit_ti16 [--batch_size 16] [--steps 4]

For each method (`finetune`, `bitfit`, `lora`, `vpt_deep`, `vpt_shallow`) the model is built
as the method trains it (`vitbench.transfer.methods`: its trainable variables, its adapters,
dropout as the method sets it, its optimizer), compiled with that optimizer, and timed on
`--steps` training steps of random 224 px images after one compiling step. Frozen weights
get no gradients and no optimizer state, so what a method saves shows here. Prints one JSON
line per method (images/s, the ratio to full fine-tuning measured in the same command,
trainable parameters) and shows a progress bar per method. Peak memory is not reported: one
process holds every method's model, and JAX keeps one peak for the process. The methods
alternate in two rounds, and each keeps its faster round, as the machines are shared.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

# method -> (ViTConfig fields it builds with, optimizer)
METHODS = {
    "finetune": ({"dropout": 0.1}, "adamw"),
    "bitfit": ({"trainable": "biases"}, "adamw"),
    "lora": ({"trainable": "lora", "lora_rank": 8, "lora_alpha": 8}, "adamw"),
    "vpt_deep": ({"trainable": "prompts", "prompt_tokens": 10, "prompt_dropout": 0.1}, "sgd"),
    "vpt_shallow": ({"trainable": "prompts", "prompt_tokens": 10, "prompt_depth": "shallow"},
                    "sgd"),
}


def step_timer(model_name: str, method: str, batch: int, resolution: int):
    """(one training step on a fixed random batch, trainable parameters) of the method."""
    import keras

    from vitbench.models.vit import create_model
    from vitbench.train import finetune_config
    from vitbench.transfer.methods import trainable_parameters

    options, optimizer = METHODS[method]
    keras.utils.set_random_seed(0)
    model = create_model(model_name, num_classes=100, image_size=resolution, **options)
    config = finetune_config.TrainConfig(lr=1e-3, steps=1000, batch_size=batch,
                                         micro_batch_size=batch, optimizer=optimizer,
                                         weight_decay=1e-4, grad_clip_norm=None,
                                         steps_per_epoch=10)
    finetune_config.compile_for_finetuning(model, config)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, resolution, resolution, 3)).astype(np.float32)
    labels = rng.integers(0, 100, batch)
    counts = trainable_parameters(model)
    return (lambda: model.train_on_batch(images, labels)), counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_ti16")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    from tqdm import tqdm

    methods = args.methods.split(",")
    timers = {}
    for method in methods:
        step, counts = step_timer(args.model, method, args.batch_size, args.resolution)
        step()  # compile
        timers[method] = (step, counts)
    best = {}
    for round_ in range(args.rounds):
        for method in methods:
            step, _ = timers[method]
            start = time.perf_counter()
            for _ in tqdm(range(args.steps), desc=f"{method} (round {round_ + 1})",
                          unit="step", leave=False):
                step()
            rate = args.steps * args.batch_size / (time.perf_counter() - start)
            best[method] = max(best.get(method, 0.0), rate)
    full = best.get("finetune")
    for method in methods:
        counts = timers[method][1]
        print(json.dumps({
            "method": method, "model": args.model, "batch": args.batch_size,
            "resolution": args.resolution, "images_per_second": round(best[method], 2),
            "vs_finetune": round(best[method] / full, 2) if full else None,
            "trainable": counts["total"] - counts["head"], "head": counts["head"]}))


if __name__ == "__main__":
    main()
