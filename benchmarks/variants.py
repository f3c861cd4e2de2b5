#!/usr/bin/env python3
"""Candidate implementations of the two steps that keep vitbench behind timm + torch.compile on
a GPU, timed side by side in one command, so that one short run on a GPU picks the faster:

    python benchmarks/variants.py dropout --model vit_l16 --batch_size 128 --precision bf16
    python benchmarks/variants.py transfer --model vit_b16 --batch_size 1024 --precision bf16

On an H100 (2026-11-27) ViT-L/16 trained at 914 images/s with dropout 0.1 and 1060 without
(timm + compile: 995 and 1061), and ViT-B/16 predicted 8782 images/s from host memory against
timm + compile's 10227 (on an H200, with the batch already on the GPU, 10436 against 10186).

`dropout` times `vitbench bench`'s training step with each way of drawing the masks
(`vitbench.models.dropout`'s `_FAST_DROPOUT` replaced for the measurement); `transfer` times its
inference from host memory with each way of copying a batch to the device
(`vitbench.evaluate.prediction._to_device` replaced) or of ordering the copies and forward passes
(`prediction.predict_batches` replaced), and the copy alone in GB/s. Every variant
computes the same function as vitbench's own, up to which elements a mask drops. Prints one JSON
line per variant (`vitbench.bench.measurement` plus `variant`) and then each variant's ratio to
vitbench's current implementation and to timm's (`--peer`, as `peers.py` times it), measured in the
same command (each variant in a process of its own, so that its peak memory is its own and a
variant that fails does not stop the others). A variant the platform lacks (pinned host memory,
say) or one that fails is reported in a line and skipped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from vitbench import bench  # noqa: E402
from vitbench.evaluate import prediction  # noqa: E402
from vitbench.models import dropout  # noqa: E402


def _seed(seed):
    return seed.next() if isinstance(seed, keras.random.SeedGenerator) else seed


def keras_dropout(inputs, rate, seed):
    """Keras' own: `jax.random.bernoulli`, one Threefry-2x32 evaluation per element."""
    return keras.random.dropout(inputs, rate, seed=seed)


def rbg_dropout(inputs, rate, seed):
    """16-bit draws from XLA's RngBitGenerator (`unsafe_rbg` keys; Philox on a GPU, ten
    rounds with multiplications) in place of Threefry-2x32's twenty rounds."""
    import jax
    import jax.numpy as jnp

    seed = _seed(seed).astype(jnp.uint32)
    key = jax.random.wrap_key_data(
        jnp.stack([seed[0], seed[1], seed[0] ^ jnp.uint32(0x9E3779B9), seed[1]]),
        impl="unsafe_rbg")
    draws = jax.random.bits(key, inputs.shape, jnp.uint16)
    keep = dropout.keep_threshold(rate)
    return dropout.apply_mask(inputs, draws.astype(jnp.int32) < keep, keep)


def recomputed_dropout(inputs, rate, seed):
    """vitbench's masks, recomputed from the seed in the backward pass instead of kept from
    the forward pass (a `jax.custom_vjp`): no mask in memory, twice the Threefry arithmetic.
    The barrier keeps XLA from finding the backward pass's Threefry identical to the forward
    pass's and merging the two back into one stored mask."""
    import jax
    from jax import lax

    seed = _seed(seed)

    @jax.custom_vjp
    def masked(x, seed):
        return dropout._threefry_16_bit_dropout(x, rate, seed)

    def forward(x, seed):
        return masked(x, seed), seed

    def backward(seed, gradient):
        seed, gradient = lax.optimization_barrier((seed, gradient))
        return dropout._threefry_16_bit_dropout(gradient, rate, seed), None

    masked.defvjp(forward, backward)
    return masked(inputs, seed)


