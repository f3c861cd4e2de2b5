"""Benchmarks, reported as throughput ratios against a peer measured in the same process.

These machines are shared and noisy, so a single images/s figure says little; each benchmark
times what it measures next to a baseline (e.g. the raw read of the same examples) and reports
both and their ratio.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time

from vitbench.evaluate import prediction
from vitbench.models import zoo
from vitbench.models.vit import create_model
from vitbench.train import distribute, execution, interrupt, optimizers, progress, stack
from vitbench.train.finetune_config import TrainConfig, compile_for_finetuning


@dataclasses.dataclass(frozen=True)
class Measurement:
    name: str
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def _bar(description: str, batches: int):
    """A bar counting the batches (warm-up ones included) of one measurement, with the time
    left, on stderr beside the JSON lines."""
    return progress.bar(description, batches, unit="batch")


def _time(name, batches, warmup, count, size_of) -> Measurement:
    iterator = iter(batches)
    with _bar(name, warmup + count) as bar:
        for _ in range(warmup):  # fill caches, prefetch buffers and thread pools first
            next(iterator)
            bar.update()
        start, images = time.perf_counter(), 0
        for batch in itertools.islice(iterator, count):
            images += size_of(batch)
            bar.update()
    return Measurement(name, images, time.perf_counter() - start)


def pipeline_throughput(task, batch_size=64, batches=20, data_dir=None, warmup=3):
    """Images/s of the raw read, the eval pipeline and the train pipeline of one task.

    Args:
        task: the `vitbench.tasks.Task`; its 'test' split is read and evaluated, its 'fit'
            split trained on.
        batch_size: images per batch.
        batches: timed batches per stage.
        data_dir: the TFDS data dir; None for TFDS' default.
        warmup: untimed batches first (caches, prefetch buffers, thread pools).

    Returns:
        A `Measurement` per stage: "read and decode" (the peer), "eval pipeline",
        "train pipeline", and "train batches on the device" (`device_data.batches`, once the
        split is loaded) where the split can stay on the device (`device_data.load`).

    Raises:
        KeyError: the task has no 'test' or 'fit' split.
        OSError, ValueError: the data is missing or unreadable.
    """
    import numpy as np
    import tensorflow as tf  # here, so that model benchmarks run where only Keras and JAX are

    from vitbench.data import device_data, pipeline, registry, sources

    # The peer: read and decode the same examples, nothing else (reduced to their heights so
    # that images of any size batch together).
    raw = sources.read(task, task.split("test"), data_dir).repeat()
    raw = raw.map(lambda example: tf.shape(registry.chain("decode")(example)["image"])[0],
                  num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    train = pipeline.train_dataset(task, "fit", batch_size, data_dir=data_dir)
    evaluation = pipeline.eval_dataset(task, "test", batch_size, data_dir=data_dir).repeat()
    measurements = [
        _time("read and decode", raw.prefetch(tf.data.AUTOTUNE), warmup, batches, len),
        _time("eval pipeline", pipeline.as_numpy(evaluation), warmup, batches,
              lambda batch: len(batch["label"])),
        _time("train pipeline", pipeline.as_numpy(train), warmup, batches,
              lambda batch: len(batch["label"])),
    ]
    try:
        data = device_data.load(task, "fit", data_dir)
    except device_data.Unsupported:
        return measurements
    on_device = device_data.batches(data, batch_size)  # labels read back: the batch is done
    return measurements + [_time("train batches on the device", on_device, warmup, batches,
                                 lambda batch: len(np.asarray(batch[1])))]


def cpu_cores() -> int:
    """The CPU cores this process may run on (what tf.data's thread pools use)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def pipeline_records(task, measurements, batch_size: int, cores: int | None = None):
    """One JSON-able record per stage: images/s, images/s per CPU core and the ratio to the
    first stage (the peer), with the task, resolution and batch size they were measured at.

    Args:
        task: the `vitbench.tasks.Task` measured.
        measurements: `pipeline_throughput`'s, the peer first.
        batch_size: the batch size they were measured at.
        cores: CPU cores to divide by; None for `cpu_cores()`.

    Returns:
        One dict per measurement, in their order.
    """
    cores = cores or cpu_cores()
    peer = measurements[0]
    return [{"mode": "pipeline", "stage": m.name, "task": task.name,
             "resolution": task.protocol.resolution, "batch_size": batch_size,
             "images": m.images, "seconds": m.seconds,
             "images_per_second": m.images_per_second,
             "images_per_second_per_core": m.images_per_second / cores, "cores": cores,
             "peer": peer.name, "ratio_to_peer": m.images_per_second / peer.images_per_second,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            for m in measurements]


# --- Model throughput: one training step or one forward pass at a time --------------------------

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}
# Dense (not sparse) tensor-core peaks from NVIDIA's spec sheets (TFLOP/s), by device kind and
# precision: the denominator of the model-FLOP utilisation; the first name the device's kind
# contains is used, so the PCIe and NVL cards come before the SXM ones ("NVIDIA H100 80GB
# HBM3"). fp32 is TF32's peak: JAX and TensorFlow run float32 matmuls on TF32 tensor cores on
# these GPUs by default (`benchmarks/peers.py` lets torch do the same). Elsewhere pass
# --peak_tflops.
PEAK_TFLOPS = {("H100 PCIe", "bf16"): 756.5, ("H100 PCIe", "fp32"): 378.0,
               ("H100 NVL", "bf16"): 835.5, ("H100 NVL", "fp32"): 417.5,
               ("H200 NVL", "bf16"): 835.5, ("H200 NVL", "fp32"): 417.5,
               ("H100", "bf16"): 989.4, ("H100", "fp32"): 494.7,
               ("H200", "bf16"): 989.4, ("H200", "fp32"): 494.7,
               ("A100", "bf16"): 312.0, ("A100", "fp32"): 156.0}
TRAIN_FLOPS_PER_FORWARD = 3  # forward, plus a backward pass of about twice the forward


def device_kind() -> str:
    """The first accelerator's name (e.g. 'NVIDIA H100 80GB HBM3'), or 'cpu'."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def peak_tflops(kind: str, precision: str) -> float | None:
    for (name, peak_precision), peak in PEAK_TFLOPS.items():
        if name in kind and peak_precision == precision:
            return peak
    return None


def peak_memory_gb(devices: int = 1) -> float | None:
    """The largest peak of memory (GiB) any of the first `devices` devices has held (JAX on
    GPU/TPU); None where not reported."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    peaks = [(device.memory_stats() or {}).get("peak_bytes_in_use")
             for device in jax.devices()[:devices]]
    return None if None in peaks else max(peaks) / 2**30


