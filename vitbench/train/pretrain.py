"""Pretraining a ViT from random initialisation, as the paper does (see `recipes` for the
settings), on one device or many (`distribute`).

A run lives in its workdir (`pretrain.json`, checkpoints, `metrics.jsonl`, at the end
`final.npz`) and resumes from its last save; a finished run's record is appended to
`<results_dir>/pretrain/records.jsonl`.
Design notes: docs/design/training.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import pathlib
import tempfile
import time

import keras
import numpy as np

from vitbench import environment, files, records
from vitbench import tasks as tasks_lib
from vitbench.checkpoints import identity, npz
from vitbench.checkpoints.loader import PRETRAIN_CONFIG, PRETRAIN_FINAL
from vitbench.data import pipeline, sources
from vitbench.evaluate import classification, fewshot
from vitbench.models.vit import create_model
from vitbench.models.zoo import get_config
from vitbench.train import (
    distribute,
    execution,
    finetune,
    interrupt,
    losses,
    optimizers,
    progress,
    recipes,
)
from vitbench.train.schedules import SCHEDULES

CONFIG, FINAL, METRICS = PRETRAIN_CONFIG, PRETRAIN_FINAL, "metrics.jsonl"


def records_path(results_dir) -> pathlib.Path:
    return pathlib.Path(results_dir) / "pretrain" / "records.jsonl"


def default_workdir(results_dir, recipe: recipes.Recipe) -> pathlib.Path:
    return pathlib.Path(results_dir) / "pretrain" / f"{recipe.dataset}_{recipe.model}"


def is_finished(workdir) -> bool:
    return (pathlib.Path(workdir) / FINAL).is_file()


def build_model(pretraining: recipes.Pretraining, remat: bool = False):
    """The zoo model with the recipe's dropout, a representation layer and the dataset's head,
    its biases at the recipe's `head_bias` (with `remat`, each block's activations are
    recomputed in the backward pass)."""
    recipe = pretraining.recipe
    width = get_config(recipe.model).hidden_size
    model = create_model(recipe.model, num_classes=pretraining.task.num_classes,
                         image_size=recipe.resolution, dropout=recipe.dropout,
                         representation_size=width if recipe.representation else None,
                         remat=remat)
    bias = model.get_layer("head").bias
    bias.assign(np.full(bias.shape, recipe.head_bias or 0.0, bias.dtype))
    return model


def make_schedule(recipe: recipes.Recipe, total_steps: int, accumulation: int = 1):
    """The recipe's learning-rate schedule over `total_steps` updates."""
    return SCHEDULES[recipe.lr_decay](recipe.lr, total_steps,
                                      min(recipe.warmup_steps, total_steps), accumulation)


def make_optimizer(recipe: recipes.Recipe, total_steps: int, accumulation: int):
    """Adam as optax applies it (big_vision's chain), decoupled weight decay multiplied by the
    rate, optional global-norm clipping, the recipe's schedule."""
    return optimizers.AdamW(
        learning_rate=make_schedule(recipe, total_steps, accumulation),
        weight_decay=recipe.weight_decay, beta_1=recipe.b1, beta_2=recipe.b2,
        epsilon=recipe.epsilon, global_clipnorm=recipe.grad_clip_norm or None,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None)


def run_config(pretraining: recipes.Pretraining, total_steps: int, precision: str) -> dict:
    """What decides the trained weights: the recipe's training fields, the data and
    preprocessing, steps, precision."""
    task = pretraining.task
    return {"recipe": pretraining.recipe.training_fields(), "steps": total_steps,
            "precision": precision, "loss": recipes.loss_of(pretraining),
            "update_rule": optimizers.UPDATE_RULE,
            "data": {"dataset": task.tfds_spec, "source": task.source, "splits": task.splits,
                     "num_classes": task.num_classes, "train_pp": task.pp("train"),
                     "eval_pp": task.pp("eval")}}


def _check_workdir(workdir: pathlib.Path, config: dict, resume: bool, is_main: bool) -> None:
    """Writes the config into a new workdir (the first process); refuses one that holds
    another run."""
    path, config = workdir / CONFIG, json.loads(json.dumps(config))  # tuples as lists
    if not path.exists():
        if is_main:  # `pretrain` made the workdir
            files.write_atomic(path, json.dumps(config, indent=1, sort_keys=True))
        return
    stored = json.loads(path.read_text())
    if stored != config:
        differ = sorted(_differences(stored, config))
        raise ValueError(f"{workdir} holds a pretraining run with other settings "
                         f"({'; '.join(differ)}); pass another --workdir, or delete that one")
    if not resume and (workdir / finetune.STATE).exists():
        step = finetune.read_state(workdir)["step"]
        raise ValueError(f"{workdir} holds this run's checkpoint at step {step}; pass --resume "
                         "to continue it, or another --workdir")


