"""Few-shot linear evaluation, as big_vision's `fewshot_lsr` evaluator and the ViT paper do it.

Frozen pre-logit features, k examples per class drawn per seed (nested across k), whitened,
closed-form ridge regression to targets 2 * one_hot - 1, accuracy on the whole test split
averaged over seeds. Features are cached under `$VITBENCH_CACHE/features/`.
Design notes: docs/design/evaluation.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np

from vitbench import files
from vitbench.checkpoints.download import cache_dir
from vitbench.evaluate import prediction

BIAS_FEATURE = 100.0
SOLVER = "ridge_float64_host"  # in a probe's config: how its classifiers were solved
WHITENING_EPSILON = 1e-5


def extract_features(model, task, split: str, batch_size: int = 256, data_dir=None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 [N, D], labels int [N]) of `model`'s pre-logits over `split`.

    Args:
        model: a `VisionTransformer` (with or without a head).
        task: the `vitbench.tasks.Task`, read through its eval pipeline, in order.
        split: a role ('fit', 'test', ...) or a split name of the task.
        batch_size: images per prediction call.
        data_dir: the TFDS data dir; None for TFDS' default.

    Returns:
        (features float32 [N, D], labels int64 [N]).

    Raises:
        KeyError: `task` has no split of that role or name.
        OSError, ValueError: the data is missing or unreadable (`vitbench.data.sources.read`).
    """
    extractor = model.feature_extractor()
    features, labels = [], []
    for output, batch in prediction.predict_split(extractor.predict_on_batch, task, split,
                                                  batch_size, model.image_dtype, data_dir):
        features.append(np.asarray(output["pre_logits"], np.float32))
        labels.append(batch["label"])
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def cached(key: dict, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`compute()`'s arrays, stored under a hash of `key` in the cache (written atomically).

    Args:
        key: a JSON-able description of what `compute` computes (checkpoint, data,
            preprocessing, precision); it names the file under `$VITBENCH_CACHE/features/`.
        compute: called only when nothing is stored under `key`.

    Returns:
        Name -> array, read from the cache or just computed (and stored).
    """
    import io

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = cache_dir() / "features" / f"{digest[:24]}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = compute()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files.write_atomic(path, buffer.getvalue())
    return arrays


class TooFewShotsError(ValueError):
    """A class has fewer training examples than the shots asked for (strict sampling)."""


def sample_shots(labels: np.ndarray, shots: int, seed: int, num_classes: int,
                 task_name: str = "task", class_names=None, strict: bool = False
                 ) -> tuple[np.ndarray, dict[int, int]]:
    """Indices of `shots` examples of every class, drawn with `seed` (nested across shots).

    A class with fewer examples contributes all it has, as big_vision's few-shot evaluator
    does; with `strict` it is refused instead.

    Returns:
        (indices, {class id: examples it has} of the classes with fewer than `shots`).
    Raises:
        TooFewShotsError: with `strict`, a class has too few (named by `class_names`).
    """
    rng = np.random.default_rng(seed)
    chosen, short = [], {}
    for label in range(num_classes):
        indices = np.flatnonzero(labels == label)
        if len(indices) < shots:
            if strict:
                named = f" ({class_names[label]})" if class_names else ""
                raise TooFewShotsError(
                    f"{task_name}: class {label}{named} has {len(indices)} training example(s), "
                    f"fewer than {shots} shots; use fewer shots (--shots) or a larger train "
                    "split, or leave out --strict_shots to use what such a class has")
            short[label] = len(indices)
        chosen.append(rng.permutation(indices)[:shots])
    return np.concatenate(chosen), short


def _whiten_with_bias(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    x = (x - mean) / std
    return np.concatenate([x, np.full((len(x), 1), BIAS_FEATURE, x.dtype)], axis=1)


def ridge_weights(train_x, train_y, num_classes: int, l2_reg: float):
    """(W, mean, std): the ridge solution on whitened features with a bias feature.

    Solved in float64 on the host, whatever the device: the intercept is a sum of nearly
    cancelling terms, which an accelerator's reduced-precision (TF32) matmuls get wrong.
    """
    x = np.asarray(train_x, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + WHITENING_EPSILON
    x = _whiten_with_bias(x, mean, std)
    targets = 2.0 * np.eye(num_classes)[np.asarray(train_y, np.int64)] - 1.0
    examples, dimensions = x.shape
    if examples >= dimensions:
        gram = x.T @ x + l2_reg * np.eye(dimensions)
        weights = np.linalg.solve(gram, x.T @ targets)
    else:
        gram = x @ x.T + l2_reg * np.eye(examples)
        weights = x.T @ np.linalg.solve(gram, targets)
    return weights, mean, std


def ridge_predictions(train_x, train_y, test_x, num_classes: int, l2_reg: float) -> np.ndarray:
    """The class the ridge classifier fitted to the train features predicts for each test
    feature."""
    weights, mean, std = ridge_weights(train_x, train_y, num_classes, l2_reg)
    test = _whiten_with_bias(np.asarray(test_x, np.float64), mean, std)
    return np.argmax(test @ weights, axis=-1)


def evaluate(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
             num_classes: int, shots: Sequence[int], seeds: int, l2_reg: float,
             task_name: str = "task", class_names=None, strict: bool = False,
             predictions: dict | None = None) -> dict:
    """{'<k>shot': mean accuracy over seeds, 'seeds': {'<k>shot': [per seed]}, examples}.

    Args:
        train: (features [N, D], labels [N]) of the split the shots are drawn from.
        test: (features, labels) scored with each fitted classifier.
        num_classes: classes of the task; labels are 0..num_classes - 1.
        shots: the k of each k-shot result.
        seeds: how many draws per k (seeds 0..seeds - 1), averaged.
        l2_reg: the ridge regulariser (the few-shot protocol's default: 2^10).
        task_name: names the task in an error.
        class_names: by class id; names a class that has too few examples.
        strict: refuse a class with fewer than k training examples (default: use all it has).
        predictions: where given, filled with each classifier's predicted class per test
            item, by '<k>shot/seed<s>'.

    Returns:
        {'<k>shot': mean accuracy, 'seeds': {'<k>shot': [accuracy per seed]},
        'train_examples': N, 'test_examples': test examples}, and where a class had fewer
        than k training examples, 'short': {'<k>shot': {class: examples used}} (a class by
        its name where `class_names` gives one, else its id).

    Raises:
        TooFewShotsError: with `strict`, a class has fewer than k training examples.
    """
    metrics, per_seed, shortfall = {}, {}, {}
    for k in shots:
        scores = []
        for seed in range(seeds):
            chosen, short = sample_shots(train[1], k, seed, num_classes, task_name,
                                         class_names, strict)
            predicted = ridge_predictions(train[0][chosen], train[1][chosen], test[0],
                                          num_classes, l2_reg)
            scores.append(float(np.mean(predicted == np.asarray(test[1]))))
            if predictions is not None:
                predictions[f"{k}shot/seed{seed}"] = predicted
        if short:
            shortfall[f"{k}shot"] = {
                str(class_names[label] if class_names else label): used
                for label, used in short.items()}
        metrics[f"{k}shot"] = float(np.mean(scores))
        per_seed[f"{k}shot"] = scores
    return {**metrics, "seeds": per_seed, "train_examples": int(len(train[1])),
            "test_examples": int(len(test[1])), **({"short": shortfall} if shortfall else {})}
