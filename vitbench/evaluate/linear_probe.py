"""Linear probes of frozen features, as the VPT protocol trains them (`KMnP/vpt`, `linear`):
a linear head on the cached features, SGD with momentum 0.9, L2 weight decay on the weight
(not the bias) added to the gradient, cross-entropy averaged over the batch, a learning rate
warmed up linearly from 0 and then cosine-decayed to 0, stepped once per epoch (epoch 0 runs
at rate 0), shuffled batches each epoch. The head starts as VPT's: weights drawn from
N(0, 2 / classes) (Kaiming, fan-out), zero bias.

A whole grid of (learning rate, weight decay) heads trains at once, as one stack of weights
[heads, D, classes] over the same batches: each head's updates are those it would get
alone (tested against a torch loop), so the grid costs one pass of matrix products per
batch instead of one per setting.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vitbench.train.schedules import epoch_factor

MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and in what batches the heads train (VPT's linear defaults)."""

    epochs: int = 100
    warmup_epochs: int = 10
    batch_size: int = 1024

    def rate(self, epoch: int) -> float:
        """The factor of the base learning rate in `epoch` (0-based)."""
        return epoch_factor(epoch, self.epochs, self.warmup_epochs)


def initial_heads(heads: int, dimensions: int, classes: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(weights [heads, D, classes], biases [heads, classes]): every head starts from the same
    draw of N(0, 2 / classes), zero bias."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(scale=np.sqrt(2 / classes), size=(dimensions, classes))
    return (np.broadcast_to(weights, (heads, dimensions, classes)).astype(np.float64),
            np.zeros((heads, classes)))


def batches(examples: int, schedule: Schedule, seed: int):
    """Each epoch's batches of item indices: a fresh permutation per epoch, the last batch
    short where the batch size does not divide the items."""
    rng = np.random.default_rng(seed)
    for epoch in range(schedule.epochs):
        order = rng.permutation(examples)
        yield epoch, [order[i:i + schedule.batch_size]
                      for i in range(0, examples, schedule.batch_size)]


def train_heads(features, labels, classes: int, lrs, weight_decays, schedule: Schedule,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trains one head per (lr, weight decay) pair on the same batches.

    Args:
        features: [N, D] frozen features of the training split.
        labels: [N] class ids.
        classes: the task's classes.
        lrs, weight_decays: one value per head (equal lengths).
        schedule: epochs, warm-up and batch size.
        seed: draws the initial weights and the batch order.

    Returns:
        (weights [heads, D, classes], biases [heads, classes]), float64.

    Raises:
        ValueError: `lrs` and `weight_decays` differ in length.
    """
    lrs, decays = np.asarray(lrs, np.float64), np.asarray(weight_decays, np.float64)
    if lrs.shape != decays.shape:
        raise ValueError(f"one weight decay per learning rate: {len(lrs)} and {len(decays)}")
    x = np.asarray(features, np.float64)
    targets = np.eye(classes)[np.asarray(labels, np.int64)]
    weights, biases = initial_heads(len(lrs), x.shape[1], classes, seed)
    trace_w, trace_b = np.zeros_like(weights), np.zeros_like(biases)
    for epoch, epoch_batches in batches(len(x), schedule, seed):
        rate = (lrs * schedule.rate(epoch))[:, None]
        for index in epoch_batches:
            batch = x[index]
            logits = batch @ weights + biases[:, None, :]  # [heads, B, classes]
            logits -= logits.max(axis=2, keepdims=True)
            probabilities = np.exp(logits)
            probabilities /= probabilities.sum(axis=2, keepdims=True)
            error = (probabilities - targets[index]) / len(index)
            grad_w = batch.T @ error + decays[:, None, None] * weights
            grad_b = error.sum(axis=1)
            trace_w = MOMENTUM * trace_w + grad_w
            trace_b = MOMENTUM * trace_b + grad_b
            weights = weights - rate[:, :, None] * trace_w
            biases = biases - rate * trace_b
    return weights, biases


def predict(weights, biases, features) -> np.ndarray:
    """[heads, N]: each head's predicted class for each item."""
    return np.argmax(np.asarray(features, np.float64) @ weights + biases[:, None, :], axis=2)