INPUTS = ("host", "device")


def model_throughput(model_name: str, mode: str, batch_size: int, resolution: int,
                     precision: str = "fp32", steps: int = 10, warmup: int = 2,
                     num_classes: int = 1000, peak: float | None = None,
                     remat: bool = False, input: str = "host",
                     dropout: float | None = None,
                     micro_batch_size: int | None = None,
                     devices: int | None = None) -> dict:
    """Steady-state images/s of the Keras ViT as vitbench trains or evaluates it, on one batch
    of random images, on JAX data parallel over every local device as `vitbench run` trains
    (or the first `devices` of them: `distribute.local_devices`; CUDA_VISIBLE_DEVICES chooses
    GPUs; on TensorFlow, one device).

    `train`: `model.fit` as the training loops call it (SGD with momentum, the step
    XLA-compiled by Keras, up to `execution.MAX_BATCHES_PER_CALL` steps per call and the loss
    read on the host after each call, batches handed over one by one): `warmup` untimed
    steps (compilation), then `steps` timed ones, each rounded up to whole calls. `infer`:
    `prediction.predict_batches` as the evaluation loops call it (`predict_on_batch`, the
    next batch copied to the device meanwhile), `warmup` untimed batches, then `steps` timed
    ones. Over several devices `batch_size` and `micro_batch_size` are global, split over
    them, the model-FLOP utilisation is against the sum of their peaks (`peak` is one
    device's), and `peak_memory_gb` is the largest of their peaks.

    Args:
        model_name: a zoo name, e.g. 'vit_b16'.
        mode: "train" or "infer".
        batch_size: images per step (global over the devices); `steps` count whole batches.
        resolution: image side in pixels.
        precision: "fp32" or "bf16" (`PRECISIONS`).
        steps: timed steps.
        warmup: untimed steps before them (compilation).
        num_classes: outputs of the model's head.
        peak: one device's peak TFLOP/s for the model-FLOP utilisation; None for the
            device's spec-sheet peak (`PEAK_TFLOPS`).
        remat: rematerialise the encoder blocks (training only; the FLOP count stays the
            model's, so MFU then leaves out the recomputation).
        input: "host" hands the batch over as numpy arrays, as the loops' tf.data pipelines
            do (images in the model's compute dtype: bfloat16 under bf16), so every step
            includes its host-to-device copy (overlapped with the previous step's
            computation, by Keras in training and by `predict_batches` in inference);
            "device" hands over arrays already on the device.
        dropout: replaces the zoo model's dropout rate (official: 0.1 for L/16 and H/14,
            else 0); None keeps it.
        micro_batch_size: images per pass (default: as the loops split it,
            `execution.pass_size`: the whole batch on an accelerator, cache-sized passes on
            a CPU); in training the passes' gradients are accumulated into one update
            (`vitbench.train.optimizers.SGD`, as fine-tuning does).
        devices: use the first this many local devices; None for all.

    Returns:
        One JSON-able measurement (see `measurement`) with step time, achieved TFLOP/s from
        the analytic FLOP count (`zoo.count_flops`; 3x for training), the model-FLOP
        utilisation against `peak`, peak memory, and `remat`, `input`, `dropout` and
        `micro_batch_size`.

    Raises:
        ValueError: an unknown mode or input; `remat` outside training; a peak that is not
            positive; a micro-batch that does not divide the batch or split over the
            devices; more devices asked for than there are.
        KeyError: an unknown precision or model name.
        KeyboardInterrupt: Ctrl-C in training, raised before the next train-function call.
    """
    import keras

    if mode not in ("train", "infer"):
        raise ValueError(f"mode {mode!r} is not one of train, infer")
    if remat and mode != "train":
        raise ValueError("remat recomputes activations for the backward pass: it applies to "
                         "training only")
    if peak is not None and peak <= 0:
        raise ValueError(f"the peak TFLOP/s must be positive, not {peak}")
    if input not in INPUTS:
        raise ValueError(f"input {input!r} is not one of {', '.join(INPUTS)}")
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        with distribute.local_devices(devices) as distribution:
            overrides = {} if dropout is None else {"dropout": dropout}
            model = create_model(model_name, num_classes=num_classes, image_size=resolution,
                                 remat=remat, **overrides)
            count = distribute.data_parallel_size(distribution)  # data parallel only
            micro, seconds, warmup, steps = _time_model(
                model, mode, batch_size, resolution, micro_batch_size, steps, warmup, input,
                count)
    finally:
        keras.config.set_dtype_policy(previous)
    return {**measurement("vitbench", model_name, mode, batch_size, resolution, precision,
                          steps, warmup, seconds, device_kind(), peak_memory_gb(count),
                          f"keras {keras.__version__} ({keras.backend.backend()})", peak,
                          num_classes, count),
            "remat": remat, "input": input,
            "dropout": model.config.dropout, "micro_batch_size": micro}


