"""A small training split kept on the accelerator (JAX), indexed there at every step.

The task's train preprocessing splits at its first random op: what comes before it (decode,
label, fix-ups, a resize) runs once per image on the host, and the images are kept on the
device, padded to the largest; the rest (`inception_crop`, `flip_lr`, `value_range`) runs on
the device. The host only draws, per example, what the tf.data pipeline would draw (the
shuffled order, the crop window, the flip), with the same seeds, so the batches equal
`pipeline.train_dataset`'s up to float rounding. Design notes: docs/design/data.md.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from vitbench.data import ops, pipeline, registry, sources

MAX_EXAMPLES = 20_000  # splits larger than this stay on the host pipeline
CPU_MAX_BYTES = 4 * 2**30  # a CPU's budget for the images; an accelerator's: MEMORY_FRACTION
MEMORY_FRACTION = 1 / 8


class Unsupported(ValueError):
    """The split cannot be kept on the device; the message says why."""


@dataclasses.dataclass(frozen=True)
class DeviceData:
    """A preprocessed split on the device: `images` (padded to the largest, in the dtype the
    host steps left them), each image's own (height, width) in `sizes`, `labels`, and the
    device ops (name, arguments) that finish every batch."""

    images: jax.Array
    sizes: np.ndarray
    labels: jax.Array
    device_ops: tuple

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)


def split_spec(spec: str) -> tuple[str, tuple]:
    """(host spec, device ops) of a train spec: the ops before its first random op, and the
    rest as (name, arguments), the arguments bound to the host op's own parameters (its
    defaults included: one definition serves both).

    Raises:
        Unsupported: an op after the first random op has no on-device version, or a crop
            comes after another device op.
    """
    calls = registry.calls(spec)
    first = next((i for i, (name, _, _) in enumerate(calls) if name in ops.RANDOM_OPS),
                 len(calls))
    rest = [name for name, _, _ in calls[first:]]
    for position, name in enumerate(rest):
        if name not in DEVICE_FUNCTIONS:
            raise Unsupported(f"op {name!r} after a random op has no on-device version "
                              f"(on the device: {', '.join(DEVICE_FUNCTIONS)})")
        if name == "inception_crop" and position:
            raise Unsupported("inception_crop runs on the device only as its first op")
        if rest.count(name) > 1 and name != "keep":
            raise Unsupported(f"op {name!r} appears twice after the first random op")
    host = "|".join(registry.pieces(spec)[:first])
    return host, tuple((name, _arguments(name, args, kwargs)) for name, args, kwargs in
                       calls[first:])


def _arguments(name: str, args, kwargs) -> dict:
    """The op's arguments by parameter name, its defaults filled in."""
    bound = inspect.signature(registry.OPS[name]).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def budget() -> int:
    """Bytes the images may take: MEMORY_FRACTION of an accelerator's memory, CPU_MAX_BYTES
    on a CPU (or where the device does not say)."""
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit * MEMORY_FRACTION) if limit else CPU_MAX_BYTES


def load(task, split: str, data_dir=None, max_bytes: int | None = None) -> DeviceData:
    """The task's `split` run through the host part of its train preprocessing, on the
    device.

    Raises:
        Unsupported: the split is larger than MAX_EXAMPLES or its images than `max_bytes`
            (default `budget()`), its labels are multi-hot, its preprocessing has no on-device
            rest (`split_spec`), or its images differ in size with no crop to one size.
        KeyError: `task` has no such split; OSError, ValueError: unreadable data.
    """
    host, device_ops = split_spec(task.pp("train"))
    max_bytes = budget() if max_bytes is None else max_bytes
    expression = task.split(split)
    count = sources.num_examples(task, expression, data_dir)
    if count is not None and count > MAX_EXAMPLES:
        raise Unsupported(f"{count} examples: more than the {MAX_EXAMPLES} kept on the device")
    chain = registry.chain(host)
    images, labels, total = [], [], 0
    for example in sources.read(task, expression, data_dir).map(chain).as_numpy_iterator():
        if "labels" in example:
            raise Unsupported("multi-hot labels stay on the host pipeline")
        images.append(example["image"])
        labels.append(example["label"])
        total += example["image"].nbytes
        if len(images) > MAX_EXAMPLES:  # where the metadata did not tell the count
            raise Unsupported(f"more than the {MAX_EXAMPLES} examples kept on the device")
        if total > max_bytes:
            raise Unsupported(f"the images take more than {max_bytes / 2**30:.1f} GiB")
    if not images:
        raise Unsupported(f"split {expression!r} has no examples")
    sizes = np.asarray([image.shape[:2] for image in images], np.int32)
    height, width = sizes.max(axis=0)
    if (sizes != sizes[0]).any() and (not device_ops or device_ops[0][0] != "inception_crop"):
        raise Unsupported("the images differ in size and no crop on the device makes them one")
    padded_bytes = len(images) * height * width * images[0].shape[2] * images[0].itemsize
    if padded_bytes > max_bytes:
        raise Unsupported(f"the images, padded to {height}x{width}, take "
                          f"{padded_bytes / 2**30:.1f} GiB, more than {max_bytes / 2**30:.1f}")
    stacked = np.zeros((len(images), height, width, images[0].shape[2]), images[0].dtype)
    for index, image in enumerate(images):
        stacked[index, :image.shape[0], :image.shape[1]] = image
    return DeviceData(jax.device_put(stacked), sizes, jax.device_put(np.asarray(labels)),
                      device_ops)


