"""The paper's pictures of a ViT as PNG files, drawn headless (matplotlib's Agg canvas, no
pyplot state). Every figure has a fixed size in pixels (`SIZES`), whatever the model."""

from __future__ import annotations

import pathlib

import numpy as np

DPI = 100
SIZES = {  # (width, height) in pixels
    "embedding_filters": (1400, 900),
    "position_similarity": (1000, 1000),
    "attention_distance": (800, 600),
    "attention_rollout": (1600, 650),
}


def _figure(name: str):
    from matplotlib.figure import Figure

    width, height = SIZES[name]
    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def _save(figure, path: pathlib.Path) -> pathlib.Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=DPI)  # no tight bounding box: the size stays SIZES'
    return path


def _unit_range(image: np.ndarray) -> np.ndarray:
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def embedding_filters(components: np.ndarray, explained: np.ndarray, path,
                      columns: int = 7) -> pathlib.Path:
    """The principal components of the patch-embedding filters as RGB tiles (each scaled to
    the full colour range), with the share of variance each explains."""
    figure = _figure("embedding_filters")
    rows = -(-len(components) // columns)
    figure.suptitle("RGB embedding filters: principal components (share of variance)")
    for index, (component, share) in enumerate(zip(components, explained)):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(_unit_range(component), interpolation="nearest")
        axes.set_title(f"{index + 1}: {share:.1%}", fontsize=8)
        axes.set_axis_off()
    return _save(figure, path)


def similarity_mosaic(similarity: np.ndarray, gap: int = 1) -> np.ndarray:
    """The (rows, cols, rows, cols) similarities as one image: tile [r, c] holds patch
    (r, c)'s map, tiles separated by `gap` blank (NaN) pixels."""
    rows, cols = similarity.shape[:2]
    tile_h, tile_w = rows + gap, cols + gap
    mosaic = np.full((rows * tile_h - gap, cols * tile_w - gap), np.nan)
    for r in range(rows):
        for c in range(cols):
            mosaic[r * tile_h:r * tile_h + rows, c * tile_w:c * tile_w + cols] = similarity[r, c]
    return mosaic


def position_similarity(similarity: np.ndarray, path) -> pathlib.Path:
    """A grid of small heatmaps: tile (r, c) shows the cosine similarity of patch (r, c)'s
    position embedding to every patch's."""
    rows, cols = similarity.shape[:2]
    figure = _figure("position_similarity")
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(similarity_mosaic(similarity), vmin=-1, vmax=1, cmap="viridis",
                        interpolation="nearest")
    axes.set_xticks([(cols + 1) * c + cols / 2 - 0.5 for c in range(cols)],
                    [str(c + 1) for c in range(cols)], fontsize=6)
    axes.set_yticks([(rows + 1) * r + rows / 2 - 0.5 for r in range(rows)],
                    [str(r + 1) for r in range(rows)], fontsize=6)
    axes.set_xlabel("input patch column")
    axes.set_ylabel("input patch row")
    axes.set_title("Position embedding similarity")
    figure.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    return _save(figure, path)


def attention_distance(distances: np.ndarray, path, max_distance: float) -> pathlib.Path:
    """One dot per head and layer: the mean attention distance in pixels against depth, on an
    axis up to `max_distance` (the farthest two patch centres)."""
    layers, heads = distances.shape
    figure = _figure("attention_distance")
    axes = figure.add_subplot(1, 1, 1)
    for head in range(heads):
        axes.scatter(np.arange(1, layers + 1), distances[:, head], s=14,
                     label=f"head {head + 1}")
    axes.set_xlabel("network depth (layer)")
    axes.set_ylabel("mean attention distance (pixels)")
    axes.set_ylim(0, max(max_distance, 1.0))
    axes.set_xticks(np.arange(1, layers + 1))
    axes.grid(alpha=0.3)
    if heads <= 16:
        axes.legend(fontsize=6, ncol=2, loc="lower right")
    axes.set_title("Size of attended area by head and network depth")
    return _save(figure, path)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, rows, cols) maps resized bilinearly to (n, height, width)."""
    from scipy import ndimage

    rows, cols = maps.shape[1:]
    return np.stack([ndimage.zoom(m, (size[0] / rows, size[1] / cols), order=1) for m in maps])


def attention_rollout(images: np.ndarray, maps: np.ndarray, path) -> pathlib.Path:
    """Per image (float, [-1, 1]), a column: the image, its rollout map (bilinear to the image's
    size, 1 = the most attended patch) and the image weighted by that map."""
    count = len(images)
    figure = _figure("attention_rollout")
    figure.suptitle("Attention rollout from the output token to the input")
    weights = np.clip(upsample(maps, images.shape[1:3]), 0, 1)
    for index, image in enumerate(images):
        shown = np.clip((image + 1) / 2, 0, 1)
        for row, (picture, colours) in enumerate(
                ((shown, None), (weights[index], "inferno"),
                 (shown * weights[index][..., None], None))):
            axes = figure.add_subplot(3, count, row * count + index + 1)
            axes.imshow(picture, cmap=colours, vmin=0, vmax=1, interpolation="nearest")
            axes.set_axis_off()
    return _save(figure, path)
