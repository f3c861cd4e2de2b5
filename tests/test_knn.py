"""kNN on frozen features against a numpy port of DINO's `knn_classifier`, in chunks."""

import numpy as np
import pytest

from vitbench.evaluate import knn


def dino_port(train_features, train_labels, test_features, k, temperature, num_classes):
    """DINO's eval_knn.py `knn_classifier`, item by item in numpy: L2-normalised features,
    the top-k cosine similarities, one-hot votes weighted by exp(similarity / T), argmax."""
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    train_features, test_features = unit(train_features), unit(test_features)
    predictions = []
    for feature in test_features:
        similarity = train_features @ feature
        top = np.argsort(-similarity)[:k]
        votes = np.zeros(num_classes)
        for index in top:
            votes[train_labels[index]] += np.exp(similarity[index] / temperature)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


CENTRES = np.random.default_rng(9).normal(size=(7, 16))


def clustered(rng, examples):
    """Features around one centre per class (7 classes, 16 dimensions)."""
    centres = CENTRES
    labels = rng.integers(0, len(centres), examples)
    return centres[labels] + rng.normal(scale=1.5, size=(examples, 16)), labels


def test_knn_equals_dinos_formula_for_each_k():
    rng = np.random.default_rng(0)
    train = clustered(rng, 300)
    test_features, test_labels = clustered(rng, 120)
    ours = knn.predict(train, test_features, 7, neighbours=(1, 10, 20, 100, 200))
    for k, predicted in ours.items():
        np.testing.assert_array_equal(
            predicted, dino_port(*train, test_features, k, knn.TEMPERATURE, 7))
    assert np.mean(ours[20] == test_labels) > 0.5  # well above chance (1/7)


def test_chunks_bound_memory_and_change_nothing():
    rng = np.random.default_rng(1)
    train = clustered(rng, 500)
    test_features, _ = clustered(rng, 90)
    budget = 4 * 500 * 8  # eight test items' similarities per chunk
    assert knn.chunk_rows(500, budget) == 8
    assert knn.chunk_rows(1_281_167) == 52  # ImageNet's training split: 256 MiB a chunk
    small = knn.predict(train, test_features, 7, memory_bytes=budget)
    whole = knn.predict(train, test_features, 7)
    for k in knn.NEIGHBOURS:
        np.testing.assert_array_equal(small[k], whole[k])


def test_k_above_the_training_examples_uses_them_all_and_bad_input_is_refused():
    rng = np.random.default_rng(2)
    train = clustered(rng, 15)
    test_features, _ = clustered(rng, 5)
    ours = knn.predict(train, test_features, 7, neighbours=(200,))
    np.testing.assert_array_equal(
        ours[200], dino_port(*train, test_features, 15, knn.TEMPERATURE, 7))
    with pytest.raises(ValueError, match="at least one training example"):
        knn.predict((np.zeros((0, 16)), np.zeros(0)), test_features, 7)
    with pytest.raises(ValueError, match="16 dimensions, test features 3"):
        knn.predict(train, test_features[:, :3], 7)
