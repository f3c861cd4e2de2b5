"""The zoo: official parameter counts, FLOPs, grid validation, names."""

import pytest

from vitbench.models import zoo

# Official counts (1000-class head, no representation layer, 224 px); vit_jax / timm.
OFFICIAL_PARAMS = {
    "vit_ti16": 5_717_416,
    "vit_s16": 22_050_664,
    "vit_b16": 86_567_656,
    "vit_l16": 304_326_632,
    "vit_h14": 632_045_800,
}


@pytest.mark.parametrize("name,expected", OFFICIAL_PARAMS.items())
def test_param_count_matches_official(name, expected):
    assert zoo.count_params(zoo.get_config(name)) == expected


def test_i21k_param_counts_with_representation_layer():
    # i21k checkpoints: pre-logits D x D + D and a 21843-class head (counts from timm).
    for name, expected in [("vit_b16", 103_186_515), ("vit_l16", 326_740_307),
                           ("vit_h14", 660_385_363)]:
        config = zoo.get_config(name)
        config = config.replace(representation_size=config.hidden_size)
        assert zoo.count_params(config, 224, 21843) == expected


def test_headless_counts():
    assert zoo.count_params(zoo.get_config("vit_b32"), num_classes=0) == 87_455_232
    assert zoo.count_params(zoo.get_config("vit_l32"), num_classes=0) == 305_510_400


def test_macs_of_b16_match_the_published_17_6_gmacs():
    macs = zoo.count_macs(zoo.get_config("vit_b16"))
    assert macs / 1e9 == pytest.approx(17.58, abs=0.03)
    assert zoo.count_flops(zoo.get_config("vit_b16")) == 2 * macs


def test_zoo_covers_every_size_and_patch():
    assert len(zoo.ZOO) == len(zoo.SIZES) * len(zoo.PATCH_SIZES)
    assert zoo.get_config("ViT-H/14").name == "vit_h14"
    assert zoo.get_config("vit_l16").dropout == 0.1 and zoo.get_config("vit_b16").dropout == 0.0


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(KeyError, match="vit_b16"):
        zoo.get_config("vit_q16")


def test_grid_counts_whole_patches_as_the_official_valid_convolution():
    config = zoo.get_config("vit_b16")
    assert config.grid(384) == (24, 24)
    assert config.grid((224, 320)) == (14, 20)
    assert config.grid(100) == (6, 6)
    h14 = zoo.get_config("vit_h14")
    assert h14.grid(384) == (27, 27) and h14.num_tokens(384) == 27 * 27 + 1
    with pytest.raises(ValueError, match="smaller than the patch size 16"):
        config.grid((224, 15))


def test_bad_options_are_rejected():
    with pytest.raises(TypeError, match="unknown ViT option"):
        zoo.get_config("vit_b16", dropuot=0.1)
    with pytest.raises(ValueError, match="gelu"):
        zoo.get_config("vit_b16", gelu="relu")
    with pytest.raises(ValueError, match="classifier"):
        zoo.get_config("vit_b16", classifier="map")
    for field in ("num_layers", "num_heads", "patch_size", "hidden_size", "mlp_dim"):
        with pytest.raises(ValueError, match=f"{field} must be a positive whole number, not 0"):
            zoo.get_config("vit_b16", **{field: 0})
    with pytest.raises(ValueError, match=r"stochastic_depth is a rate in \[0, 1\), not 2"):
        zoo.get_config("vit_b16", stochastic_depth=2)
    with pytest.raises(ValueError, match=r"dropout is a rate in \[0, 1\), not -0.1"):
        zoo.get_config("vit_b16", dropout=-0.1)


@pytest.mark.parametrize("size", [33.0, "32", (32,), (0, 32), (32, 32.0), True])
def test_an_image_size_is_a_positive_int_or_a_pair_of_them(size):
    with pytest.raises(ValueError, match=r"is not a positive int or a \(height, width\) pair"):
        zoo.as_hw(size)


def test_numpy_integers_are_image_sizes():
    np = pytest.importorskip("numpy")
    assert zoo.as_hw(np.int64(40)) == (40, 40) and zoo.as_hw([np.int32(32), 48]) == (32, 48)


def test_find_name_ignores_head_and_regularisation():
    config = zoo.get_config("vit_s32").replace(dropout=0.3, representation_size=384, name="x")
    assert zoo.find_name(config) == "vit_s32"
