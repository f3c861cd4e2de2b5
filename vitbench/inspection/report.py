"""`vitbench inspect`: the paper's four pictures of a checkpoint, the numbers behind them and a
markdown page that shows them, written into one directory.

Files written (names in `FILES`): four `.png` figures, `quantities.npz` (every number drawn),
`attention_distance.csv` (per layer and head) and `index.md` (the page).
Design notes: docs/design/inspection.md.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import pathlib
import re
from collections.abc import Iterable

import numpy as np

from vitbench import files, tasks
from vitbench.checkpoints.loader import load_model
from vitbench.data import pipeline, registry
from vitbench.inspection import figures, quantities

FILES = {"embedding_filters": "embedding_filters.png",
         "position_similarity": "position_similarity.png",
         "attention_distance": "attention_distance.png",
         "attention_rollout": "attention_rollout.png",
         "numbers": "quantities.npz", "distances": "attention_distance.csv", "page": "index.md"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
DEMO_TASK = ("demo", "demo_shape")  # suite and task whose test images are the default inputs


def default_out_dir(ckpt: str, results_dir="results") -> pathlib.Path:
    """results/figures/<a file-name-safe name of the checkpoint>."""
    name = pathlib.PurePosixPath(str(ckpt).rstrip("/")).name
    name = re.sub(r"\.(npz|keras|safetensors|pth|pt|bin)$", "", name) or "checkpoint"
    return pathlib.Path(results_dir) / "figures" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _image_files(root: pathlib.Path):
    """The image files under `root` in sorted order (a folder's files, then its subfolders),
    walked lazily: taking 32 from an ImageNet-size tree lists only the first folders."""
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            if pathlib.Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield pathlib.Path(folder) / name


def read_image_dir(directory, size, count: int) -> np.ndarray:
    """Up to `count` images of `directory` and its subfolders (a task's class folders, say),
    in `_image_files` order, preprocessed as evaluation does (`decode|resize|value_range(-1,
    1)`, the eval pipeline's ops) at `size` (h, w)."""
    import tensorflow as tf

    root = pathlib.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"--images: {root} is not a directory")
    paths = list(itertools.islice(_image_files(root), count))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory} or "
                                "its subfolders")
    preprocess = registry.chain(f"decode|resize({tuple(size)})|value_range(-1, 1)")
    images = []
    for path in paths:
        try:
            images.append(preprocess({"image": tf.io.read_file(str(path))})["image"].numpy())
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(f"{path} is not a readable image ({error.message.strip()}); "
                             "remove it or pass another --images folder") from None
    return np.stack(images).astype(np.float32)


def demo_images(size, count: int, data_dir=None) -> np.ndarray:
    """The first `count` test images of the demo dataset (rendered offline), at `size`."""
    suite, name = DEMO_TASK
    task = tasks.load_suite(suite).task(name)
    resolution = size[0] if size[0] == size[1] else tuple(size)
    task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol,
                                                                  resolution=resolution))
    batch = next(pipeline.as_numpy(pipeline.eval_dataset(task, "test", count,
                                                         data_dir=data_dir)))
    return batch["image"].astype(np.float32)


def attention_in_batches(model, images: np.ndarray, batch_size: int) -> Iterable[list]:
    """The model's attention weights (one (batch, heads, tokens, tokens) array per layer),
    `batch_size` images at a time."""
    import keras

    for start in range(0, len(images), batch_size):
        _, attention = model.attention_maps(images[start:start + batch_size])
        yield [keras.ops.convert_to_numpy(weights).astype(np.float32) for weights in attention]


def compute(model, images: np.ndarray, rollout_count: int = 8, batch_size: int = 16) -> dict:
    """Every quantity the figures show, for `model` (a VisionTransformer) on `images`.

    Args:
        model: a `VisionTransformer` (flash attention off: it reads the attention weights).
        images: float NHWC images in [-1, 1] at the model's resolution.
        rollout_count: how many of the first images get a rollout map.
        batch_size: images per attention pass.

    Returns:
        Name -> numpy array: embedding components and their explained variance, position
        similarity, attention distance per layer and head, rollout maps and their images,
        grid, patch size, image size, images used.
    """
    import keras

    config = model.config
    grid = config.grid(model.image_size)
    prefix = config.num_prefix_tokens
    kernel = keras.ops.convert_to_numpy(model.get_layer("embedding").kernel)
    pos_embedding = keras.ops.convert_to_numpy(model.get_layer("posembed_input").pos_embedding)
    components, explained = quantities.embedding_components(kernel)
    distance_sum, rollout_maps = 0.0, []
    for attention in attention_in_batches(model, images, batch_size):
        # Weighted by the batch's size, so the mean is over all images.
        distance_sum = distance_sum + len(attention[0]) * quantities.mean_attention_distance(
            attention, grid, config.patch_size, prefix)
        if sum(len(m) for m in rollout_maps) < rollout_count:
            rollout = quantities.attention_rollout(attention)
            rollout_maps.append(quantities.output_rollout_map(rollout, grid, config.classifier,
                                                              prefix))
    rollout_maps = np.concatenate(rollout_maps)[:rollout_count]
    return {"embedding_components": components, "embedding_explained": explained,
            "position_similarity": quantities.position_similarity(
                pos_embedding, grid, config.posemb_prefix_tokens),
            "attention_distance": distance_sum / len(images),
            "rollout_maps": rollout_maps, "rollout_images": images[:len(rollout_maps)],
            "grid": np.array(grid), "patch_size": np.array(config.patch_size),
            "image_size": np.array(model.image_size), "images_used": np.array(len(images))}


