#!/usr/bin/env python3
"""vitbench's ViT against timm's, on the same model, batch, resolution and precision, in one
command, so the ratio holds on a shared, noisy machine:

    python benchmarks/peers.py --model vit_b16 --mode train --batch_size 256 --precision bf16
    python benchmarks/peers.py --model vit_b16 --mode infer --batch_size 32   # CPU, fp32

Prints one JSON line per measurement (`vitbench.bench.measurement`, for both)
and then each peer's ratio: vitbench's images/s over the peer's. The peers are timm eager and,
with --compile (default on a GPU), timm under torch.compile. timm builds the zoo model's exact
architecture (width, depth, heads, MLP, patch, class token), so any zoo model, vit_mu8
included, has a peer. Needs torch and timm (`pip install -e ".[test]"`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timm_model(model_name: str, resolution: int, num_classes: int, dropout=None):
    """timm's VisionTransformer with the zoo model's architecture and regularisation: dropout
    in the same four places (after the position embedding, the attention output, the GELU and
    the MLP output), attention dropout, and drop-path rising linearly to the same rate.
    `dropout` replaces the zoo's dropout rate, as in `bench.model_throughput`."""
    from timm.models.vision_transformer import VisionTransformer

    from vitbench.models import zoo

    config = zoo.get_config(model_name, **({} if dropout is None else {"dropout": dropout}))
    return VisionTransformer(img_size=resolution, patch_size=config.patch_size,
                             num_classes=num_classes, embed_dim=config.hidden_size,
                             depth=config.num_layers, num_heads=config.num_heads,
                             mlp_ratio=config.mlp_dim / config.hidden_size, qkv_bias=True,
                             class_token=True, global_pool="token",
                             # The zoo's regularisation (official: dropout 0.1 for L/16, H/14).
                             pos_drop_rate=config.dropout, proj_drop_rate=config.dropout,
                             attn_drop_rate=config.attention_dropout,
                             drop_path_rate=config.stochastic_depth)


def timm_throughput(model_name, mode, batch_size, resolution, precision, steps, warmup,
                    compiled, input="host", num_classes=1000, dropout=None) -> dict:
    """timm's images/s measured as `vitbench.bench.model_throughput` measures ours: with
    `input="host"` every step first copies the batch from (pinned) host memory to the device,
    asynchronously, as a PyTorch loader with `pin_memory` does. Images are bfloat16 under bf16,
    as vitbench's are."""
    import timm
    import torch

    from vitbench import bench

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # float32 matmuls on TF32 tensor cores where the GPU has them, as JAX and TensorFlow do by
    # default (torch's default is full float32): fp32 compares like with like.
    torch.set_float32_matmul_precision("high")
    torch.manual_seed(0)
    model = timm_model(model_name, resolution, num_classes, dropout).to(device)
    # In the compute dtype, as vitbench's pipelines hand images over: the same bytes to copy.
    host_images = (torch.rand(batch_size, 3, resolution, resolution) * 2 - 1).to(
        torch.bfloat16 if precision == "bf16" else torch.float32)
    host_labels = torch.randint(0, num_classes, (batch_size,))
    if device == "cuda":
        host_images, host_labels = host_images.pin_memory(), host_labels.pin_memory()

    if input == "device":
        on_device = host_images.to(device), host_labels.to(device)

        def batch():
            return on_device
    else:
        def batch():  # copied every step, as a loader with pin_memory hands batches over
            return (host_images.to(device, non_blocking=True),
                    host_labels.to(device, non_blocking=True))

    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    runner = torch.compile(model) if compiled else model
    if mode == "train":
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

        def step():
            images, labels = batch()
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = torch.nn.functional.cross_entropy(runner(images), labels)
            loss.backward()
            optimizer.step()
            return loss.item()  # to the host, as train_on_batch returns the loss
    else:
        model.eval()

        def step():
            images, _ = batch()
            with torch.inference_mode(), autocast:
                return runner(images).float().cpu()
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return bench.measurement(
        "timm" + (" + torch.compile" if compiled else " eager"), model_name, mode, batch_size,
        resolution, precision, steps, warmup, seconds,
        torch.cuda.get_device_name() if device == "cuda" else "cpu",
        torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        f"torch {torch.__version__}, timm {timm.__version__}", num_classes=num_classes) | {
            "input": input, "dropout": model.pos_drop.p}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_b16")
    parser.add_argument("--mode", choices=["train", "infer"], default="infer")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--input", choices=["host", "device"], default="host",
                        help="batches handed over from host memory (as training loops do) or "
                             "already on the device")
    parser.add_argument("--remat", action="store_true",
                        help="rematerialise vitbench's encoder blocks (timm's as it is)")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout rate on both sides in place of the zoo model's "
                             "(official: 0.1 for vit_l16 and vit_h14, 0 for the others)")
    parser.add_argument("--micro_batch_size", type=int, default=None,
                        help="vitbench's images per pass (default: as its loops split a batch; "
                             "timm computes the batch in one pass)")
    parser.add_argument("--batches", type=int, default=10,
                        help="timed batches (training steps), as `vitbench bench --batches`")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time timm under torch.compile (default: on a GPU)")
    args = parser.parse_args(argv)
    # JAX would otherwise take 75% of the GPU's memory before timm runs in this process.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    # torch and timm (whose triton crashes a process that loaded TensorFlow first) before
    # vitbench, which imports TensorFlow; see tests/conftest.py.
    import timm  # noqa: F401
    import torch

    from vitbench import bench

    common = (args.model, args.mode, args.batch_size, args.resolution, args.precision,
              args.batches, args.warmup)
    # timm first: torch hands its cached memory back (`empty_cache`), whereas JAX keeps the
    # memory it took until the process ends, which left timm short on an 80 GB card.
    compile_too = torch.cuda.is_available() if args.compile is None else args.compile
    peers = [timm_throughput(*common, compiled=False, input=args.input, dropout=args.dropout)]
    if compile_too:
        peers.append(timm_throughput(*common, compiled=True, input=args.input,
                                     dropout=args.dropout))
    for peer in peers:
        print(json.dumps(peer), flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    ours = bench.model_throughput(*common, remat=args.remat, input=args.input,
                                  dropout=args.dropout, micro_batch_size=args.micro_batch_size,
                                  devices=1)  # as timm runs
    print(json.dumps(ours), flush=True)
    for peer in peers:
        ratio = ours["images_per_second"] / peer["images_per_second"]
        print(f"vitbench / {peer['implementation']}: {ratio:.2f}x "
              f"({ours['images_per_second']:.1f} vs {peer['images_per_second']:.1f} images/s, "
              f"{args.model} {args.mode}, batch {args.batch_size} "
              f"(vitbench in passes of {ours['micro_batch_size']}), {args.resolution} px, "
              f"{args.precision}, {ours['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
