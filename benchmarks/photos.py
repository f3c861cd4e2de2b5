#!/usr/bin/env python3
"""The input pipelines on photographs: ImageNet-like JPEGs (500 x 375, quality 90) cut from
matplotlib's sample photograph into a folder task, timed by `vitbench bench --mode pipeline`
at 384 px (the fine-tuning resolution of the paper's protocols).

    python benchmarks/photos.py [--out DIR] [--resolution 384] [--batches 30]

The demo dataset's 32 px PNGs decode far faster than photographs; this is the figure to size a
machine's CPU cores by. Needs Pillow (with matplotlib, a vitbench dependency).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

SIZE = (500, 375)  # about ImageNet's mean image size
IMAGES = {"train": 256, "test": 64}


def write_photos(root: pathlib.Path, seed: int = 0, counts: dict | None = None) -> None:
    """Random crops (half to all of each side) of the sample photograph, resized to SIZE, half
    of them mirrored, in two class folders per split (`counts`: images per split; default
    IMAGES)."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    rng = np.random.default_rng(seed)
    width, height = photo.size
    for split, count in (counts or IMAGES).items():
        for i in range(count):
            w, h = int(width * rng.uniform(0.5, 1)), int(height * rng.uniform(0.5, 1))
            x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
            image = photo.crop((x, y, x + w, y + h)).resize(SIZE, Image.BICUBIC)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            folder = root / split / f"class{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{i}.jpg", quality=90)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/vitbench_photos")
    parser.add_argument("--resolution", type=int, default=384)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if not (out / "photos").is_dir():
        write_photos(out / "photos")
    suite = out / "photos.toml"
    suite.write_text(
        'name = "photos"\ndescription = "ImageNet-like JPEGs"\n[protocol]\n'
        f"resolution = {args.resolution}\n[[task]]\n"
        f'name = "photos"\ngroup = "custom"\nsource = "folder"\ndataset = "{out / "photos"}"\n'
        'num_classes = 2\nsplits = { train = "train", test = "test" }\n')
    from vitbench import cli

    return cli.main(["bench", "--mode=pipeline", f"--suite={suite}",
                     f"--batches={args.batches}"])


if __name__ == "__main__":
    sys.exit(main())
