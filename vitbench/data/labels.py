"""Label transforms (registered ops that write `example["label"]`).

The VTAB-1k ones reproduce `google-research/task_adaptation/data/*.py` exactly; see
`../shared/spec/tasks.md` in the project for the derivations.
"""

from __future__ import annotations

import tensorflow as tf

from vitbench.data.op_table import register


def feature(example, path: str):
    """A (possibly nested, '/'-separated) feature of an example."""
    value = example
    for part in path.split("/"):
        value = value[part]
    return value


def _set_label(example, label):
    return {**example, "label": tf.cast(label, tf.int64)}


def _bin_index(value, thresholds):
    """Largest i with thresholds[i] < value (VTAB's `tf.reduce_max(tf.where(thrs - d < 0))`)."""
    below = tf.cast(tf.constant(thresholds, tf.float32) < tf.cast(value, tf.float32), tf.int64)
    return tf.reduce_sum(below) - 1


@register("label_from")
def label_from(key):
    """label = the feature `key` as it is (e.g. smallNORB's `label_azimuth`)."""
    return lambda example: _set_label(example, feature(example, key))


@register("bin_label")
def bin_label(key, factor):
    """label = floor(feature / factor): dSprites position 32 -> 16 bins (2.0), orientation
    40 -> 16 bins (2.5)."""
    return lambda example: _set_label(
        example, tf.math.floor(tf.cast(feature(example, key), tf.float32) / factor))


@register("clevr_count_all")
def clevr_count_all():
    """label = number of objects - 3 (CLEVR scenes hold 3..10 objects: 8 classes)."""
    return lambda example: _set_label(example, tf.size(feature(example, "objects/size")) - 3)


CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)


@register("clevr_closest_object_distance")
def clevr_closest_object_distance():
    """label = bin of the smallest object depth (pixel_coords z) over CLEVR's thresholds."""

    def op(example):
        depth = tf.reduce_min(feature(example, "objects/pixel_coords")[:, 2])
        return _set_label(example, _bin_index(depth, CLEVR_DISTANCE_THRESHOLDS))

    return op


KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE_DISTANCE = 1000.0


@register("kitti_closest_vehicle_distance")
def kitti_closest_vehicle_distance():
    """label = bin of the nearest vehicle's z (Car, Van, Truck: type < 3); 3 if there is none."""

    def op(example):
        vehicles = feature(example, "objects/type") < 3
        depths = tf.boolean_mask(feature(example, "objects/location")[:, 2], vehicles)
        nearest = tf.reduce_min(tf.concat([tf.cast(depths, tf.float32),
                                           [KITTI_NO_VEHICLE_DISTANCE]], axis=0))
        return _set_label(example, _bin_index(nearest, KITTI_DISTANCE_THRESHOLDS))

    return op


@register("multi_hot")
def multi_hot(key, num_classes, output="labels"):
    """A 0/1 vector of length `num_classes` marking the ids in the list feature `key`
    (ImageNet-ReaL's `real_label`; an empty list gives all zeros)."""

    def op(example):
        ids = tf.cast(feature(example, key), tf.int64)
        counts = tf.reduce_sum(tf.one_hot(ids, num_classes, dtype=tf.float32), axis=0)
        return {**example, output: tf.minimum(counts, 1.0)}

    return op



@register("joint_label")
def joint_label(keys, sizes):
    """label = the combination of several class features, numbered in row-major order:
    `joint_label(['shape', 'color'], [3, 4])` gives shape * 4 + color (12 classes)."""
    if len(keys) != len(sizes):
        raise ValueError(f"joint_label: {len(keys)} keys but {len(sizes)} sizes")

    def op(example):
        label = tf.constant(0, tf.int64)
        for key, size in zip(keys, sizes):
            label = label * size + tf.cast(feature(example, key), tf.int64)
        return _set_label(example, label)

    return op
