"""The numbers behind the ViT paper's pictures of what a ViT learns (Figures 6 and 7), computed
with numpy from a model's weights and attention weights.

`embedding_components`, `position_similarity` and `mean_attention_distance` (Figure 7, left to
right) and `attention_rollout` (Figure 6; Abnar & Zuidema 2020).
Design notes: docs/design/inspection.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def embedding_components(kernel: np.ndarray, count: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Principal components of the patch-embedding filters.

    kernel: the embedding convolution's (patch, patch, 3, hidden) weights; each of its `hidden`
    filters is one (patch, patch, 3) vector. Returns (components, explained): the first
    `count` (at most min(hidden, patch*patch*3)) principal directions of the centred filters as
    (count, patch, patch, 3) arrays of unit norm, largest variance first, and the fraction of
    the filters' variance each explains.
    """
    patch_h, patch_w, channels, hidden = kernel.shape
    filters = kernel.reshape(-1, hidden).T.astype(np.float64)  # (hidden, patch*patch*3)
    centred = filters - filters.mean(axis=0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    explained = variance / variance.sum() if variance.sum() > 0 else variance
    count = min(count, len(singular))
    return (directions[:count].reshape(count, patch_h, patch_w, channels),
            explained[:count])


def position_similarity(pos_embedding: np.ndarray, grid: tuple[int, int],
                        num_prefix_tokens: int = 1) -> np.ndarray:
    """Cosine similarity between the position embeddings of the patches.

    pos_embedding: (1, tokens, hidden) or (tokens, hidden), the first `num_prefix_tokens`
    rows belonging to the class token. Returns (rows, cols, rows, cols): entry [r, c] is the
    map of the similarity of patch (r, c)'s embedding to every patch's, 1 on the diagonal.
    """
    rows, cols = grid
    patches = np.asarray(pos_embedding, np.float64).reshape(-1, pos_embedding.shape[-1])
    patches = patches[num_prefix_tokens:]
    if len(patches) != rows * cols:
        raise ValueError(f"{len(patches)} patch position embeddings do not form a "
                         f"{rows}x{cols} grid")
    unit = patches / np.maximum(np.linalg.norm(patches, axis=-1, keepdims=True), 1e-12)
    return (unit @ unit.T).reshape(rows, cols, rows, cols)


def patch_distances(grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """(patches, patches) pixel distances between the centres of the grid's patches."""
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    centres = np.stack([rows.ravel(), cols.ravel()], axis=-1) * patch_size
    return np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)


def mean_attention_distance(attention: Sequence[np.ndarray], grid: tuple[int, int],
                            patch_size: int, num_prefix_tokens: int = 1) -> np.ndarray:
    """Mean attention distance in pixels, per layer and head: (layers, heads).

    attention: one (batch, heads, queries, keys) array per layer, as
    `VisionTransformer.attention_maps` returns. For every patch query, the distances from its
    patch centre to the other patch centres are weighted by its attention to them, and these
    means are averaged over queries and images. The class token takes no place in the image:
    its row and column are left out and each query's weights renormalised over the patches.
    """
    distances = patch_distances(grid, patch_size)
    result = []
    for weights in attention:
        patches = np.asarray(weights, np.float64)[:, :, num_prefix_tokens:, num_prefix_tokens:]
        patches = patches / np.maximum(patches.sum(axis=-1, keepdims=True), 1e-12)
        result.append(np.einsum("bhqk,qk->bhq", patches, distances).mean(axis=(0, 2)))
    return np.stack(result)


def attention_rollout(attention: Sequence[np.ndarray], residual: float = 0.5) -> np.ndarray:
    """Attention rollout: (batch, tokens, tokens), how much each output token draws on each input
    token through all layers.

    Per layer, the heads' weights are averaged, the residual connection is accounted for as
    `residual` * identity + (1 - `residual`) * weights (rows still sum to 1), and the layers'
    matrices are multiplied, first layer rightmost (Abnar & Zuidema, 2020, as the ViT paper's
    Appendix D.8 uses it).
    """
    rollout = None
    for weights in attention:
        mixed = np.asarray(weights, np.float64).mean(axis=1)
        mixed = residual * np.eye(mixed.shape[-1]) + (1 - residual) * mixed
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def output_rollout_map(rollout: np.ndarray, grid: tuple[int, int], classifier: str = "token",
                       num_prefix_tokens: int = 1) -> np.ndarray:
    """(batch, rows, cols): the rollout from the token the head reads (the class token, or for
    "gap" the mean of the patch tokens) to every patch, scaled to a maximum of 1 per image."""
    if classifier == "token":
        row = rollout[:, 0, num_prefix_tokens:]
    else:
        row = rollout[:, num_prefix_tokens:, num_prefix_tokens:].mean(axis=1)
    maps = row.reshape(-1, *grid)
    return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)
