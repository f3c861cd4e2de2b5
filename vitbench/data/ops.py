"""Image preprocessing ops (registered by name; see `vitbench.data.registry`).

Each op reads and writes `example["image"]`. Random ops draw from `example["_rng"]`, a
stateless seed of shape (2,) that the pipeline gives every example, so augmentation is
reproducible from the run's seed and independent of threading.
"""

from __future__ import annotations

import zlib

import tensorflow as tf

from vitbench.data.op_table import register


def _image_op(transform):
    """Wraps `transform(image) -> image` as an example op."""

    def op(example):
        return {**example, "image": transform(tf.convert_to_tensor(example["image"]))}

    return op


# The ops that draw random numbers (from the example's `_rng`).
RANDOM_OPS = ("random_crop", "inception_crop", "flip_lr")


def op_seed(rng, name: str):
    """The stateless seed op `name` draws from, derived from an example's `_rng`."""
    return tf.random.experimental.stateless_fold_in(rng, zlib.crc32(name.encode()) % (2 ** 31))


def _random_image_op(name, transform):
    """Wraps `transform(image, seed) -> image`, with a seed derived from the example's `_rng`."""

    def op(example):
        if "_rng" not in example:
            raise KeyError(f"random op {name!r} needs the example's '_rng' seed; the training "
                           "pipeline adds it (evaluation specs must not use random ops)")
        seed = op_seed(example["_rng"], name)
        return {**example, "image": transform(tf.convert_to_tensor(example["image"]), seed)}

    return op


def _hw(size):
    return (size, size) if isinstance(size, int) else tuple(size)


@register("decode")
def decode(channels=3):
    """Decodes encoded image bytes (JPEG, PNG, ...); already-decoded images pass unchanged."""

    def transform(image):
        if image.dtype != tf.string:
            return image
        decoded = tf.io.decode_image(image, channels=channels, expand_animations=False)
        return tf.ensure_shape(decoded, [None, None, channels])

    return _image_op(transform)


@register("to_rgb")
def to_rgb():
    """Tiles a one-channel image to three channels (dSprites, smallNORB)."""
    return _image_op(lambda image: tf.image.grayscale_to_rgb(image)
                     if image.shape[-1] == 1 else image)


@register("scale")
def scale(factor):
    """Multiplies pixel values, keeping the dtype (dSprites stores 0/1: `scale(255)`)."""
    return _image_op(lambda image: tf.cast(tf.cast(image, tf.float32) * factor, image.dtype))


@register("resize")
def resize(size, method="bilinear"):
    """Resizes to exactly `size` (int or (h, w)), ignoring the aspect ratio."""
    return _image_op(lambda image: tf.image.resize(image, _hw(size), method=method))


@register("resize_small")
def resize_small(size, method="bilinear"):
    """Resizes so that the shorter side is `size`, keeping the aspect ratio."""

    def transform(image):
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        factor = size / tf.reduce_min(shape)
        return tf.image.resize(image, tf.cast(tf.round(shape * factor), tf.int32), method=method)

    return _image_op(transform)


@register("central_crop")
def central_crop(size):
    """Crops the central `size` (int or (h, w))."""
    height, width = _hw(size)

    def transform(image):
        shape = tf.shape(image)
        top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
        return image[top:top + height, left:left + width]

    return _image_op(transform)


@register("random_crop")
def random_crop(size):
    """Crops a random `size` window."""
    height, width = _hw(size)

    def transform(image, seed):
        return tf.image.stateless_random_crop(image, [height, width, tf.shape(image)[2]], seed)

    return _random_image_op("random_crop", transform)


@register("inception_crop")
def inception_crop(size, area_min=5, area_max=100):
    """Random crop covering `area_min`..`area_max` % of the image, resized to `size`.

    As `vit_jax/input_pipeline.py`: `sample_distorted_bounding_box` with aspect ratios
    3/4..4/3 and no object to cover.
    """

    def transform(image, seed):
        begin, crop_size = inception_crop_box(tf.shape(image), seed, area_min, area_max)
        crop = tf.slice(image, begin, crop_size)
        return tf.image.resize(crop, _hw(size))

    return _random_image_op("inception_crop", transform)


def inception_crop_box(shape, seed, area_min=5, area_max=100):
    """(begin, size) of `inception_crop`'s window in an image of `shape` (h, w, channels)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
        area_range=(area_min / 100, area_max / 100), min_object_covered=0,
        use_image_if_no_bounding_boxes=True)
    return begin, crop_size


@register("flip_lr")
def flip_lr():
    """Flips left-right with probability 1/2."""
    return _random_image_op("flip_lr", tf.image.stateless_random_flip_left_right)


def flips(seed):
    """Whether `flip_lr` flips with `seed`: the op itself, applied to a two-pixel probe."""
    probe = tf.constant([[[0.0], [1.0]]])
    return tf.image.stateless_random_flip_left_right(probe, seed)[0, 0, 0] > 0.5


@register("value_range")
def value_range(low=-1.0, high=1.0, in_low=0.0, in_high=255.0):
    """Maps pixel values linearly from [in_low, in_high] to float32 [low, high]."""

    def transform(image):
        image = (tf.cast(image, tf.float32) - in_low) / (in_high - in_low)
        return image * (high - low) + low

    return _image_op(transform)


@register("keep")
def keep(*keys):
    """Drops every feature but `keys`."""
    return lambda example: {key: example[key] for key in keys}
