"""TFDS builders of vitbench's own datasets; importing this package registers them with TFDS."""

from vitbench.data.builders import demo, imagenet21k  # noqa: F401
