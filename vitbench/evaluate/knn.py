"""Weighted k-nearest-neighbour classification of frozen features, as DINO evaluates
(`facebookresearch/dino` `eval_knn.py`, `knn_classifier`): features L2-normalised, cosine
similarity to every training example, the k most similar vote for their class with weight
exp(similarity / T), T = 0.07; the class with the most weight wins (ties: the lower class id).

The test items are scored in chunks whose similarity matrix stays under a memory budget, so
ImageNet's 1.28M training features against 50,000 test items run in bounded memory. Several
k are scored from one search for the largest.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURS = (10, 20, 100, 200)  # DINO's k
TEMPERATURE = 0.07
MEMORY_BYTES = 256 * 2**20  # the similarity chunk's budget


def normalized(features) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), float32."""
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def chunk_rows(train_examples: int, memory_bytes: int = MEMORY_BYTES) -> int:
    """Test items per chunk so that a chunk's float32 similarities to every training example
    fit in `memory_bytes` (at least one)."""
    return max(1, memory_bytes // (4 * max(train_examples, 1)))


def predict(train, test_features, num_classes: int, neighbours=NEIGHBOURS,
            temperature: float = TEMPERATURE, memory_bytes: int = MEMORY_BYTES
            ) -> dict[int, np.ndarray]:
    """Each test item's predicted class for each k.

    Args:
        train: (features [N, D], labels [N]) of the training split.
        test_features: [M, D].
        num_classes: the task's classes.
        neighbours: the k to score; a k above N uses all N training examples.
        temperature: T of the vote weights exp(similarity / T).
        memory_bytes: the budget of one chunk's similarity matrix.

    Returns:
        k -> predicted class per test item, int64 [M].

    Raises:
        ValueError: no training examples, or features of different widths.
    """
    train_features, train_labels = normalized(train[0]), np.asarray(train[1], np.int64)
    test_features = normalized(test_features)
    if not len(train_features):
        raise ValueError("kNN needs at least one training example")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"training features have {train_features.shape[1]} dimensions, test "
                         f"features {test_features.shape[1]}")
    ks = {k: min(k, len(train_features)) for k in neighbours}
    most = max(ks.values())
    predicted = {k: np.empty(len(test_features), np.int64) for k in ks}
    rows = chunk_rows(len(train_features), memory_bytes)
    for start in range(0, len(test_features), rows):
        similarity = test_features[start:start + rows] @ train_features.T
        nearest = np.argpartition(-similarity, most - 1, axis=1)[:, :most] \
            if most < similarity.shape[1] else np.broadcast_to(
                np.arange(similarity.shape[1]), similarity.shape)
        closest = np.take_along_axis(similarity, nearest, axis=1)
        order = np.argsort(-closest, axis=1, kind="stable")  # most similar first
        closest = np.take_along_axis(closest, order, axis=1)
        labels = train_labels[np.take_along_axis(nearest, order, axis=1)]
        weights = np.exp(closest / temperature)
        for k, used in ks.items():
            votes = np.zeros((len(labels), num_classes), np.float64)
            np.add.at(votes, (np.arange(len(labels))[:, None], labels[:, :used]),
                      weights[:, :used])
            predicted[k][start:start + len(labels)] = votes.argmax(axis=1)
    return predicted
