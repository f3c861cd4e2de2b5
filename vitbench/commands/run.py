"""`vitbench run`: fine-tune a checkpoint on a suite's tasks, recording every run."""

from __future__ import annotations

from absl import flags

from vitbench.commands import command, options
from vitbench.models.zoo import NORMALIZATIONS
from vitbench.tasks import CHOOSABLE_METHODS, OVERRIDABLE, Protocol
from vitbench.transfer import DEFAULT_STACK


def _define(fv):
    flags.DEFINE_string("suite", "demo", "Suite name (vitbench tasks) or a suite TOML path.",
                        flag_values=fv)
    flags.DEFINE_string("ckpt", "scratch:vit_mu8", "Checkpoint: a name from `vitbench "
                        "checkpoints`, a .npz/.keras file, a timm / Hugging Face / open_clip "
                        "file (.safetensors, .pth, .bin) or folder, an hf://org/name id, a "
                        "`vitbench pretrain` workdir, a URL, or scratch:<zoo model> for a "
                        "randomly initialised model.", flag_values=fv)
    flags.DEFINE_list("tasks", [], "Only these tasks of the suite (comma-separated).",
                      flag_values=fv)
    options.define_data_dir(fv)
    options.define_results_dir(fv, "Where run records (runs/<suite>.jsonl) and in-progress "
                               "training state (work/) go.")
    options.define_micro_batch_size(fv, auto=True)
    options.define_remat(fv)
    options.define_settings(fv, Protocol, OVERRIDABLE, bounded=True)
    flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation and new heads.",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("repeats", 1, "Run the whole protocol (learning-rate selection "
                         "included) this many times, with seeds --seed, --seed + 1, ...; the "
                         "leaderboards show the mean and std over seeds.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_boolean("sweep", False, "Select the learning rate per task: train on the "
                         "tune split for each rate in --lrs (default 0.001,0.003,0.01,0.03 "
                         "where the suite fixes one), score on the validation split, retrain "
                         "the best on the fit split.", flag_values=fv)
    flags.DEFINE_integer("stack", None, "Train up to this many runs that differ in "
                         "the learning rate and seed only (a --sweep's tune runs, the seeds of "
                         "--repeats) together, in one compiled step (JAX on one device; each "
                         "run recorded as if it ran alone). 1: one by one. A stack out of memory "
                         "halves its micro-batch, then trains its runs one by one. Default: "
                         f"{DEFAULT_STACK} on a GPU or TPU, 1 on a CPU (where a stack measured no "
                         "faster).",
                         lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_enum("device_data", "auto", ["auto", "on", "off"], "Keep a fine-tuning "
                      "run's training split on the device where it fits (VTAB-1k's 1000 "
                      "images; JAX on one device): preprocessed once, each batch drawn and "
                      "augmented there, equal to the tf.data pipeline's. auto: on a GPU or "
                      "TPU; on: on a CPU too; off: always the tf.data pipeline. The record's "
                      "train.input says where the batches came from.", flag_values=fv)
    flags.DEFINE_boolean("fewshot", True, "Also run the few-shot linear probes that the suite's "
                         "[fewshot] table adds to its fine-tuning tasks (a few-shot suite such "
                         "as `fewshot` always runs its own).", flag_values=fv)
    flags.DEFINE_boolean("as_released", False, "Score the checkpoint's own classifier head on "
                         "each task's test split, without training (e.g. vit_b16.i21k_ft_in1k "
                         "on --suite imagenet, ReaL included), at the checkpoint's own "
                         "resolution where the registry or an .npz grid tells it (else the "
                         "suite's) unless --resolution says otherwise; its head must have the "
                         "task's classes. No few-shot probes; training flags are refused.",
                         flag_values=fv)
    flags.DEFINE_enum("method", None, list(CHOOSABLE_METHODS), "How the tasks are run "
                      "(default: the suite's): finetune; linear, a linear head on frozen "
                      "features for the suite's whole lr x weight-decay grid, the best "
                      "retrained with each head seed (the VPT protocol's linear baseline); "
                      "knn, DINO's weighted k-nearest neighbours on frozen features; "
                      "bitfit (vpt protocol), fine-tuning of the biases and LayerNorm offsets "
                      "only; lora (vpt protocol), a low-rank update of the attention's query "
                      "and value projections; vpt_deep and vpt_shallow (vpt protocol), "
                      "learned prompt tokens. A suite's [methods.<name>] table sets each "
                      "method's protocol. No few-shot probes.", flag_values=fv)
    flags.DEFINE_boolean("strict_shots", False, "Few-shot: refuse a probe where a class has "
                         "fewer training images than k (default: use all it has, as big_vision "
                         "does, and note the shortfall in the record and on the board).",
                         flag_values=fv)
    flags.DEFINE_enum("normalization", None, list(NORMALIZATIONS), "The input normalisation "
                      "the checkpoint was trained with, where its file does not say (a bare "
                      "state dict: [-1, 1], 'inception', is assumed; timm's DeiT, DINO and MAE "
                      "want 'imagenet'). Recorded in the run config.", flag_values=fv)
    flags.DEFINE_boolean("force", False, "Redo runs that are already recorded.", flag_values=fv)
    flags.DEFINE_boolean("dry_run", False, "Print the plan and its cost; train nothing.",
                         flag_values=fv)
    flags.DEFINE_integer("checkpoint_every", 0, "Save training state every N steps so an "
                         "interrupted run resumes (0: only the protocol's step count, i.e. "
                         "no intermediate saves).", lower_bound=0, flag_values=fv)


def overrides_from(fv):
    from vitbench.transfer.plan import Overrides  # Keras: imported once a command runs

    micro = options.micro_batch_size(fv)
    return Overrides(**options.setting_values(fv, Protocol, OVERRIDABLE),
                     micro_batch_size=None if micro == options.AUTO else micro,
                     seed=fv.seed, repeats=fv.repeats, remat=fv.remat,
                     as_released=fv.as_released, strict_shots=fv.strict_shots,
                     normalization=fv.normalization, method=fv.method)


# Flags of training and probing, which a head scored as released (--as_released) has none of.
TRAINING_FLAGS = ("steps", "warmup_steps", "tune_fraction", "lrs", "polyak", "momentum_dtype",
                  "shots", "sweep", "repeats", "remat", "checkpoint_every", "strict_shots",
                  "stack", "device_data")


@command("run", _define)
def run(fv):
    """Fine-tune a checkpoint on every task of a suite and record the results.

    With no flags: the offline demo suite with a tiny randomly initialised ViT (a few minutes
    on 2 CPU cores). Records go to <results_dir>/runs/<suite>.jsonl; runs already recorded
    are skipped (--force redoes them), and --dry_run shows what is done and what is left.
    On the JAX backend each run is data parallel over every local device (each batch split
    over them); CUDA_VISIBLE_DEVICES chooses the GPUs.
    """
    import dataclasses

    from vitbench import records, tasks
    from vitbench.checkpoints import identity
    from vitbench.leaderboards import publish
    from vitbench.train import distribute
    from vitbench.transfer import plan, report, sizing, stacking
    from vitbench.transfer import suite as suite_runner

    if fv.as_released:
        given = [f"--{name}" for name in TRAINING_FLAGS if fv[name].value != fv[name].default]
        if given:
            raise ValueError(f"--as_released trains nothing: {', '.join(given)} would change "
                             "nothing; leave them out")
    suite = tasks.load_suite(fv.suite)
    overrides = overrides_from(fv)
    chosen = [overrides.apply(task) for task in suite.select(fv.tasks)]  # unknown names fail
    identity.check_checkpoint(fv.ckpt)  # one that cannot be had fails before any work
    with distribute.local_devices() as distribution:  # data parallel (JAX), undone after
        if distribution is not None:
            print(f"training and evaluating on {distribute.describe(distribution)}")
        plan.check_batches(chosen, overrides.micro_batch_size)
        if fv.micro_batch_size == options.AUTO:
            micro = sizing.fitting_micro_batch(fv.ckpt, chosen[0], remat=fv.remat)
            print(f"micro-batch size {micro} fits ({chosen[0].protocol.batch_size // micro} "
                  "passes per update)")
            overrides = dataclasses.replace(overrides, micro_batch_size=micro)
        if fv.dry_run:
            speed = None if fv.as_released else lambda: sizing.measure_throughput(
                fv.ckpt, chosen[0], overrides.micro_batch_size or chosen[0].protocol.batch_size,
                remat=fv.remat)
            stack = stacking.size(fv.stack)
            stacked_speed = lambda members: sizing.measure_stacked_throughput(  # noqa: E731
                fv.ckpt, chosen[0], overrides.micro_batch_size or chosen[0].protocol.batch_size,
                members, remat=fv.remat)
            print(report.describe_plan(suite, fv.tasks, fv.ckpt, overrides, fv.results_dir,
                                       fv.sweep, speed, fv.fewshot, fv.data_dir, fv.force,
                                       stack, stacked_speed))
            return 0
        failed = None
        try:
            finished = suite_runner.run_suite(
                suite, fv.tasks, fv.ckpt, overrides, fv.results_dir, sweep=fv.sweep,
                data_dir=fv.data_dir, force=fv.force, checkpoint_every=fv.checkpoint_every,
                fewshot=fv.fewshot, stack=fv.stack, device_data=fv.device_data)
        except suite_runner.RunsFailed as error:  # the others ran: their boards, then fail
            finished, failed = error.finished, error
    print(f"{len(finished)} runs finished; records in "
          f"{records.records_path(fv.results_dir, suite.name)}")
    tables = [path for path in publish.write_all(fv.results_dir) if path.suffix == ".md"]
    print("leaderboards: " + ", ".join(str(path) for path in tables))
    if failed is not None:
        raise failed  # the command exits 1, naming each failed run
    return 0