def write(numbers: dict, out_dir, title: str) -> dict:
    """Draws the figures and writes the numbers and the page into `out_dir`; returns the
    paths by kind (see FILES).

    Args:
        numbers: what `compute` returns.
        out_dir: the folder to write into (made if missing; files in it are replaced).
        title: the page's heading.

    Returns:
        Kind (a key of `FILES`) -> path written.

    Raises:
        OSError: the folder or a file cannot be written.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in FILES.items()}
    figures.embedding_filters(numbers["embedding_components"], numbers["embedding_explained"],
                              paths["embedding_filters"])
    figures.position_similarity(numbers["position_similarity"], paths["position_similarity"])
    grid, patch = numbers["grid"], int(numbers["patch_size"])
    figures.attention_distance(numbers["attention_distance"], paths["attention_distance"],
                               float(np.hypot(*(grid - 1))) * patch)
    figures.attention_rollout(numbers["rollout_images"], numbers["rollout_maps"],
                              paths["attention_rollout"])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **numbers)
    files.write_atomic(paths["numbers"], buffer.getvalue())
    rows = ["layer,head,mean_attention_distance_px"] + [
        f"{layer + 1},{head + 1},{value:.4f}"
        for (layer, head), value in np.ndenumerate(numbers["attention_distance"])]
    files.write_atomic(paths["distances"], "\n".join(rows) + "\n")
    files.write_atomic(paths["page"], page(numbers, title))
    return paths


def page(numbers: dict, title: str) -> str:
    """The markdown page: each figure, what it shows and the numbers that summarise it."""
    distances = numbers["attention_distance"]
    explained = numbers["embedding_explained"]
    grid, size = tuple(numbers["grid"]), tuple(numbers["image_size"])
    similarity = numbers["position_similarity"].reshape(grid[0] * grid[1], -1)
    neighbours = _neighbour_similarity(numbers["position_similarity"])
    layer_means = ", ".join(f"{value:.1f}" for value in distances.mean(axis=1))
    return "\n".join([
        f"# {title}", "",
        f"{size[0]}x{size[1]} px input, {grid[0]}x{grid[1]} patches of "
        f"{int(numbers['patch_size'])} px; attention measured on {int(numbers['images_used'])} "
        "images. The numbers behind every figure are in `quantities.npz` and "
        "`attention_distance.csv`.", "",
        "## Patch-embedding filters", "",
        f"![embedding filters]({FILES['embedding_filters']})", "",
        f"The first {len(explained)} principal components of the patch-embedding "
        f"filters, each shown as an RGB patch. Together they explain {explained.sum():.1%} of "
        f"the filters' variance; the first explains {explained[0]:.1%}.", "",
        "## Position-embedding similarity", "",
        f"![position similarity]({FILES['position_similarity']})", "",
        "Tile (row, column) shows the cosine similarity of that patch's position embedding to "
        "every patch's. Mean similarity to the 4 nearest neighbours: "
        f"{neighbours:.3f}; to all other patches: "
        f"{(similarity.sum() - np.trace(similarity)) / (similarity.size - len(similarity)):.3f}.",
        "",
        "## Mean attention distance", "",
        f"![attention distance]({FILES['attention_distance']})", "",
        "Each dot is one head: the image-space distance between a patch and the patches it "
        "attends to, weighted by attention and averaged over queries and images. Mean per "
        f"layer (pixels), first to last: {layer_means}.", "",
        "## Attention rollout", "",
        f"![attention rollout]({FILES['attention_rollout']})", "",
        "Attention from the output token to the input patches, propagated through all layers "
        "(heads averaged, residual connections counted as half of each layer's mixing): "
        "the images, their maps (1 = the most attended patch) and the images weighted by "
        "them.", ""])


def _neighbour_similarity(similarity: np.ndarray) -> float:
    """Mean cosine similarity between position embeddings of 4-neighbouring patches."""
    rows, cols = similarity.shape[:2]
    values = [similarity[r, c, r + dr, c + dc] for r in range(rows) for c in range(cols)
              for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
              if 0 <= r + dr < rows and 0 <= c + dc < cols]
    return float(np.mean(values)) if values else float("nan")


def inspect_checkpoint(ckpt: str, out_dir=None, image_dir=None, count: int = 32,
                       rollout_count: int = 8, resolution: int | None = None,
                       data_dir=None, results_dir="results") -> dict:
    """Loads `ckpt` (see `vitbench.checkpoints.loader.load_model`), computes and writes
    everything; returns the written paths by kind.

    Args:
        ckpt: a checkpoint name, file, workdir or URL, as `load_model` takes.
        out_dir: the folder to write into; None for `default_out_dir(ckpt, results_dir)`.
        image_dir: a folder (searched with its subfolders) of images to inspect; None for
            the demo dataset's test images.
        count: how many images to use (at most, from `image_dir`); the attention distances
            average over them.
        rollout_count: how many of them get a rollout map.
        resolution: the image size to load the model at; None keeps the checkpoint's.
        data_dir: the TFDS data dir for the demo images; None for TFDS' default.
        results_dir: the base of the default `out_dir`.

    Returns:
        Kind (a key of `FILES`) -> path written.

    Raises:
        FileNotFoundError: no such checkpoint, or `image_dir` is not a folder or holds no
            images.
        ValueError: an image in `image_dir` cannot be read, or the checkpoint does not load
            (see `load_model`).
        OSError: `out_dir` cannot be written.
    """
    out_dir = pathlib.Path(out_dir or default_out_dir(ckpt, results_dir))
    out_dir.mkdir(parents=True, exist_ok=True)  # an unusable one fails before any work
    model = load_model(ckpt, image_size=resolution)
    size = model.image_size
    images = (read_image_dir(image_dir, size, count) if image_dir
              else demo_images(size, count, data_dir))
    numbers = compute(model, images, rollout_count=min(rollout_count, len(images)))
    return write(numbers, out_dir, f"{ckpt}: what the ViT learned")

