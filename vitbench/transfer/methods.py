"""How each kind of run (`Protocol.method`) trains and scores: fine-tuning, few-shot linear
probes of frozen features, and a checkpoint's own head scored as released. A method is one
`Method` subclass, registered in `METHODS` by its name."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import keras
import numpy as np

from vitbench.checkpoints import identity
from vitbench.checkpoints.loader import load_model
from vitbench.data import sources
from vitbench.evaluate import classification, fewshot, knn, linear_probe
from vitbench.models import lora, prompts
from vitbench.train import execution, finetune, optimizers, stack, stacked
from vitbench.transfer.models import load_for_features, load_for_task, load_frozen, pass_size


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
    # One run does the whole task: its selection on tune_val and its seeds (the probes of
    # frozen features); else a task is planned as tune runs and a final run per seed.
    whole_task: bool = False
    # It trains the network as its protocol's fine-tuning recipe does (`protocols.py`): its
    # grid is tuned by tune runs, and a final run's setting chosen from them.
    fine_tunes: bool = False
    # Its grid varies the prompt tokens too (`Protocol.prompt_tokens`; `Run.prompt_tokens`).
    prompted: bool = False

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

    def work(self, run) -> str:
        """What a probe of frozen features does after its feature passes, for the dry run."""
        return ""


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
    """Fine-tunes from the checkpoint with a new head, then scores the eval split, as the
    run's protocol trains (`protocols.FINE_TUNING`: the ViT paper's or VPT's)."""

    name, trains, fine_tunes = "finetune", True, True
    # The variables that train (`models.zoo.TRAINABLE`; the head always does): all of them
    # here; a parameter-efficient method freezes the others, and runs them in inference
    # mode (no dropout), as VPT's code runs a frozen encoder.
    trainable = "all"
    # The optimizer where the method trains with another than its protocol's (VPT's prompts:
    # SGD); None: the protocol's.
    optimizer: str | None = None
    # `start(model, seed)` draws the weights the method adds to the checkpoint's (LoRA's,
    # the prompts) from the run's seed; None: it adds none.
    start = None
    # VPT's selection of the lr x weight-decay grid (KMnP/vpt tune_vtab.py find_best_lrwd)
    SELECTION = "last-epoch tune_val top-1; ties: smaller lr, then smaller weight decay"

    def settings(self, run, lr):
        p, share = run.task.protocol, run.task.protocol.share(run.phase)
        lr = lr if lr is not None else run.lr
        if run.recipe.per_epoch:
            return {**self._epoch_settings(run, lr),
                    **({} if self.trainable == "all" else {"trainable": self.trainable})}
        return {"lr": lr, "steps": p.steps,
                "batch_size": p.batch_size, "warmup_steps": p.effective_warmup_steps,
                "train_pp": run.task.pp("train"), "optimizer": "sgd(momentum=0.9)",
                "update_rule": optimizers.UPDATE_RULE, "momentum_dtype": p.momentum_dtype,
                "grad_clip_norm": 1.0, "schedule": "warmup_cosine", "polyak": p.polyak,
                **({"tune_fraction": share} if share != 1 else {})}

    @classmethod
    def _epoch_settings(cls, run, lr) -> dict:
        """The config fields of fine-tuning under a protocol counted in epochs (VPT's)."""
        p, recipe = run.task.protocol, run.recipe
        return {"protocol": p.name, "lr": lr, "lr_scaling": f"batch/{recipe.lr_per_images}",
                "weight_decay": run.weight_decay, "epochs": p.epochs,
                "warmup_epochs": p.warmup_epochs, "steps_per_epoch": run.steps_per_epoch,
                "steps": run.schedule[0], "batch_size": p.batch_size,
                "train_pp": run.task.pp("train"),
                "optimizer": recipe.optimizer_name(cls._optimizer_of(run)),
                "weight_decay_on": "weights of 2+ axes (not biases, LayerNorms)"
                + (", as L2 on the gradient" if cls._optimizer_of(run) == "sgd"
                   else ""),
                "update_rule": optimizers.UPDATE_RULE, "grad_clip_norm": recipe.grad_clip_norm,
                "schedule": "epoch_warmup_cosine", "dropout": cls._dropout(run),
                "head_init": recipe.head_init, "polyak": p.polyak,
                "tune_seed": run.tune_seed, "selection": cls.SELECTION}

    def tag(self, run, lr):
        decay = "" if run.weight_decay is None else f" wd={run.weight_decay}"
        seed = f" seed={run.seed}" if run.recipe.fixed_seeds else ""
        return f"{run.phase} lr={lr}{decay}{seed}"

    def doing(self, run):
        steps, p = run.schedule[0], run.task.protocol
        epochs = f" ({p.epochs} epochs)" if run.steps_per_epoch else ""
        return f"training {steps} steps of {p.batch_size}{epochs}"

    def execute(self, run, lr, context):
        model = self._model(run)
        counts = trainable_parameters(model)
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
        return {**self.outcome(run, config, result, context), "trainable_parameters": counts}

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
    def _optimizer_of(run) -> str:
        """The optimizer the run trains with: its method's, else its protocol's."""
        return METHODS[run.method].optimizer or run.recipe.optimizer

    @classmethod
    def _adapters(cls, run) -> dict:
        """The ViTConfig fields of the weights the method adds to the checkpoint's (none)."""
        return {}

    @classmethod
    def _dropout(cls, run) -> float | None:
        """The ViT's dropout while training: the protocol's for full fine-tuning, none where
        the backbone is frozen."""
        return run.recipe.dropout if cls.trainable == "all" else 0.0

    @classmethod
    def _model(cls, run):
        """The run's model: the checkpoint with a new head started as the protocol starts it
        (drawn from the run's seed), its dropout where the protocol sets it, only the
        method's variables trainable. Built after seeding with the run's seed: Keras draws
        the dropout layers' random streams when it builds them, so a run's masks are its
        seed's in any process, alone or in a stack."""
        keras.utils.set_random_seed(run.seed)
        recipe = run.recipe
        model = load_for_task(run.ckpt, run.task, run.remat, run.normalization,
                              dropout=cls._dropout(run), trainable=cls.trainable,
                              **cls._adapters(run))
        if recipe.head_init == "kaiming_normal(fan_out)":
            head = model.get_layer("head")
            kernel, _ = linear_probe.initial_heads(1, head.kernel.shape[0],
                                                   run.task.num_classes, run.seed)
            head.kernel.assign(kernel[0].astype(np.float32))
        if cls.start is not None:
            cls.start(model, run.seed)
        return model

    @classmethod
    def _load_members(cls, runs) -> list:
        """The runs' models, each with the random state its separate run would give it."""
        return [cls._model(run) for run in runs]

    @staticmethod
    def train_config(run, lr, micro: int) -> finetune.TrainConfig:
        p, (steps, warmup), recipe = run.task.protocol, run.schedule, run.recipe
        scale = p.batch_size / recipe.lr_per_images if recipe.lr_per_images else 1
        return finetune.TrainConfig(lr=lr * scale, steps=steps, batch_size=p.batch_size,
                                    micro_batch_size=micro, warmup_steps=warmup,
                                    seed=run.seed, polyak=p.polyak,
                                    momentum_dtype=p.momentum_dtype,
                                    grad_clip_norm=recipe.grad_clip_norm,
                                    optimizer=FineTune._optimizer_of(run),
                                    weight_decay=run.weight_decay or 0.0,
                                    epsilon=recipe.epsilon,
                                    steps_per_epoch=run.steps_per_epoch)

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
        outcome["train"]["optimizer_state_bytes"] = optimizer_state_bytes(model.optimizer)
        peak = execution.device_peak_bytes()
        if peak is not None:  # the process's peak so far (`execution.device_peak_bytes`)
            outcome["train"]["device_peak_bytes"] = peak
        return {**outcome, **scores(model, run, config.micro_batch_size, context.data_dir)}


