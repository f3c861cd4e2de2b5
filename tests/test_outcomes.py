"""Per-example outcomes files: compact, atomic, checked on reading, aligned by their labels."""

import numpy as np
import pytest

from vitbench.evaluate import fewshot, outcomes


def test_predictions_round_trip_compactly_and_name_their_items(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 1000, 50_000)  # ImageNet's test split
    predicted = np.where(rng.uniform(size=50_000) < 0.8, labels, rng.integers(0, 1000, 50_000))
    entry = outcomes.write(tmp_path, "imagenet", "abc", {"test": predicted}, labels)
    path = tmp_path / entry["file"]
    assert entry["file"] == "runs/outcomes/imagenet/abc.npz"
    assert path.stat().st_size < 110_000  # about 100 kB a run
    assert entry["examples"] == 50_000 and entry["scores"] == ["test"]
    assert entry["labels_sha256"] == outcomes.labels_sha256(labels)
    stored = outcomes.read(tmp_path, entry)
    assert stored["test"].dtype == np.uint16
    np.testing.assert_array_equal(stored["test"], predicted)
    right = outcomes.read_correct(tmp_path, entry)
    assert list(right) == ["test"] and right["test"].dtype == bool
    np.testing.assert_array_equal(right["test"], predicted == labels)
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left over


def test_a_prediction_among_several_labels_is_right(tmp_path):
    labels = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0]])  # multi-hot (ImageNet-21k, ReaL)
    entry = outcomes.write(tmp_path, "s", "h", {"test": [2, 0, 1]}, labels)
    assert outcomes.read_correct(tmp_path, entry)["test"].tolist() == [True, False, False]


def test_more_classes_than_uint16_holds_are_kept_whole(tmp_path):
    labels = np.array([0, 70_000, 21_842])
    entry = outcomes.write(tmp_path, "s", "h", {"test": labels}, labels)
    stored = outcomes.read(tmp_path, entry)["test"]
    assert stored.dtype == np.uint32
    np.testing.assert_array_equal(stored, labels)


def test_an_altered_or_missing_file_and_other_items_are_refused(tmp_path):
    labels = np.array([1, 2, 3, 0])
    entry = outcomes.write(tmp_path, "s", "h", {"test": labels}, labels)
    (tmp_path / entry["file"]).write_bytes(b"not it")
    with pytest.raises(outcomes.OutcomesError, match="sha256 differs"):
        outcomes.read(tmp_path, entry)
    with pytest.raises(outcomes.OutcomesError, match="cannot be read"):
        outcomes.read(tmp_path / "elsewhere", entry)
    shuffled = outcomes.write(tmp_path, "s", "g", {"test": labels}, labels[::-1])
    outcomes.check_same_items(entry, dict(entry))
    with pytest.raises(outcomes.OutcomesError, match="different items"):
        outcomes.check_same_items(entry, shuffled)
    with pytest.raises(ValueError, match="another length"):
        outcomes.write(tmp_path, "s", "f", {"test": labels[:3]}, labels)


def test_each_few_shot_classifier_keeps_its_predictions():
    rng = np.random.default_rng(0)
    train_y, test_y = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 10)
    centres = rng.normal(size=(4, 8)) * 3
    train = (centres[train_y] + rng.normal(size=(80, 8)), train_y)
    test = (centres[test_y] + rng.normal(size=(40, 8)), test_y)
    predicted = {}
    result = fewshot.evaluate(train, test, 4, (1, 5), 2, 1.0, predictions=predicted)
    assert sorted(predicted) == ["1shot/seed0", "1shot/seed1", "5shot/seed0", "5shot/seed1"]
    for k in (1, 5):
        assert result["seeds"][f"{k}shot"] == [
            np.mean(predicted[f"{k}shot/seed{seed}"] == test_y) for seed in (0, 1)]
