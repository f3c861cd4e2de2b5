"""`vitbench_demo`: a procedurally rendered dataset in the spirit of dSprites and CLEVR.

32x32 images of 1 to 4 objects; labels `count`, `shape`, `color`, `x_position`; splits `train`,
`validation`, `test` and a ten times larger `upstream` for pretraining. Generation needs no
download and is deterministic (example i of a split is drawn with the seed (split, i)).
Design notes: docs/design/data.md.
"""

from __future__ import annotations

import zlib

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
SHAPES = ("square", "circle", "triangle")
COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230),
          "yellow": (230, 210, 40)}
MAX_OBJECTS = 4
SPLIT_SIZES = {"train": 2000, "validation": 500, "test": 500, "upstream": 20000}
BACKGROUND_MAX = 40  # background pixels stay below this value in every channel


def _mask(shape: str, size: int) -> np.ndarray:
    """A boolean size x size mask of the shape."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        return (rows - size / 2) ** 2 + (cols - size / 2) ** 2 <= (size / 2) ** 2
    # triangle: apex at the top centre, base along the bottom row
    return np.abs(cols - size / 2) <= rows / 2


def render(rng: np.random.Generator):
    """One example: (image uint8 HxWx3, labels dict, objects dict)."""
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    shape = int(rng.integers(len(SHAPES)))
    color = int(rng.integers(len(COLORS)))
    image = rng.integers(0, BACKGROUND_MAX, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
    half = IMAGE_SIZE // 2
    quadrants = rng.permutation(4)[:count]
    rgb = np.array(list(COLORS.values())[color], np.int16)
    xs, ys, sizes = [], [], []
    for quadrant in quadrants:
        size = int(rng.integers(7, 12))
        top = (quadrant // 2) * half + int(rng.integers(1, half - size))
        left = (quadrant % 2) * half + int(rng.integers(1, half - size))
        mask = _mask(SHAPES[shape], size)
        jitter = rng.integers(-15, 16, 3)
        patch = image[top:top + size, left:left + size]
        patch[mask] = np.clip(rgb + jitter, 0, 255).astype(np.uint8)
        xs.append((left + size / 2) / IMAGE_SIZE)
        ys.append((top + size / 2) / IMAGE_SIZE)
        sizes.append(size)
    labels = {"count": count - 1, "shape": shape, "color": color,
              "x_position": min(int(xs[0] * 4), 3)}
    objects = {"x": np.array(xs, np.float32), "y": np.array(ys, np.float32),
               "size": np.array(sizes, np.int64)}
    return image, labels, objects


class VitbenchDemo(tfds.core.GeneratorBasedBuilder):
    """Rendered shapes for offline demos and tests (count, shape, colour, position)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "An `upstream` split of 20000 images for pretraining; the other "
                              "splits are unchanged."}
    GENERATED_LOCALLY = True  # nothing is downloaded

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
                "count": tfds.features.ClassLabel(
                    names=[str(n) for n in range(1, MAX_OBJECTS + 1)]),
                "shape": tfds.features.ClassLabel(names=list(SHAPES)),
                "color": tfds.features.ClassLabel(names=list(COLORS)),
                "x_position": tfds.features.ClassLabel(num_classes=4),
                "objects": tfds.features.Sequence({
                    "x": np.float32, "y": np.float32, "size": np.int64}),
            }),
            homepage="https://github.com/vitbench",
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, size)
                for split, size in SPLIT_SIZES.items()}

    def _generate_examples(self, split, size):
        salt = zlib.crc32(split.encode())
        for index in range(size):
            image, labels, objects = render(np.random.default_rng([salt, index]))
            yield index, {"image": image, **labels, "objects": objects}