class BitFit(FineTune):
    """BitFit (VPT's `tinytl-bias`): only the biases and LayerNorm offsets train, and the
    head (102,912 + head parameters on ViT-B/16); the rest is frozen, in inference mode."""

    name, trainable = "bitfit", "biases"


class LoRA(FineTune):
    """LoRA (`models.lora`): a rank-`lora_rank` update of every block's query and value
    projections, scaled by lora_alpha / lora_rank, A drawn from the run's seed, B zero; only
    the updates and the head train (294,912 + head parameters on ViT-B/16 at rank 8), the
    rest frozen, in inference mode, biases included."""

    name, trainable = "lora", "lora"

    def settings(self, run, lr):
        p = run.task.protocol
        return {**super().settings(run, lr), "lora_rank": p.lora_rank,
                "lora_alpha": p.lora_alpha, "lora_targets": ["query", "value"],
                "lora_init": "A ~ U(+-1/sqrt(D)) from the seed, B = 0"}

    start = staticmethod(lora.initialize)

    @classmethod
    def _adapters(cls, run):
        p = run.task.protocol
        return {"lora_rank": p.lora_rank, "lora_alpha": p.lora_alpha}


class VisualPrompts(FineTune):
    """VPT-deep (`vpt_deep`): p learned tokens (the run's `prompt_tokens`, from the
    protocol's grid) before every block, each
    block's set replacing the last block's prompt outputs, with dropout `prompt_dropout` on
    them; VPT-shallow (`vpt_shallow`): before the first block only. VPT's start (seeded), SGD
    with momentum 0.9 and L2 decay as VPT trains prompts; only the prompts and the head
    train (9,216 x p + head parameters on ViT-B/16, deep), the rest frozen, in inference
    mode."""

    name, trainable, optimizer, depth, prompted = "vpt_deep", "prompts", "sgd", "deep", True

    def settings(self, run, lr):
        p = run.task.protocol
        return {**super().settings(run, lr), "prompt_tokens": run.prompt_tokens,
                "prompt_depth": self.depth, "prompt_dropout": p.prompt_dropout,
                "prompt_init": "U(-v, v), v = sqrt(6 / (3 patch^2 + D)), from the seed"}

    start = staticmethod(prompts.initialize)

    @classmethod
    def _adapters(cls, run):
        p = run.task.protocol
        return {"prompt_tokens": run.prompt_tokens, "prompt_depth": cls.depth,
                "prompt_dropout": p.prompt_dropout}


