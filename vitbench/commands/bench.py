"""`vitbench bench`: throughput benchmarks, as ratios against a peer run in the same process."""

from __future__ import annotations

from vitbench.commands import command, options

MODES = ("pipeline", "train", "infer", "sweep")
# Defaults that finish in minutes: on an accelerator, and on a CPU (where a ViT-B/16 trains
# about one image a second).
ACCELERATOR_DEFAULTS = {"batch_size": 64, "batches": 20, "warmup": 3}
CPU_DEFAULTS = {"batch_size": 16, "batches": 3, "warmup": 1}


def resolve_defaults(fv) -> None:
    """Fills the flags left unset with the defaults of the device the command runs on."""
    from vitbench import bench

    defaults = CPU_DEFAULTS if bench.device_kind() == "cpu" else ACCELERATOR_DEFAULTS
    for name, value in defaults.items():
        if fv[name].value is None:
            fv[name].value = value


def _define(fv):
    from absl import flags

    flags.DEFINE_enum("mode", "pipeline", list(MODES),
                      "What to measure (one JSON line per measurement). pipeline: images/s of a "
                      "task's train and eval preprocessing, against the raw read of the same "
                      "data. train / infer: images/s of a model's training step / forward pass "
                      "(benchmarks/peers.py times timm beside it). sweep: --members fine-tuning "
                      "runs trained as one stack against one after the other.",
                      flag_values=fv)
    flags.DEFINE_integer("members", 4, "sweep: runs in the stack.", lower_bound=2,
                         flag_values=fv)
    flags.DEFINE_string("suite", "demo", "pipeline: suite name or suite TOML path.",
                        flag_values=fv)
    flags.DEFINE_string("task", None, "pipeline: task of the suite (default: its first).",
                        flag_values=fv)
    flags.DEFINE_string("model", "vit_b16", "train / infer / sweep: zoo model.", flag_values=fv)
    flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16"], "train / infer / sweep: float32, "
                      "or bf16 compute with float32 weights.", flag_values=fv)
    flags.DEFINE_enum("input", "host", ["host", "device"], "train / infer: hand batches over "
                      "as numpy arrays, as the training and evaluation loops do (each step "
                      "includes its copy to the device), or as arrays already on the device.",
                      flag_values=fv)
    options.define_remat(fv, "train: ")
    flags.DEFINE_float("dropout", None, "train: dropout rate in place of the zoo model's "
                       "(official: 0.1 for vit_l16 and vit_h14, 0 for the others).",
                       lower_bound=0, upper_bound=1, flag_values=fv)
    flags.DEFINE_float("peak_tflops", None, "train / infer: one device's peak TFLOP/s for the "
                       "model-FLOP utilisation (default: known for H100, H200, A100).",
                       lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("resolution", None, "Image size (pipeline: default the protocol's; "
                         "train / infer / sweep: default 224).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Batch size (default: 64 on an accelerator, "
                         f"{CPU_DEFAULTS['batch_size']} on a CPU).", lower_bound=1,
                         flag_values=fv)
    options.define_micro_batch_size(fv, "train / infer / sweep: ")
    flags.DEFINE_integer("devices", None, "train / infer: data parallel over the first N "
                         "local devices, the batch and micro-batch split over them (default: "
                         "all of them, as `vitbench run` trains; JAX only, TensorFlow runs on "
                         "one).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batches", None, "Batches timed per stage, after the warm-up ones "
                         f"(default: 20 on an accelerator, {CPU_DEFAULTS['batches']} on a "
                         "CPU).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("warmup", None, "Batches run before timing (compilation, caches; "
                         f"default: 3 on an accelerator, {CPU_DEFAULTS['warmup']} on a CPU).",
                         lower_bound=0, flag_values=fv)
    options.define_data_dir(fv, ", for --mode pipeline")


def _pipeline(fv):
    import dataclasses

    from vitbench import bench, tasks

    suite = tasks.load_suite(fv.suite)
    task = suite.task(fv.task) if fv.task else suite.tasks[0]
    if fv.resolution:
        task = dataclasses.replace(task, protocol=dataclasses.replace(
            task.protocol, resolution=fv.resolution))
    measurements = bench.pipeline_throughput(task, fv.batch_size, fv.batches, fv.data_dir,
                                             fv.warmup)
    return bench.pipeline_records(task, measurements, fv.batch_size)


def _model(fv):
    from vitbench import bench

    return [bench.model_throughput(fv.model, fv.mode, fv.batch_size, fv.resolution or 224,
                                   fv.precision, fv.batches, fv.warmup, peak=fv.peak_tflops,
                                   remat=fv.remat, input=fv.input, dropout=fv.dropout,
                                   micro_batch_size=fv.micro_batch_size,
                                   devices=fv.devices)]


def _sweep(fv):
    from vitbench import bench

    return bench.sweep_throughput(fv.model, fv.members, fv.batch_size, fv.resolution or 224,
                                  fv.precision, fv.batches, fv.warmup,
                                  micro_batch_size=fv.micro_batch_size)


RUNNERS = {"pipeline": _pipeline, "train": _model, "infer": _model, "sweep": _sweep}


@command("bench", _define)
def run(fv):
    """Measure throughput (see --mode), reported so that runs can be compared.

    Every measurement is printed as one JSON line; a progress bar on stderr shows each
    measurement's batches and the time left. Unset --batch_size, --batches and --warmup take
    defaults that finish in minutes on the device found (smaller on a CPU).
    `--mode pipeline` times reading and decoding a task's data, its eval pipeline and
    its train pipeline (augmentation included) at the protocol's resolution: images/s,
    images/s per CPU core and each stage's ratio to that read.
    `--mode train` / `--mode infer` time a zoo model's training steps (`fit`, several steps
    per call, as vitbench fine-tunes) or forward pass (`predict_on_batch`, as it evaluates),
    after untimed steps (compilation): images/s, step time, achieved
    TFLOP/s and model-FLOP utilisation from the analytic FLOP count (`vitbench models`),
    peak device memory. On the JAX backend the model runs data parallel over every local
    device (--devices: the first N), as `vitbench run` trains; `--batch_size` is then the
    global batch. `python benchmarks/peers.py` runs the same measurement on one device next to
    timm.
    `--mode sweep` times --members fine-tuning runs of the model trained as one stack (as
    `vitbench run --sweep` trains a task's tune runs) against the same runs trained one
    after the other, on one device: images/s per member and the ratio of the two.
    """
    import json

    resolve_defaults(fv)
    for record in RUNNERS[fv.mode](fv):
        print(json.dumps(record))
    return 0