def _time_model(model, mode: str, batch_size: int, resolution: int,
                micro_batch_size: int | None, steps: int, warmup: int, input: str,
                replicas: int):
    """(micro-batch size, seconds of the timed steps, warm-up steps, timed steps) of
    `model_throughput`, under the distribution set, which splits batches `replicas` ways."""
    import keras
    import numpy as np

    micro = micro_batch_size or execution.pass_size(model.config, model.image_size,
                                                    batch_size, replicas)
    execution.check_split(batch_size, micro, replicas,
                          f"--batch_size and --micro_batch_size multiples of {replicas}, or "
                          "choose fewer --devices")
    passes = batch_size // micro
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (micro, resolution, resolution, 3)).astype(
        model.image_dtype)  # as the pipelines hand images over
    labels = rng.integers(0, model.num_classes, micro)
    if input == "device":
        images, labels = (on_devices(array) for array in (images, labels))
    if mode == "train":
        # One call of the train function per epoch, whole updates per call: the first
        # calls compile and warm up.
        updates_per_call = max(1, min(steps, execution.MAX_BATCHES_PER_CALL // passes))
        warmup_calls = -(-max(warmup, 1) // updates_per_call)
        timed_calls = -(-steps // updates_per_call)
        warmup, steps = warmup_calls * updates_per_call, timed_calls * updates_per_call
        model.compile(optimizer=optimizers.SGD(
            0.001, momentum=0.9, gradient_accumulation_steps=passes if passes > 1 else None),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=updates_per_call * passes)
        timer = epoch_timer()
        feed = (batch for batch in itertools.repeat((images, labels)))  # as the loops feed
        with interrupt.deferred() as stop_on_ctrl_c, \
                _bar(f"{model.name} train", warmup + steps) as bar:
            advance = keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: bar.update(updates_per_call))
            model.fit(feed, epochs=warmup_calls + timed_calls,
                      steps_per_epoch=updates_per_call * passes, shuffle=False, verbose=0,
                      callbacks=[keras.callbacks.TerminateOnNaN(), timer, stop_on_ctrl_c,
                                 advance])
        return micro, timer.ends[-1] - timer.ends[warmup_calls - 1], warmup, steps
    warmup = max(warmup, 1)  # the first call compiles
    batches = itertools.repeat({"image": images}, (warmup + steps) * passes)
    outputs = prediction.predict_batches(model.predict_on_batch, batches, micro)
    with _bar(f"{model.name} infer", (warmup + steps) * passes) as bar:
        for _ in itertools.islice(outputs, warmup * passes):
            bar.update()
        start = time.perf_counter()
        for _ in outputs:  # numpy outputs: each one waited for the device
            bar.update()
        seconds = time.perf_counter() - start
    return micro, seconds, warmup, steps


def sweep_throughput(model_name: str, members: int, batch_size: int, resolution: int,
                     precision: str = "fp32", steps: int = 10, warmup: int = 2,
                     num_classes: int = 1000, micro_batch_size: int | None = None) -> list:
    """A sweep of `members` fine-tuning runs (rates 0.001, 0.002, ...) trained as one stack
    (`stack.Stack`, as `vitbench run --sweep` trains tune runs) against the same runs one
    after the other (`model_throughput` in "train" mode: one run's `fit`, which each of them
    would repeat), on one device, batches handed over from the host.

    Returns:
        Two measurements (see `measurement`): the sequential runs' (`members` 1) and the
        stack's, whose `images_per_second` is each member's, beside `members`, the stack's
        images/s over all members and `ratio_to_sequential`: how many times faster the
        sweep trains stacked than one run after another.
    Raises:
        ValueError: fewer than 2 members; a micro-batch that does not divide the batch.
        KeyError: an unknown precision or model name.
    """
    import keras

    if members < 2:
        raise ValueError(f"a stack has at least 2 members, not {members}")
    sequential = model_throughput(model_name, "train", batch_size, resolution, precision,
                                  steps, warmup, num_classes, micro_batch_size=micro_batch_size,
                                  devices=1)
    micro = sequential["micro_batch_size"]
    warmup, steps = sequential["warmup"], sequential["steps"]  # rounded to whole calls
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        with distribute.local_devices(1):
            configs = [TrainConfig(0.001 * (i + 1), warmup + steps, batch_size, micro)
                       for i in range(members)]
            models = [compile_for_finetuning(create_model(model_name, num_classes=num_classes,
                                                          image_size=resolution), config)
                      for config in configs]
            seconds = _time_stack(models, configs, warmup, steps)
    finally:
        keras.config.set_dtype_policy(previous)
    stacked = measurement("vitbench", model_name, "train", batch_size, resolution, precision,
                          steps, warmup, seconds, device_kind(), peak_memory_gb(1),
                          f"keras {keras.__version__} ({keras.backend.backend()}), "
                          f"{members} runs stacked", num_classes=num_classes)
    per_member = stacked["images_per_second"]
    return [{**sequential, "members": 1},
            {**stacked, "micro_batch_size": micro, "members": members,
             "images_per_second_all_members": members * per_member,
             "ratio_to_sequential": members * per_member / sequential["images_per_second"]}]


def _time_stack(models, configs, warmup: int, steps: int) -> float:
    """Seconds of `steps` updates of the stack of `models` after `warmup` untimed ones, on
    random host batches handed over pass by pass."""
    import numpy as np

    config = configs[0]
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (config.micro_batch_size, *models[0].image_size, 3)).astype(
        models[0].image_dtype)
    labels = rng.integers(0, models[0].num_classes, config.micro_batch_size)
    stacked = stack.Stack(models, configs, (images, labels))
    with interrupt.deferred() as stop_on_ctrl_c, \
            _bar(f"stack of {len(models)}", warmup + steps) as bar:
        for update in range(warmup + steps):
            if update == warmup:
                start = time.perf_counter()
            for _ in range(config.accumulation):
                logs = stacked.step((images, labels))
            np.asarray(logs["loss"])  # the update done on the device
            bar.update()
            if stop_on_ctrl_c.pending:
                raise KeyboardInterrupt
    return time.perf_counter() - start


def on_devices(array):
    """`array` on the device, or split over the devices of the distribution set as Keras
    splits a batch."""
    import keras

    distribution = keras.distribution.distribution()
    if distribution is None:
        return keras.ops.convert_to_tensor(array)
    return keras.distribution.distribute_tensor(
        array, distribution.get_data_layout(array.shape))


def epoch_timer():
    """A Keras callback recording when each epoch ended: its loss reached the host."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # the epoch's last step done on the device
            self.ends.append(time.perf_counter())

    return EpochTimer()


def measurement(implementation: str, model_name: str, mode: str, batch_size: int,
                resolution: int, precision: str, steps: int, warmup: int, seconds: float,
                device: str, memory_gb: float | None, software: str,
                peak: float | None = None, num_classes: int = 1000,
                devices: int = 1) -> dict:
    """One JSON-able throughput measurement of `steps` timed steps of `batch_size` images on
    `devices` devices: images/s, step time, the analytic FLOPs per image (3x the forward for
    training), achieved TFLOP/s and the model-FLOP utilisation against `devices` times `peak`,
    one device's peak TFLOP/s (default: the device's spec sheet's)."""
    flops = zoo.count_flops(zoo.get_config(model_name), resolution, num_classes) * (
        TRAIN_FLOPS_PER_FORWARD if mode == "train" else 1)
    images_per_second = steps * batch_size / seconds
    achieved = images_per_second * flops / 1e12
    peak = peak or peak_tflops(device, precision)
    return {"implementation": implementation, "model": model_name, "mode": mode,
            "batch_size": batch_size, "resolution": resolution, "precision": precision,
            "images_per_second": images_per_second, "step_seconds": seconds / steps,
            "gflops_per_image": flops / 1e9, "tflops": achieved,
            "mfu": achieved / (peak * devices) if peak else None, "peak_tflops": peak,
            "peak_memory_gb": memory_gb, "steps": steps, "warmup": warmup,
            "software": software, "device": device, "devices": devices,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