class ShallowVisualPrompts(VisualPrompts):
    name, depth = "vpt_shallow", "shallow"


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of the optimizer's state (moments, accumulators, the Polyak average, counters):
    what freezing weights saves besides their gradients, the same on every backend."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in optimizer.variables)


def trainable_parameters(model) -> dict:
    """What a record keeps of the model's trainable parameters: all of them, and the head's
    (PEFT papers count the backbone's: total - head)."""
    head = sum(int(np.prod(v.shape)) for v in model.trainable_variables
               if v.path.startswith("head/"))
    total = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {"total": total, "head": head}


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
        p, data_dir = run.task.protocol, context.data_dir
        features = FrozenFeatures(run, context, "pre_logits", load_for_features)
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
                "features": features.report(extracted, train[0].shape[1])}


class FrozenFeatures:
    """`features(role)`: (features, labels) of a split of the run's task under the frozen
    checkpoint, each extracted once per checkpoint, split, preprocessing and feature kind
    (`fewshot.cached`); the model is loaded on the first split not in the cache."""

    def __init__(self, run, context: RunContext, kind: str, load):
        self.run, self.data_dir, self.load = run, context.data_dir, load
        self.model, self.computed = None, []
        self.identity = {
            "ckpt": run.ckpt, "ckpt_sha256": run.ckpt_sha256, "precision": run.precision,
            "seed": run.seed if identity.is_scratch(run.ckpt) else None,
            "dataset": run.task.tfds_spec, "source": run.task.source,
            "data_sha256": run.data_sha256, "pp": run.task.pp("eval"),
            "data_dir": str(self.data_dir or sources.default_data_dir()),
            **({"normalization": run.normalization} if run.normalization else {}),
            **({} if kind == "pre_logits" else {"features": kind})}

    def __call__(self, role: str):
        run = self.run

        def compute():
            self.model = self.model or self.load(run.ckpt, run.task, run.normalization)
            self.computed.append(role)
            x, y = fewshot.extract_features(
                self.model, run.task, role,
                pass_size(run.micro_batch_size, self.model, run.task.protocol.batch_size),
                self.data_dir)
            return {"features": x, "labels": y}

        arrays = fewshot.cached({**self.identity, "split": run.task.split(role)}, compute)
        return arrays["features"], arrays["labels"]

    def report(self, seconds: float, dimensions: int) -> dict:
        """What the record keeps of the feature passes."""
        return {"computed": self.computed, "seconds": seconds, "dimensions": int(dimensions)}


