"""Pretraining losses by name, and the top-1 accuracy that suits both.

`softmax`: softmax cross-entropy on integer labels, for datasets with one class per image.
`sigmoid`: sigmoid cross-entropy summed over the classes and averaged over the batch (as
big_vision's `sigmoid_xent`), for multi-label data such as ImageNet-21k, whose WordNet classes
overlap; integer labels are one-hot encoded, multi-hot label vectors are used as they are.
`loss_for_labels` picks one from a dataset's label feature.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vitbench")
class SigmoidCrossEntropy(keras.losses.Loss):
    """Per-example sum over classes of the sigmoid cross-entropy; the batch mean by default."""

    def __init__(self, name="sigmoid_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        if len(y_true.shape) < len(logits.shape):  # integer class ids
            y_true = ops.one_hot(ops.cast(y_true, "int32"), logits.shape[-1])
        y_true = ops.cast(y_true, "float32")
        # log(sigmoid(x)) = -softplus(-x); log(1 - sigmoid(x)) = -softplus(x)
        terms = y_true * ops.softplus(-logits) + (1.0 - y_true) * ops.softplus(logits)
        return ops.sum(terms, axis=-1)


def softmax_cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


LOSSES = {"softmax": softmax_cross_entropy, "sigmoid": SigmoidCrossEntropy}


def get_loss(name: str) -> keras.losses.Loss:
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]()


@keras.saving.register_keras_serializable(package="vitbench")
def top1_accuracy(y_true, y_pred):
    """1 where the highest logit is the label (integer labels) or one of the labels
    (multi-hot vectors: precision@1), else 0."""
    predicted = ops.argmax(y_pred, axis=-1)
    if len(y_true.shape) < len(y_pred.shape):
        return ops.cast(ops.equal(ops.cast(y_true, "int32"), ops.cast(predicted, "int32")),
                        "float32")
    hit = ops.take_along_axis(ops.cast(y_true, "float32"),
                              ops.expand_dims(predicted, -1), axis=-1)
    return ops.cast(ops.squeeze(hit, -1) > 0, "float32")


def loss_for_labels(label_feature) -> str:
    """'sigmoid' for a TFDS label feature that lists several classes per image
    (`Sequence(ClassLabel)`), 'softmax' for one class per image (`ClassLabel`)."""
    import tensorflow_datasets as tfds

    if isinstance(label_feature, tfds.features.ClassLabel):
        return "softmax"
    if isinstance(label_feature, tfds.features.Sequence) and isinstance(
            label_feature.feature, tfds.features.ClassLabel):
        return "sigmoid"
    raise ValueError(f"cannot tell single- from multi-label data from a label feature of type "
                     f"{type(label_feature).__name__}; set `loss` ('softmax' or 'sigmoid') in "
                     "the recipe")