def draws(data: DeviceData, batch_size: int, seed: int = 0, start_batch: int = 0
          ) -> tf.data.Dataset:
    """Endless batches of what `pipeline.train_dataset` draws per example, on the host: the
    example's index in the shuffled order, its crop window (top, left, height, width) and
    whether it is flipped, from the same seeds."""
    sizes, channels = tf.constant(data.sizes), data.images.shape[-1]
    by_name = dict(data.device_ops)

    def draw(index, rng):
        drawn = {"index": index}
        if "inception_crop" in by_name:
            crop = by_name["inception_crop"]
            shape = tf.concat([sizes[index], [channels]], axis=0)
            begin, size = ops.inception_crop_box(shape, ops.op_seed(rng, "inception_crop"),
                                                 crop["area_min"], crop["area_max"])
            drawn["box"] = tf.concat([begin[:2], size[:2]], axis=0)
        if "flip_lr" in by_name:
            drawn["flip"] = ops.flips(ops.op_seed(rng, "flip_lr"))
        return drawn

    dataset = pipeline.shuffled(tf.data.Dataset.range(len(data)), seed, start_batch * batch_size)
    return dataset.map(draw).batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def batches(data: DeviceData, batch_size: int, seed: int = 0, start_batch: int = 0,
            image_dtype: str = "float32") -> Iterator[tuple[jax.Array, jax.Array]]:
    """Endless (images, labels) batches on the device, equal to `pipeline.train_dataset`'s
    up to float rounding."""
    finish = jax.jit(lambda images, labels, drawn: _finish(images, labels, drawn,
                                                           data.device_ops, image_dtype))
    drawn_batches = draws(data, batch_size, seed, start_batch)  # now: TF's seeds as they are
    return (finish(data.images, data.labels, drawn)
            for drawn in drawn_batches.as_numpy_iterator())


def _finish(images, labels, drawn, device_ops, image_dtype):
    index = drawn["index"]
    batch = images[index]
    for name, arguments in device_ops:
        batch = DEVICE_FUNCTIONS[name](batch, drawn, **arguments)
    return batch.astype(image_dtype), labels[index]


def _inception_crop(batch, drawn, size, area_min, area_max):
    """Each image's window resized to `size` as `tf.image.resize` does (bilinear, half-pixel
    centres, no antialiasing)."""
    height, width = (size, size) if isinstance(size, int) else size
    return jax.vmap(lambda image, box: _crop_resize(image, box, height, width))(
        batch, drawn["box"])


def _axis(start, length, out_size):
    """TF's bilinear source pixels (lower, upper) and weights along one axis of a window."""
    scale = length.astype(jnp.float32) / out_size
    position = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale - 0.5
    floor = jnp.floor(position)
    lower = jnp.maximum(floor, 0).astype(jnp.int32)
    upper = jnp.minimum(jnp.ceil(position), (length - 1).astype(jnp.float32)).astype(jnp.int32)
    return start + lower, start + upper, position - floor


def _crop_resize(image, box, height, width):
    top, left, crop_height, crop_width = box[0], box[1], box[2], box[3]
    y0, y1, y_lerp = _axis(top, crop_height, height)
    x0, x1, x_lerp = _axis(left, crop_width, width)
    image = image.astype(jnp.float32)
    rows0, rows1 = image[y0], image[y1]
    x_lerp = x_lerp[None, :, None]
    top_row = rows0[:, x0] + (rows0[:, x1] - rows0[:, x0]) * x_lerp
    bottom_row = rows1[:, x0] + (rows1[:, x1] - rows1[:, x0]) * x_lerp
    return top_row + (bottom_row - top_row) * y_lerp[:, None, None]


def _flip_lr(batch, drawn):
    return jnp.where(drawn["flip"][:, None, None, None], batch[:, :, ::-1], batch)


def _value_range(batch, drawn, low, high, in_low, in_high):
    return (batch.astype(jnp.float32) - in_low) / (in_high - in_low) * (high - low) + low


DEVICE_FUNCTIONS = {"inception_crop": _inception_crop, "flip_lr": _flip_lr,
                    "value_range": _value_range, "keep": lambda batch, drawn, keys: batch}