FROZEN = "pool"  # the feature of the VPT protocol's probes: the final LayerNorm's class token


def _frozen_splits(run, context) -> tuple[FrozenFeatures, dict, float]:
    """The probe's features of tune_train, tune_val, fit and test, and the seconds taken. A
    fit split that is tune_train + tune_val (VTAB-1k's train800val200) holds the same images:
    its features are theirs joined, in that order (a TFDS read of "a+b" may interleave
    them; only the order of the batches sees the difference), so no image is embedded
    twice."""
    features = FrozenFeatures(run, context, FROZEN, load_frozen)
    start = time.perf_counter()
    splits = {role: features(role) for role in ("tune_train", "tune_val")}
    task = run.task
    if task.split("fit") == f"{task.split('tune_train')}+{task.split('tune_val')}":
        splits["fit"] = tuple(np.concatenate(parts) for parts in zip(splits["tune_train"],
                                                                      splits["tune_val"]))
    else:
        splits["fit"] = features("fit")
    splits["test"] = features("test")
    return features, splits, time.perf_counter() - start


def _frozen_settings(run) -> dict:
    return {"lr": None, "protocol": run.task.protocol.name, "features": FROZEN,
            "tune_splits": [run.task.split("tune_train"), run.task.split("tune_val")]}


class LinearProbe(Method):
    """The VPT protocol's linear baseline on frozen features (`evaluate.linear_probe`): the
    whole lr x weight-decay grid trained at once on tune_train, the best on tune_val at the
    last epoch (ties: the smaller rate, then the smaller decay), retrained on fit with each
    head seed and scored on test. Rates are VPT's base rates, scaled by batch/256."""

    name, whole_task = "linear", True
    SELECTION = "last-epoch tune_val top-1; ties: smaller lr, then smaller weight decay"

    def settings(self, run, lr):
        p = run.task.protocol
        return {**_frozen_settings(run), "lrs": list(p.lrs), "lr_scaling": "batch/256",
                "weight_decays": list(p.weight_decays), "batch_size": p.batch_size,
                "epochs": p.epochs, "warmup_epochs": p.warmup_epochs,
                "head_seeds": list(p.final_seeds), "optimizer": "sgd(momentum=0.9)",
                "head_init": "kaiming_normal(fan_out)", "selection": self.SELECTION}

    def tag(self, run, lr):
        return "linear probe"

    def work(self, run):
        p = run.task.protocol
        return (f"{len(p.lrs) * len(p.weight_decays)} heads x {p.epochs} epochs, "
                f"{len(p.final_seeds)} seeds")

    def doing(self, run):
        p = run.task.protocol
        return (f"training {len(p.lrs) * len(p.weight_decays)} linear heads on frozen "
                f"features, then {len(p.final_seeds)} seeds of the best")

    def execute(self, run, lr, context):
        p, classes = run.task.protocol, run.task.num_classes
        features, splits, extracted = _frozen_splits(run, context)
        schedule = linear_probe.Schedule(p.epochs, p.warmup_epochs, p.batch_size)
        scale = p.batch_size / 256
        grid = [(rate, decay) for rate in sorted(p.lrs) for decay in sorted(p.weight_decays)]
        start = time.perf_counter()
        heads = linear_probe.train_heads(*splits["tune_train"], classes,
                                         [scale * rate for rate, _ in grid],
                                         [decay for _, decay in grid], schedule,
                                         seed=p.final_seeds[0])
        x, y = splits["tune_val"]
        validation = np.mean(linear_probe.predict(*heads, x) == y, axis=1)
        rate, decay = grid[int(np.argmax(validation))]  # the first best: smallest lr, wd
        predicted, per_seed = {}, []
        x, y = splits["test"]
        for seed in p.final_seeds:
            head = linear_probe.train_heads(*splits["fit"], classes, [scale * rate], [decay],
                                            schedule, seed=seed)
            predicted[f"test/seed{seed}"] = linear_probe.predict(*head, x)[0]
            per_seed.append(float(np.mean(predicted[f"test/seed{seed}"] == y)))
        metrics = {"accuracy": float(np.mean(per_seed)), "seeds": {"accuracy": per_seed},
                   "examples": len(y), "lr": rate, "weight_decay": decay,
                   "validation": {f"{r:g}/{d:g}": float(a)
                                  for (r, d), a in zip(grid, validation)}}
        return {"status": "finished", "error": None, "metrics": metrics, "scored": (predicted, y),
                "features": features.report(extracted, x.shape[1]),
                "heads_seconds": time.perf_counter() - start,
                "trainable_parameters": {"total": (x.shape[1] + 1) * classes,
                                         "head": (x.shape[1] + 1) * classes}}


