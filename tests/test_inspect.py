"""`vitbench inspect`: each quantity on hand-made inputs, the figures and files it writes."""

import struct

import numpy as np
import pytest
from conftest import TINY, randomize

from vitbench import cli
from vitbench.inspection import figures, quantities, report
from vitbench.models.vit import create_model


def png_size(path):
    """(width, height) from a PNG's header; fails on anything that is not a PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_principal_components_find_the_direction_the_filters_vary_along():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=4 * 4 * 3)
    direction /= np.linalg.norm(direction)
    filters = rng.normal(size=(64, 1)) * direction + 1e-3 * rng.normal(size=(64, 48)) + 5.0
    kernel = filters.T.reshape(4, 4, 3, 64)  # 64 filters of 4x4x3, offset by a constant
    components, explained = quantities.embedding_components(kernel, count=28)
    assert components.shape == (28, 4, 4, 3) and explained.shape == (28,)
    assert abs(components[0].ravel() @ direction) == pytest.approx(1.0, abs=1e-4)
    assert explained[0] > 0.99 and np.all(np.diff(explained) <= 0)
    np.testing.assert_allclose(np.linalg.norm(components.reshape(28, -1), axis=1), 1.0)


def test_position_similarity_is_one_on_the_diagonal_and_cosine_elsewhere():
    rng = np.random.default_rng(1)
    embedding = rng.normal(size=(1, 1 + 6, 8))  # class token, then a 2x3 grid
    similarity = quantities.position_similarity(embedding, (2, 3))
    assert similarity.shape == (2, 3, 2, 3)
    flat = similarity.reshape(6, 6)
    np.testing.assert_allclose(np.diag(flat), 1.0)
    a, b = embedding[0, 1], embedding[0, 6]  # patches (0, 0) and (1, 2)
    assert similarity[0, 0, 1, 2] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    orthogonal = np.eye(4)[None]  # no class token: 4 orthogonal embeddings
    np.testing.assert_allclose(
        quantities.position_similarity(orthogonal, (2, 2), num_prefix_tokens=0).reshape(4, 4),
        np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match="do not form a 3x3 grid"):
        quantities.position_similarity(embedding, (3, 3))


def test_one_hot_attention_gives_known_distances():
    grid, patch = (2, 2), 16
    tokens = 1 + 4
    attention = np.zeros((1, 2, tokens, tokens))
    for query in range(tokens):
        attention[0, 0, query, query] = 1.0  # head 1: every token attends to itself
        attention[0, 1, query, 0] = 0.5  # head 2: half to the class token (left out) ...
        attention[0, 1, query, 1] = 0.5  # ... half to patch (0, 0)
    distances = quantities.mean_attention_distance([attention, attention[:, ::-1]], grid, patch)
    to_corner = (0 + 16 + 16 + 16 * np.sqrt(2)) / 4  # from each patch to patch (0, 0)
    np.testing.assert_allclose(distances, [[0.0, to_corner], [to_corner, 0.0]])


def test_rollout_of_identity_attention_is_the_identity_and_of_uniform_attention_known():
    identity = np.broadcast_to(np.eye(5), (2, 3, 5, 5))
    np.testing.assert_allclose(quantities.attention_rollout([identity] * 4),
                               np.broadcast_to(np.eye(5), (2, 5, 5)))
    uniform = np.full((1, 2, 5, 5), 1 / 5)
    # Without the residual, uniform mixing stays uniform; with half residual, two layers give
    # (I/2 + U/2)^2 = I/4 + 3U/4.
    np.testing.assert_allclose(quantities.attention_rollout([uniform] * 3, residual=0.0)[0],
                               np.full((5, 5), 1 / 5))
    np.testing.assert_allclose(quantities.attention_rollout([uniform] * 2)[0],
                               np.eye(5) / 4 + 3 / 4 * np.full((5, 5), 1 / 5))


def test_the_output_rollout_map_reads_the_class_token_row_or_the_patch_mean():
    rollout = np.zeros((1, 5, 5))
    rollout[0, 0, 1:] = [0.1, 0.2, 0.3, 0.4]
    rollout[0, 1:, 1:] = np.eye(4) * 0.5
    np.testing.assert_allclose(quantities.output_rollout_map(rollout, (2, 2))[0],
                               [[0.25, 0.5], [0.75, 1.0]])
    np.testing.assert_allclose(quantities.output_rollout_map(rollout, (2, 2), "gap")[0],
                               np.ones((2, 2)))


def test_similarity_mosaic_places_each_patch_map_in_its_tile():
    similarity = np.arange(2 * 3 * 2 * 3, dtype=float).reshape(2, 3, 2, 3)
    mosaic = figures.similarity_mosaic(similarity)
    assert mosaic.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(mosaic[3:5, 8:11], similarity[1, 2])
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[:, 3]).all()


def write_images(directory, count=3, size=(20, 28)):
    import tensorflow as tf

    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        (directory / f"{index}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    (directory / "notes.txt").write_text("not an image")


@pytest.mark.slow
def test_inspect_writes_four_figures_the_numbers_and_a_page(tmp_path, capsys):
    model = randomize(create_model(TINY, num_classes=5, image_size=24))  # 3x3 patches
    model.save(tmp_path / "tiny.keras")
    write_images(tmp_path / "images" / "cat")  # a class subfolder, as a task's folder has
    out = tmp_path / "figures"
    assert cli.main(["inspect", f"--ckpt={tmp_path / 'tiny.keras'}",
                     f"--images={tmp_path / 'images'}", f"--out={out}",
                     "--rollout_images=2"]) == 0
    for kind, (width, height) in figures.SIZES.items():
        assert png_size(out / report.FILES[kind]) == (width, height), kind
    numbers = np.load(out / "quantities.npz")
    assert numbers["embedding_components"].shape == (28, 8, 8, 3)
    assert numbers["position_similarity"].shape == (3, 3, 3, 3)
    assert numbers["attention_distance"].shape == (TINY.num_layers, TINY.num_heads)
    assert numbers["rollout_maps"].shape == (2, 3, 3) and int(numbers["images_used"]) == 3
    # The distances are those of the model's own attention on those images.
    images = report.read_image_dir(tmp_path / "images", (24, 24), 3)
    _, attention = model.attention_maps(images)
    np.testing.assert_allclose(
        numbers["attention_distance"],
        quantities.mean_attention_distance([np.asarray(a) for a in attention], (3, 3), 8),
        rtol=1e-5)
    rows = (out / "attention_distance.csv").read_text().splitlines()
    assert rows[0] == "layer,head,mean_attention_distance_px"
    assert len(rows) == 1 + TINY.num_layers * TINY.num_heads
    page = (out / "index.md").read_text()
    assert all(f"]({report.FILES[kind]})" in page for kind in figures.SIZES)
    printed = capsys.readouterr().out
    assert f"page: {out / 'index.md'}" in printed


@pytest.mark.slow
def test_inspect_uses_the_demo_images_by_default(tmp_path, demo_data_dir):
    model = randomize(create_model(TINY.replace(classifier="gap"), num_classes=5,
                                   image_size=16))
    model.save(tmp_path / "gap.keras")
    paths = report.inspect_checkpoint(str(tmp_path / "gap.keras"), count=4, rollout_count=4,
                                      data_dir=demo_data_dir, results_dir=tmp_path)
    assert paths["page"] == tmp_path / "figures" / "gap" / "index.md"
    numbers = np.load(paths["numbers"])
    assert int(numbers["images_used"]) == 4 and numbers["rollout_maps"].shape == (4, 2, 2)
    assert png_size(paths["attention_rollout"]) == figures.SIZES["attention_rollout"]


def test_inspect_errors_are_clear(tmp_path, capsys):
    assert cli.main(["inspect"]) != 0
    assert "--ckpt is required" in capsys.readouterr().err
    model = create_model(TINY, num_classes=5, image_size=24)
    model.save(tmp_path / "tiny.keras")
    (tmp_path / "empty").mkdir()
    assert cli.main(["inspect", f"--ckpt={tmp_path / 'tiny.keras'}",
                     f"--images={tmp_path / 'empty'}", f"--out={tmp_path / 'out'}"]) != 0
    assert "no images" in capsys.readouterr().err
    # An unreadable image is named; an unusable output folder fails before any work.
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / "bad.jpg").write_text("not a jpeg")
    assert cli.main(["inspect", f"--ckpt={tmp_path / 'tiny.keras'}",
                     f"--images={tmp_path / 'photos'}", f"--out={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'photos' / 'cat' / 'bad.jpg'} is not a readable image" in err
    assert "Traceback" not in err
    assert cli.main(["inspect", f"--ckpt={tmp_path / 'nothing.npz'}",
                     f"--out={tmp_path / 'tiny.keras' / 'x'}"]) == 1
    assert "Not a directory" in capsys.readouterr().err
    assert cli.main(["inspect", f"--ckpt={tmp_path / 'tiny.keras'}", "--rollout_images=0"]) == 2
