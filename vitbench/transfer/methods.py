"""How each kind of run (`Protocol.method`) trains and scores: fine-tuning, few-shot linear
probes of frozen features, and a checkpoint's own head scored as released. A method is one
`Method` subclass, registered in `METHODS` by its name."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import keras

from vitbench.checkpoints import identity
from vitbench.checkpoints.loader import load_model
from vitbench.data import sources
from vitbench.evaluate import classification, fewshot
from vitbench.train import execution, finetune, optimizers, stack, stacked
from vitbench.transfer.models import load_for_features, load_for_task, pass_size


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Where and how a run executes, beside what it is (its `Run`)."""

    workdir: pathlib.Path  # its in-progress training state (removed once recorded)
    data_dir: str | None = None
    checkpoint_every: int = 0  # save training state every N steps (0: only at the end)
    verbose: int = 0
    suite_bar: object = None  # the suite's progress bar, which a training run advances
    device_data: str = "auto"  # keep a small training split on the device (`train.feed`)


class Method:
    """What differs between the kinds of run. `run` is a `vitbench.transfer.plan.Run`."""

    name: str
    trains: bool = False  # its training images count in the suite bar and the dry run
    reads_train_split: bool = True  # a training split (fine-tuning, few-shot features)

    def settings(self, run, lr: float | None) -> dict:
        """The config fields of this kind, beside those every run has."""
        raise NotImplementedError

    def tag(self, run, lr: float | None) -> str:
        """How the log names the run after its task."""
        raise NotImplementedError

    def doing(self, run) -> str:
        """What the run does, for the log."""
        raise NotImplementedError

    def execute(self, run, lr: float | None, context: RunContext) -> dict:
        """Trains or probes, and scores: the record's outcome (status, error, metrics, ...)."""
        raise NotImplementedError


def scores(model, run, micro: int, data_dir) -> dict:
    """Top-1 on the run's eval split, and ImageNet-ReaL's for a final run of a task that has
    it; and under `scored`, the split's per-item predictions and labels (which the runner
    keeps in the run's outcomes file: `outcomes.write`)."""
    predicted, labels = classification.predictions(model, run.task, run.eval_split, micro,
                                                   data_dir)
    metrics = classification.accuracy(predicted, labels)
    if run.phase == "final" and run.task.real_dataset:
        metrics.update(classification.real_accuracy_of(model, run.task, micro, data_dir))
    return {"metrics": metrics, "scored": ({run.eval_split: predicted}, labels)}


class FineTune(Method):
    """Fine-tunes from the checkpoint with a zero head, then scores the eval split."""

    name, trains = "finetune", True

    def settings(self, run, lr):
        p, share = run.task.protocol, run.task.protocol.share(run.phase)
        return {"lr": lr if lr is not None else run.lr, "steps": p.steps,
                "batch_size": p.batch_size, "warmup_steps": p.effective_warmup_steps,
                "train_pp": run.task.pp("train"), "optimizer": "sgd(momentum=0.9)",
                "update_rule": optimizers.UPDATE_RULE, "momentum_dtype": p.momentum_dtype,
                "grad_clip_norm": 1.0, "schedule": "warmup_cosine", "polyak": p.polyak,
                **({"tune_fraction": share} if share != 1 else {})}

    def tag(self, run, lr):
        return f"{run.phase} lr={lr}"

    def doing(self, run):
        return f"training {run.schedule[0]} steps of {run.task.protocol.batch_size}"

    def execute(self, run, lr, context):
        model = load_for_task(run.ckpt, run.task, run.remat, run.normalization)
        micro = pass_size(run.micro_batch_size, model, run.task.protocol.batch_size)
        config = self.train_config(run, lr, micro)
        try:
            result = finetune.fine_tune(
                model, run.task, run.train_split, config, data_dir=context.data_dir,
                workdir=context.workdir, checkpoint_every=context.checkpoint_every,
                verbose=context.verbose, suite_bar=context.suite_bar,
                device_data=context.device_data)
        except finetune.DivergedError as diverged:
            result = diverged
        return self.outcome(run, config, result, context)

    def execute_stacked(self, runs, lrs, contexts) -> list[dict]:
        """Trains `runs` (configs alike but for rate and seed, `stacking.stack_key`) together
        (`stacked.fine_tune_stacked`), then scores each: one outcome per run, as `execute`
        gives it. A stack out of memory tries again in passes of half as many images while
        that divides the batch (the numbers stay those of the batch; the record gives the
        pass size). Raises `stack.NotStackable` before any training where they cannot
        stack."""
        stack.check_stackable([self.train_config(run, lr, 1) for run, lr in zip(runs, lrs)])
        lead, context = runs[0], contexts[0]
        models = self._load_members(runs)
        first_micro = pass_size(lead.micro_batch_size, models[0], lead.task.protocol.batch_size)

        def train(micro):
            nonlocal models
            members, models = models or self._load_members(runs), None  # a retry: fresh ones
            configs = [self.train_config(run, lr, micro) for run, lr in zip(runs, lrs)]
            return configs, stacked.fine_tune_stacked(
                members, lead.task, lead.train_split, configs, data_dir=context.data_dir,
                workdirs=[c.workdir for c in contexts], checkpoint_every=context.checkpoint_every,
                verbose=context.verbose, suite_bar=context.suite_bar,
                device_data=context.device_data)

        (configs, results), _ = execution.halving_until_it_fits(train, first_micro)
        return [self.outcome(run, config, result, context)
                for run, config, result, context in zip(runs, configs, results, contexts)]

    @staticmethod
    def _load_members(runs) -> list:
        """The runs' models, each with the random state its separate run would give it."""
        models = []
        for run in runs:
            keras.utils.set_random_seed(run.seed)
            models.append(load_for_task(run.ckpt, run.task, run.remat, run.normalization))
        return models

    @staticmethod
    def train_config(run, lr, micro: int) -> finetune.TrainConfig:
        p, (steps, warmup) = run.task.protocol, run.schedule
        return finetune.TrainConfig(lr=lr, steps=steps, batch_size=p.batch_size,
                                    micro_batch_size=micro, warmup_steps=warmup,
                                    seed=run.seed, polyak=p.polyak,
                                    momentum_dtype=p.momentum_dtype)

    @staticmethod
    def outcome(run, config: finetune.TrainConfig, result, context) -> dict:
        """The record's outcome of a training `result`: (model, summary), scored on the
        run's eval split, or a `finetune.DivergedError`."""
        outcome = {"status": "finished", "error": None,
                   "micro_batch_size": config.micro_batch_size,
                   "accumulation_steps": config.accumulation}
        if isinstance(result, finetune.DivergedError):
            return {**outcome, "status": "diverged", "error": str(result), "train": {},
                    "metrics": {"accuracy": None}}
        model, outcome["train"] = result
        return {**outcome, **scores(model, run, config.micro_batch_size, context.data_dir)}