class NearestNeighbours(Method):
    """k-nearest-neighbour classification of frozen features, as DINO evaluates
    (`evaluate.knn`): k chosen on tune_val with tune_train as the memory (ties: the smaller
    k), then test scored with fit as the memory; every k's test accuracy is kept."""

    name, whole_task = "knn", True

    def settings(self, run, lr):
        p = run.task.protocol
        return {**_frozen_settings(run), "neighbours": list(p.neighbours),
                "temperature": p.temperature,
                "selection": "tune_val top-1; ties: smaller k"}

    def tag(self, run, lr):
        return "kNN"

    def work(self, run):
        return "k " + ",".join(map(str, run.task.protocol.neighbours))

    def doing(self, run):
        return f"kNN on frozen features (k in {', '.join(map(str, run.task.protocol.neighbours))})"

    def execute(self, run, lr, context):
        p, classes = run.task.protocol, run.task.num_classes
        features, splits, extracted = _frozen_splits(run, context)
        ks = sorted(p.neighbours)
        x, y = splits["tune_val"]
        validation = knn.predict(splits["tune_train"], x, classes, ks, p.temperature)
        chosen = max(ks, key=lambda k: (np.mean(validation[k] == y), -k))
        x, y = splits["test"]
        tested = knn.predict(splits["fit"], x, classes, ks, p.temperature)
        metrics = {"accuracy": float(np.mean(tested[chosen] == y)), "examples": len(y),
                   "k": chosen,
                   "by_k": {str(k): float(np.mean(tested[k] == y)) for k in ks},
                   "validation": {str(k): float(np.mean(validation[k] == splits["tune_val"][1]))
                                  for k in ks}}
        predicted = {"test": tested[chosen], **{f"k{k}": tested[k] for k in ks}}
        return {"status": "finished", "error": None, "metrics": metrics, "scored": (predicted, y),
                "features": features.report(extracted, x.shape[1])}


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


METHODS: dict[str, Method] = {method.name: method for method in (
    FineTune(), BitFit(), LoRA(), VisualPrompts(), ShallowVisualPrompts(), FewShotProbe(),
    AsReleased(), LinearProbe(), NearestNeighbours())}