def packed_dropout(inputs, rate, seed):
    """vitbench's masks drawn as `materialised` draws them (each Threefry evaluation once), and
    kept for the backward pass as bits, eight elements to a byte (`jnp.packbits`, in a
    `jax.custom_vjp`), where the autodiff of `jnp.where` keeps a byte per element and XLA may
    instead fuse the Threefry arithmetic into the backward pass again: for ViT-L/16 at batch 128
    (three masks a block, 3.7e9 elements a step) 0.43 GiB kept in place of 3.5 GiB. On an H100,
    vitbench's masks took 6.7 GiB and timm's 3.5 GiB."""
    import jax
    import jax.numpy as jnp

    keep = dropout.keep_threshold(rate)
    seed = _seed(seed)

    def apply(x, kept):
        return dropout.apply_mask(x, kept, keep)

    def kept_elements(shape, seed):
        with materialised_words():
            return dropout.kept_elements(shape, keep, seed)

    @jax.custom_vjp
    def masked(x, seed):
        return apply(x, kept_elements(x.shape, seed))

    def forward(x, seed):
        kept = kept_elements(x.shape, seed)
        return apply(x, kept), jnp.packbits(kept, axis=-1, bitorder="little")

    def backward(bits, gradient):
        width = gradient.shape[-1]
        kept = jnp.unpackbits(bits, axis=-1, count=width, bitorder="little").astype(bool)
        return apply(gradient, kept), None

    masked.defvjp(forward, backward)
    return masked(inputs, seed)


def materialised_words():
    """Inside: vitbench's Threefry words are written to memory before they are split into
    draws (`lax.optimization_barrier`)."""
    from jax import lax

    words = dropout._threefry_words
    return mock.patch.object(dropout, "_threefry_words",
                             lambda *args: lax.optimization_barrier(words(*args)))


def materialised_dropout(inputs, rate, seed):
    """vitbench's masks with the Threefry words written to memory before they are split into
    draws (`materialised_words`): XLA cannot then fuse the Threefry arithmetic into each of the
    four elements an evaluation serves, or into each consumer of the mask, so every evaluation
    runs once, for two bytes per element written and read."""
    with materialised_words():
        return dropout._threefry_16_bit_dropout(inputs, rate, seed)


def no_dropout(inputs, rate, seed):
    """No masks at all: the floor the other variants are read against."""
    return inputs


DROPOUT_VARIANTS = {  # the likeliest gains first, in case a time limit cuts the run short
    "vitbench": dropout._threefry_16_bit_dropout,
    "packed": packed_dropout,
    "recomputed": recomputed_dropout,
    "materialised": materialised_dropout,
    "kernel": dropout._threefry_16_bit_dropout,  # with the settings below
    "rbg": rbg_dropout,
    "keras": keras_dropout,
    "none": no_dropout,
}


# JAX settings a dropout variant is compiled under: "kernel" draws vitbench's masks with JAX's
# Threefry CUDA kernel, which writes the words to memory, in place of unrolled arithmetic that
# XLA fuses (on a CPU nothing changes). With Keras' masks, one evaluation per element, it was
# slower on an H200 (774 against 936 images/s); vitbench's need a quarter of the evaluations.
DROPOUT_SETTINGS = {"kernel": {"jax_threefry_gpu_kernel_lowering": True}}


@contextlib.contextmanager
def jax_settings(settings: dict):
    """`jax.config` updated with `settings` inside the block, restored after it."""
    import jax

    previous = {name: getattr(jax.config, name) for name in settings}
    try:
        for name, value in settings.items():
            jax.config.update(name, value)
        yield
    finally:
        for name, value in previous.items():
            jax.config.update(name, value)


def _on_device(copy: Callable) -> Callable:
    """`copy` as `prediction._to_device` is used: host arrays stay on the host under a
    `keras.distribution`, for Keras to shard."""
    def to_device(images):
        if keras.distribution.distribution() is not None:
            return images
        return copy(images)
    return to_device


def chunked_copy(parts: int) -> Callable:
    """The batch copied in `parts` slices from as many threads at once, joined on the device:
    JAX stages a copy from pageable memory through pinned buffers on the calling thread."""
    def copy(images):
        import jax
        import jax.numpy as jnp

        with concurrent.futures.ThreadPoolExecutor(parts) as pool:
            slices = list(pool.map(jax.device_put, np.array_split(images, parts)))
        return jnp.concatenate(slices)
    return _on_device(copy)


def _pinned_host_available() -> bool:
    import jax

    device = jax.local_devices()[0]
    return "pinned_host" in {memory.kind for memory in device.addressable_memories()}


@_on_device
def pinned_copy(images):
    """The batch copied into pinned host memory first, then to the device in one DMA."""
    import jax
    from jax.sharding import SingleDeviceSharding

    device = jax.local_devices()[0]
    pinned = jax.device_put(images, SingleDeviceSharding(device, memory_kind="pinned_host"))
    return jax.device_put(pinned, SingleDeviceSharding(device, memory_kind="device"))