class FewShotProbe(Method):
    """Few-shot linear probes of the frozen checkpoint (features cached per checkpoint)."""

    name = "fewshot"

    def settings(self, run, lr):
        p = run.task.protocol
        return {"lr": None, "shots": list(p.shots), "l2_reg": p.l2_reg, "seeds": p.seeds,
                "features": "pre_logits", "solver": fewshot.SOLVER}

    def tag(self, run, lr):
        return "few-shot"

    def doing(self, run):
        p = run.task.protocol
        return f"probing frozen features ({', '.join(map(str, p.shots))} shots, {p.seeds} seeds)"

    def execute(self, run, lr, context):
        p, data_dir, model = run.task.protocol, context.data_dir, None
        identity_fields = {
            "ckpt": run.ckpt, "ckpt_sha256": run.ckpt_sha256, "precision": run.precision,
            "seed": run.seed if identity.is_scratch(run.ckpt) else None,
            "dataset": run.task.tfds_spec, "source": run.task.source,
            "data_sha256": run.data_sha256, "pp": run.task.pp("eval"),
            "data_dir": str(data_dir or sources.default_data_dir()),
            **({"normalization": run.normalization} if run.normalization else {})}
        computed = []

        def features(role):
            def compute():
                nonlocal model
                model = model or load_for_features(run.ckpt, run.task, run.normalization)
                computed.append(role)
                x, y = fewshot.extract_features(
                    model, run.task, role, pass_size(run.micro_batch_size, model, p.batch_size),
                    data_dir)
                return {"features": x, "labels": y}

            arrays = fewshot.cached({**identity_fields, "split": run.task.split(role)}, compute)
            return arrays["features"], arrays["labels"]

        start = time.perf_counter()
        train, test = features(run.train_split), features(run.eval_split)
        extracted = time.perf_counter() - start
        predicted = {}
        metrics = fewshot.evaluate(train, test, run.task.num_classes, p.shots, p.seeds,
                                   p.l2_reg, run.task.name,
                                   sources.class_names(run.task, data_dir), run.strict_shots,
                                   predictions=predicted)
        return {"status": "finished", "error": None, "metrics": metrics,
                "scored": (predicted, test[1]),
                "features": {"computed": computed, "seconds": extracted,
                             "dimensions": int(train[0].shape[1])}}


class AsReleased(Method):
    """Scores the checkpoint's own head on the test split (and ImageNet-ReaL where the task
    has it): no training (`vitbench run --as_released`)."""

    name, reads_train_split = "evaluate", False

    def settings(self, run, lr):
        return {"lr": None, "train_split": None, "head": "checkpoint"}

    def tag(self, run, lr):
        return "as released"

    def doing(self, run):
        return "scoring its own head as released"

    def execute(self, run, lr, context):
        model = load_model(run.ckpt, image_size=run.task.protocol.resolution, progress=False,
                           **({"normalization": run.normalization} if run.normalization else {}))
        identity.check_head(run.ckpt, model.num_classes, run.task)
        micro = pass_size(run.micro_batch_size, model, run.task.protocol.batch_size)
        return {"status": "finished", "error": None, "micro_batch_size": micro,
                **scores(model, run, micro, context.data_dir)}


METHODS: dict[str, Method] = {method.name: method
                              for method in (FineTune(), FewShotProbe(), AsReleased())}