def _differences(old, new, prefix=""):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            yield from _differences(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield f"{prefix.rstrip('.')}: {old} there, {new} now"


def _keep_metrics_until(path: pathlib.Path, step: int) -> None:
    """Drops the metric lines written after step `step` (the last save), which a resumed run
    writes again, so that each step has one line; and a line cut short by a kill."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
    if len(kept) < len(lines):
        files.write_atomic(path, "".join(kept))


def _evaluated_at(path: pathlib.Path, step: int) -> bool:
    """Whether the metric lines hold an evaluation at `step`."""
    return path.exists() and any('"eval"' in line and json.loads(line)["step"] == step
                                 for line in path.read_text().splitlines(keepends=True)
                                 if line.endswith("\n"))


def _append_line(path: pathlib.Path, line: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


def few_shot_probes(model, pretraining: recipes.Pretraining, batch_size: int,
                    data_dir=None) -> dict:
    """k-shot linear accuracy of the model's pre-logits on each of the recipe's probes
    ("suite/task"), at the pretraining resolution: {"<task>/<k>shot": accuracy}."""
    recipe, results = pretraining.recipe, {}
    for name in recipe.fewshot:
        suite_name, _, task_name = name.partition("/")
        probes = tasks_lib.load_suite(suite_name).fewshot_tasks([task_name])
        if not probes:
            raise ValueError(f"few-shot probe {name}: suite {suite_name} has no few-shot "
                             f"variant of {task_name} (a [fewshot] table or method=fewshot)")
        task = probes[0]
        task = dataclasses.replace(task, protocol=dataclasses.replace(
            task.protocol, resolution=recipe.resolution))
        train = fewshot.extract_features(model, task, "fit", batch_size, data_dir)
        test = fewshot.extract_features(model, task, "test", batch_size, data_dir)
        scores = fewshot.evaluate(train, test, task.num_classes, recipe.fewshot_shots,
                                  recipe.fewshot_seeds, task.protocol.l2_reg, task.name)
        results.update({f"{task.name}/{k}shot": scores[f"{k}shot"]
                        for k in recipe.fewshot_shots})
    return results


class _Periodic(keras.callbacks.Callback):
    """At the end of each fit epoch (`log_every` steps): a metrics line; every
    `checkpoint_every` steps a save and every `eval_every` steps an evaluation (the last step's
    are done after training)."""

    def __init__(self, trainer: _Trainer):
        super().__init__()
        self.trainer, self.started = trainer, time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        trainer, recipe = self.trainer, self.trainer.recipe
        step = min((epoch + 1) * recipe.log_every, trainer.total_steps)
        now = time.perf_counter()
        done_steps = step - max(epoch * recipe.log_every, trainer.start_step)
        trainer.log_metrics({
            "step": step, **{key: float(value) for key, value in (logs or {}).items()},
            "lr": trainer.lr(step - 1),  # the rate the step's update used
            "images_per_second": done_steps * recipe.batch_size / (now - self.started)})
        self.started = now
        if step == trainer.total_steps or not np.isfinite((logs or {}).get("loss", np.nan)):
            return
        if step % recipe.checkpoint_every == 0:
            trainer.save(self.model, step, logs)
        if step % recipe.eval_every == 0:
            trainer.evaluate(self.model, step)
        self.started = time.perf_counter()  # evaluation and saving are not training time


@dataclasses.dataclass
class _Trainer:
    pretraining: recipes.Pretraining
    workdir: pathlib.Path
    total_steps: int
    accumulation: int
    micro_batch_size: int
    start_step: int
    data_dir: str | None
    process_count: int
    is_main: bool
    log: object

    @property
    def recipe(self):
        return self.pretraining.recipe

    def lr(self, update: int) -> float:
        """The learning rate of update `update`, counted from 0 (so the rate that brought
        the weights to step k is `lr(k - 1)`, as big_vision logs it)."""
        return float(make_schedule(self.recipe, self.total_steps)(update))

    def log_metrics(self, line: dict) -> None:
        if self.is_main:
            _append_line(self.workdir / METRICS, {**line, "time": time.time()})

    def save(self, model, step: int, logs) -> None:
        if self.is_main:
            finetune.save_state(model, self.workdir, step, logs or {})
        elif self.process_count > 1:  # reading the weights is collective: every process saves
            with tempfile.TemporaryDirectory() as scratch:
                finetune.save_state(model, pathlib.Path(scratch), step, logs or {})

    def evaluate(self, model, step: int) -> dict | None:
        """Held-out top-1 and few-shot probes, logged; with several processes the first one
        evaluates a copy of the weights on its own device and the others go on (None)."""
        if self.process_count > 1:
            weights = model.get_weights()  # every process takes part
            if not self.is_main:
                return None
            model = distribute.local_copy(weights, lambda: build_model(self.pretraining))
        task = self.pretraining.task
        metrics = {"held_out": classification.top1_accuracy(
                       model, task, "test", self.micro_batch_size, self.data_dir,
                       key=recipes.label_key(task)),
                   "fewshot": few_shot_probes(model, self.pretraining, self.micro_batch_size,
                                              self.data_dir)}
        self.log_metrics({"step": step, "eval": metrics})
        shown = ", ".join([f"held-out top-1 {metrics['held_out']['accuracy']:.4f}"] +
                          [f"{name} {value:.4f}" for name, value in metrics["fewshot"].items()])
        self.log(f"step {step}: {shown}")
        return metrics


def pretrain(pretraining: recipes.Pretraining, workdir, *, results_dir="results",
             micro_batch_size: int | None = None, data_dir=None, model_parallel: int = 1,
             resume: bool = True, verbose: int = 1, log=None,
             remat: bool = False) -> dict | None:
    """Pretrains (or resumes, or reports a finished run) in `workdir`; returns the record (on
    the first process). `log` takes the messages (default: printed above the progress bar).
    `remat` recomputes each block's activations in the backward pass (same numbers, less
    memory; it may change between a run and its resumption).

    Args:
        pretraining: the recipe and its task (`recipes.Pretraining`).
        workdir: the run's folder (made if missing; on a file system every host sees).
        results_dir: where `pretrain/records.jsonl` gets the finished run's record.
        micro_batch_size: images per forward/backward pass; None picks one
            (`execution.pass_size`).
        data_dir: the TFDS data dir; None for TFDS' default.
        model_parallel: devices each encoder block's weights are split over (1: data
            parallel only).
        resume: continue from a checkpoint in `workdir`; False refuses a workdir with one.
        verbose: show a progress bar when nonzero.
        log: called with each message.
        remat: rematerialise each block in the backward pass.

    Returns:
        The run's record (config, checkpoint, metrics, ...) on the first process; None on
        the others, or for a finished run whose record is not in `results_dir`.

    Raises:
        ValueError: `model_parallel` does not fit the devices; the batch does not split
            into micro-batches, devices or processes; a folder is unusable; `workdir` holds
            another run, or a checkpoint while `resume` is False, or was saved with another
            number of micro-batches per update.
        vitbench.train.finetune.DivergedError: the training loss became NaN or infinite.
        KeyboardInterrupt: Ctrl-C, raised before the next train-function call (after any
            save due); running again resumes.
        OSError: the task's data is missing or cannot be downloaded.
    """
    from tqdm.auto import tqdm

    recipe, task = pretraining.recipe, pretraining.task
    workdir, log = pathlib.Path(workdir), log or tqdm.write
    distribution = distribute.configure(model_parallel)
    process_index, process_count = distribute.process_index_and_count()
    replicas = distribute.data_parallel_size(distribution)
    micro = micro_batch_size or execution.pass_size(get_config(recipe.model), recipe.resolution,
                                                    recipe.batch_size, replicas)
    execution.check_split(recipe.batch_size, micro, replicas,
                          f"--batch_size and --micro_batch_size multiples of {replicas}, or "
                          "show fewer devices (e.g. CUDA_VISIBLE_DEVICES)")
    if micro % process_count:
        raise ValueError(f"the micro-batch ({micro}) must split evenly over the {process_count} "
                         "processes: make --micro_batch_size a multiple of it")
    accumulation = recipe.batch_size // micro
    if process_index == 0:  # unusable folders fail here, not after training
        files.make_folder(records_path(results_dir).parent, f"the results dir {results_dir}")
        files.make_folder(workdir, f"the workdir {workdir}")
    sources.check_ready([task], data_dir)
    total = recipe.total_steps(sources.num_examples(task, task.split("fit"), data_dir))
    precision = environment.precision_policy()
    config = run_config(pretraining, total, precision)
    _check_workdir(workdir, config, resume, process_index == 0)
    if is_finished(workdir):
        log(f"{workdir}: pretraining finished ({total} steps); nothing to do")
        return _last_record(results_dir, records.config_hash(config), workdir)

    keras.utils.set_random_seed(recipe.seed)
    previous_policy = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(precision)
    try:
        restored, done = finetune.load_state(workdir)
        finetune.check_accumulation(restored, accumulation, workdir)
        if process_index == 0:
            _keep_metrics_until(workdir / METRICS, done)
        model = restored.set_remat(remat) if restored else build_model(pretraining, remat)
        if restored is None:
            model.compile(optimizer=make_optimizer(recipe, total, accumulation),
                          loss=losses.get_loss(config["loss"]),
                          metrics=[keras.metrics.MeanMetricWrapper(losses.top1_accuracy,
                                                                   name="accuracy")])
        trainer = _Trainer(pretraining, workdir, total, accumulation, micro, done, data_dir,
                           process_count, process_index == 0, log)
        log(f"pretraining {recipe.model} on {pretraining.name}: {total} steps of "
            f"{recipe.batch_size} images ({accumulation} pass{'es' * (accumulation > 1)} of "
            f"{micro}) on {distribute.describe(distribution)}, {precision}"
            + (f"; resuming at step {done}" if done else ""))
        if 0 < done < total and done % recipe.eval_every == 0 and not _evaluated_at(
                workdir / METRICS, done):  # stopped in the evaluation after the last save
            trainer.evaluate(model, done)
        summary = _fit(model, trainer, process_index, process_count, verbose)
        trainer.save(model, total, summary["logs"])
        final = trainer.evaluate(model, total)
        arrays = npz.model_to_arrays(model)  # every process takes part
        if process_index == 0:
            npz.write_npz(arrays, workdir / FINAL)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if process_index != 0:
        return None  # the first process records the run
    record = {"config_hash": records.config_hash(config), "config": config,
              "checkpoint": {"workdir": str(workdir), "path": str(workdir / FINAL),
                             "sha256": identity.file_sha256(workdir / FINAL)},
              "metrics": final, "evaluation": {name: getattr(recipe, name)
                                               for name in recipes.EVALUATION_FIELDS},
              "train": {key: value for key, value in summary.items() if key != "logs"},
              "environment": environment.environment(), "processes": process_count,
              "distribution": distribute.describe(distribution),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    records.append(records_path(results_dir), record)
    return record


def _fit(model, trainer: _Trainer, process_index: int, process_count: int, verbose: int):
    recipe, done, total = trainer.recipe, trainer.start_step, trainer.total_steps
    per_process = trainer.micro_batch_size // process_count
    remaining = (total - done) * trainer.accumulation
    batches = pipeline.as_numpy(pipeline.train_dataset(
        trainer.pretraining.task, "fit", per_process, seed=recipe.seed,
        data_dir=trainer.data_dir, process_index=process_index, process_count=process_count,
        start_batch=done * trainer.accumulation, image_dtype=model.image_dtype))
    key = recipes.label_key(trainer.pretraining.task)
    feed = ((batch["image"], batch[key]) for batch, _ in zip(batches, range(remaining)))
    run_bar = progress.bar(f"pretrain {recipe.model} on {recipe.dataset}",
                           total * recipe.batch_size, done * recipe.batch_size,
                           enabled=bool(verbose) and process_index == 0)
    callbacks = finetune.training_callbacks(
        model, recipe.log_every * trainer.accumulation, remaining, run_bar, total, done,
        recipe.batch_size, trainer.accumulation) + [_Periodic(trainer)]
    if process_index == 0 and importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(trainer.workdir / "tensorboard"),
                                                     update_freq="epoch"))
    start, logs = time.perf_counter(), {}
    with run_bar:
        if remaining:
            with interrupt.deferred() as stop_on_ctrl_c:
                history = model.fit(feed, initial_epoch=done // recipe.log_every,
                                    epochs=math.ceil(total / recipe.log_every),
                                    steps_per_epoch=recipe.log_every * trainer.accumulation,
                                    verbose=0, shuffle=False,
                                    callbacks=callbacks + [stop_on_ctrl_c])
            logs = {key: values[-1] for key, values in history.history.items()}
        elif done:  # stopped after the last save, during the final evaluation
            logs = finetune.read_state(trainer.workdir)["logs"]
    if remaining and not np.isfinite(logs.get("loss", np.nan)):
        raise finetune.DivergedError(f"pretraining diverged: the loss became {logs.get('loss')}"
                                     f" (lr {recipe.lr}); try a smaller learning rate")
    seconds = time.perf_counter() - start
    return {"steps": total, "resumed_from_step": done, "train_loss": logs.get("loss"),
            "train_accuracy": logs.get("accuracy"), "seconds": seconds,
            "images_per_second": (total - done) * recipe.batch_size / seconds
            if total > done else None, "logs": logs}


def _last_record(results_dir, digest: str, workdir: pathlib.Path) -> dict | None:
    """The latest record of these settings trained in `workdir` (the same settings may have
    been trained in other workdirs too)."""
    here = [record for record in records.read(records_path(results_dir))
            if record.get("config_hash") == digest
            and pathlib.Path(record["checkpoint"]["workdir"]).resolve() == workdir.resolve()]
    return here[-1] if here else None