def dispatch_first_batches(predict: Callable, batches, batch_size: int, key: str = "image"):
    """`prediction.predict_batches` with each batch's forward pass dispatched before the next
    batch's copy starts, and its outputs fetched while that copy runs: in vitbench's loop the
    copy of batch i + 1 is under way while batch i is dispatched, and if the copy holds up
    the dispatching thread (JAX stages a copy from pageable memory on the thread that asks for
    it), the GPU waits. `predict` is a model's `predict_on_batch`; its model runs as one jitted
    `stateless_call`, which returns before the device is done, as Keras' predict function does
    inside `predict_on_batch`."""
    import jax

    model = predict.__self__
    weights = ([v.value for v in model.trainable_variables],
               [v.value for v in model.non_trainable_variables])
    forward = jax.jit(lambda weights, images: model.stateless_call(*weights, images)[0])

    def copied(batch):
        images, count = prediction.padded(batch[key], batch_size)
        return prediction._to_device(images), count, batch

    iterator = iter(batches)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="copy") as copier:
        following = next(iterator, None)
        pending = None if following is None else copier.submit(copied, following)
        while pending is not None:
            images, count, batch = pending.result()
            outputs = forward(weights, images)  # dispatched; the device computes meanwhile
            following = next(iterator, None)
            pending = None if following is None else copier.submit(copied, following)
            yield jax.tree.map(lambda value, n=count: np.asarray(value)[:n], outputs), batch


@dataclass(frozen=True)
class TransferVariant:
    copy: Callable = prediction._to_device  # in place of `prediction._to_device`
    available: Callable[[], bool] = lambda: True
    loop: Callable = prediction.predict_batches  # in place of `prediction.predict_batches`


TRANSFER_VARIANTS = {  # the likeliest gains first, in case a time limit cuts the run short
    "vitbench": TransferVariant(),
    "pinned": TransferVariant(pinned_copy, _pinned_host_available),
    "dispatch_first": TransferVariant(loop=dispatch_first_batches),
    "chunks4": TransferVariant(chunked_copy(4)),
    "chunks2": TransferVariant(chunked_copy(2)),
    "chunks8": TransferVariant(chunked_copy(8)),
}


def copy_gb_per_second(copy: Callable, images, repeats: int = 5) -> float:
    """GB/s of `copy(images)` to the device and back to waiting for it, best of `repeats`
    after one untimed copy."""
    import jax

    jax.block_until_ready(copy(images))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(copy(images))
        best = min(best, time.perf_counter() - start)
    return images.nbytes / best / 1e9


def time_dropout(name: str, args) -> dict:
    with mock.patch.dict(dropout._FAST_DROPOUT, {"jax": DROPOUT_VARIANTS[name]}), \
            jax_settings(DROPOUT_SETTINGS.get(name, {})):
        return bench.model_throughput(args.model, "train", args.batch_size, args.resolution,
                                      args.precision, args.batches, args.warmup,
                                      dropout=args.dropout,
                                      micro_batch_size=args.micro_batch_size, devices=1)


def time_transfer(name: str, args) -> dict | None:
    variant = TRANSFER_VARIANTS[name]
    if not variant.available():
        return None
    with mock.patch.object(prediction, "_to_device", variant.copy), \
            mock.patch.object(prediction, "predict_batches", variant.loop):
        measured = bench.model_throughput(args.model, "infer", args.batch_size,
                                          args.resolution, args.precision, args.batches,
                                          args.warmup, micro_batch_size=args.micro_batch_size,
                                          devices=1)
    images = np.zeros((measured["micro_batch_size"], args.resolution, args.resolution, 3),
                      keras.mixed_precision.Policy(bench.PRECISIONS[args.precision])
                      .compute_dtype)
    return measured | {"copy_gb_per_second": copy_gb_per_second(variant.copy, images)}


@dataclass(frozen=True)
class Group:
    variants: dict
    time: Callable[[str, argparse.Namespace], dict | None]
    mode: str  # what `vitbench bench` times: train or infer
    defaults: dict


GROUPS = {
    "dropout": Group(DROPOUT_VARIANTS, time_dropout, "train",
                     {"model": "vit_l16", "batch_size": 128}),
    "transfer": Group(TRANSFER_VARIANTS, time_transfer, "infer",
                      {"model": "vit_b16", "batch_size": 1024}),
}
PEER = "timm"  # measured beside the variants unless --no-peer


def time_peer(args) -> dict | None:
    """timm on the same model, batch, resolution, precision and dropout as `peers.py` times
    it: under `torch.compile` on a GPU, eager elsewhere; None without torch and timm."""
    try:
        import timm  # noqa: F401
        import torch
    except ImportError:
        return None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers

    mode = GROUPS[args.group].mode
    return peers.timm_throughput(args.model, mode, args.batch_size, args.resolution,
                                 args.precision, args.batches, args.warmup,
                                 compiled=torch.cuda.is_available(),
                                 dropout=args.dropout if mode == "train" else None)


def _child_command(args, name: str) -> list:
    """This script measuring the variant `name` alone, with `args`' settings."""
    settings = ["model", "batch_size", "resolution", "precision", "dropout",
                "micro_batch_size", "batches", "warmup"]
    return [sys.executable, os.path.abspath(__file__), args.group, f"--variants={name}",
            "--child", *(f"--{key}={getattr(args, key)}" for key in settings
                         if getattr(args, key) is not None)]


def measure(args, name: str) -> dict | None:
    """The measurement of variant `name`, taken in a process of its own so that each variant
    starts with the device's memory empty and reports its own peak; None where it is not
    available, failed or took over `args.child_timeout` seconds (a line says which, and the
    end of its error output goes to stderr)."""
    try:
        child = subprocess.run(_child_command(args, name), capture_output=True, text=True,
                               timeout=args.child_timeout)
    except subprocess.TimeoutExpired as expired:
        errors = expired.stderr or ""
        errors = errors.decode(errors="replace") if isinstance(errors, bytes) else errors
        print(f"{name}: no result within {args.child_timeout} s", flush=True)
        print("\n".join(errors.strip().splitlines()[-20:]), file=sys.stderr, flush=True)
        return None
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0:
        errors = child.stderr.strip().splitlines() or ["no output"]
        print(f"{name}: failed (exit {child.returncode}): {errors[-1]}", flush=True)
        print("\n".join(errors[-20:]), file=sys.stderr, flush=True)
        return None
    for line in lines:
        if not line.startswith("{"):
            print(line, flush=True)
    results = [json.loads(line) for line in lines if line.startswith("{")]
    return results[0] if results else None


def print_ratio(args, result: dict, reference: dict) -> None:
    ratio = result["images_per_second"] / reference["images_per_second"]
    print(f"{args.group} {result['variant']} / {reference['implementation']}: {ratio:.2f}x "
          f"({result['images_per_second']:.1f} vs {reference['images_per_second']:.1f} "
          f"images/s, {args.model}, batch {args.batch_size}, {args.resolution} px, "
          f"{args.precision}, {result['device']})", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("group", choices=sorted(GROUPS))
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants to time (default: all of the group's; "
                             "vitbench's own always runs, first)")
    parser.add_argument("--model", default=None,
                        help="zoo model (default: vit_l16 for dropout, vit_b16 for transfer)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="default: 128 for dropout, 1024 for transfer")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--precision", choices=sorted(bench.PRECISIONS), default="bf16")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="the dropout rate the dropout group trains with")
    parser.add_argument("--micro_batch_size", type=int, default=None)
    parser.add_argument("--batches", type=int, default=16, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                        help="also time timm (+ torch.compile on a GPU) in the same command, "
                             "and print each variant's ratio to it")
    parser.add_argument("--child_timeout", type=int, default=300,
                        help="seconds each variant's process may take before it is given up")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    group = GROUPS[args.group]
    for name, value in group.defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    names = list(group.variants) if args.variants is None else args.variants.split(",")
    unknown = sorted(set(names) - set(group.variants) - {PEER})
    if unknown:
        parser.error(f"unknown {args.group} variants {', '.join(unknown)}; the variants are "
                     f"{', '.join(group.variants)}")
    if args.child:  # one variant, measured here
        name = names[0]
        result = time_peer(args) if name == PEER else group.time(name, args)
        print(f"{name}: not available here, skipped" if result is None
              else json.dumps(result | {"variant": name}), flush=True)
        return 0
    names = ["vitbench", *([PEER] if args.peer else []),
             *(name for name in names if name not in ("vitbench", PEER))]
    measured = {}
    for name in names:  # each ratio printed as soon as it can be: a run cut short keeps them
        result = measure(args, name)
        if result is None and name == "vitbench":
            print("vitbench's own implementation was not measured: no ratios", flush=True)
            return 1
        if result is None:
            continue
        measured[name] = result
        print(json.dumps(result), flush=True)
        if name == PEER:
            print_ratio(args, measured["vitbench"], result)
            continue
        for reference in ("vitbench", PEER):
            if reference in measured:
                print_ratio(args, result, measured[reference])
    return 0


if __name__ == "__main__":
    sys.exit(main())
