"""Checkpoints in other libraries' formats: each is made by the real library (timm, Hugging Face
transformers, open_clip), saved as that library saves it, loaded by vitbench, and must give the
library's own features or logits within 1e-4 (float32)."""

import json

import numpy as np
import pytest
from conftest import images

import vitbench
from vitbench.checkpoints import formats, npz
from vitbench.models.zoo import NORMALIZATIONS

torch = pytest.importorskip("torch")
timm_vit = pytest.importorskip("timm.models.vision_transformer")
safetensors_torch = pytest.importorskip("safetensors.torch")

TOLERANCE = 1e-4
X = images(batch=2, height=32, width=32, seed=3)  # [-1, 1], what vitbench's pipelines feed


def randomized(module, seed=0, scale=0.1):
    """Every parameter random (heads, biases, norms and layer scales included), in eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, scale)
    return module.eval()


def pixels(x, normalization):
    """`x` in [-1, 1] as the pixels a checkpoint with `normalization` expects (NCHW)."""
    mean, std = (np.array(v, np.float32) for v in NORMALIZATIONS[normalization])
    return torch.from_numpy(((x + 1) / 2 - mean) / std).permute(0, 3, 1, 2)


def close(ours, theirs):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=TOLERANCE, rtol=TOLERANCE)


TIMM_VARIANTS = {
    # name: (timm VisionTransformer arguments, how it is saved)
    "class_token": ({}, "model.safetensors"),
    "gap_fc_norm": ({"global_pool": "avg"}, "mae_finetuned.pth"),
    "no_class_token": ({"class_token": False, "global_pool": "avg"}, "model.safetensors"),
    "dinov2_registers": ({"init_values": 1e-5, "reg_tokens": 4, "no_embed_class": True,
                          "patch_size": 16}, "moco_v3.pth"),
    "clip_pre_norm": ({"pre_norm": True, "norm_layer": torch.nn.LayerNorm}, "model.bin"),
}


def timm_model(variant):
    arguments = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4,
                 "mlp_ratio": 2, "num_classes": 5, **TIMM_VARIANTS[variant][0]}
    return randomized(timm_vit.VisionTransformer(**arguments))


def save_timm(model, path):
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    if path.suffix == ".safetensors":
        safetensors_torch.save_file(state, path)
    elif path.name.startswith("mae"):  # as MAE and DeiT releases: {"model": ...}
        torch.save({"model": state, "args": None}, path)
    elif path.name.startswith("moco"):  # as MoCo v3 releases: the encoder beside its copies
        wrapped = {f"module.{encoder}.{key}": value for key, value in state.items()
                   for encoder in ("base_encoder", "momentum_encoder")}
        torch.save({"state_dict": {**wrapped, "module.predictor.0.weight": torch.ones(2)},
                    "epoch": 3}, path)
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("variant", TIMM_VARIANTS)
def test_timm_state_dicts_give_timms_logits(variant, tmp_path):
    reference = timm_model(variant)
    path = save_timm(reference, tmp_path / TIMM_VARIANTS[variant][1])
    model = vitbench.load_model(path)
    normalization = "clip" if variant == "clip_pre_norm" else "inception"
    assert model.config.normalization_name == normalization
    with torch.no_grad():
        close(model(X), reference(pixels(X, normalization)))
        features = vitbench.load_model(path, num_classes=0)(X)
        close(features, reference.forward_head(reference.forward_features(
            pixels(X, normalization)), pre_logits=True))


def test_timm_hub_folder_gives_its_normalization_and_resolution(tmp_path):
    reference = timm_model("gap_fc_norm")
    save_timm(reference, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "vit_tiny_test", "num_classes": 5,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": NORMALIZATIONS["imagenet"][0],
                           "std": NORMALIZATIONS["imagenet"][1]}}))
    model = vitbench.load_model(tmp_path)
    assert model.config.normalization_name == "imagenet" and model.image_size == (32, 32)
    with torch.no_grad():
        close(model(X), reference(pixels(X, "imagenet")))


def test_a_state_dict_with_parts_vitbench_lacks_is_refused_naming_them(tmp_path):
    state = timm_model("class_token").state_dict()
    state["blocks.0.attn.q_norm.weight"] = torch.ones(16)
    with pytest.raises(npz.CheckpointError, match=r"blocks\.0\.attn\.q_norm\.weight"):
        vitbench.load_model(save_timm(state_module(state), tmp_path / "extra.safetensors"))
    del state["blocks.0.attn.q_norm.weight"], state["blocks.1.mlp.fc2.bias"]
    del state["blocks.1.norm2.weight"]  # both missing arrays are named
    with pytest.raises(npz.CheckpointError, match=r"timm layout\) has no 'blocks\.1\.norm2"
                                                  r"\.weight', 'blocks\.1\.mlp\.fc2\.bias'"):
        vitbench.load_model(save_timm(state_module(state), tmp_path / "partial.safetensors"))
    with pytest.raises(npz.CheckpointError, match=r"none of the layouts.*conv\.weight"):
        vitbench.load_model(save_timm(state_module({"conv.weight": torch.ones(2)}),
                                      tmp_path / "resnet.safetensors"))


def state_module(state):
    """A stand-in with `state_dict()`, for saving a hand-edited state dict."""
    return type("State", (), {"state_dict": lambda self: state})()


def test_a_width_no_public_vit_has_needs_its_head_count(tmp_path):
    reference = randomized(timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3, num_classes=2))
    path = save_timm(reference, tmp_path / "odd.safetensors")
    with pytest.raises(npz.CheckpointError, match="num_heads"):
        vitbench.load_model(path)
    with torch.no_grad():
        close(vitbench.load_model(path, num_heads=3)(X), reference(pixels(X, "inception")))


def test_pytorch_pickles_are_read_without_running_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.ones(1)}, "hook": print}, path)  # a callable: unsafe
    with pytest.raises(npz.CheckpointError, match="not a readable PyTorch weights file"):
        formats.read_weights(path)


def test_save_npz_keeps_the_options_a_converted_model_has(tmp_path):
    reference = timm_model("dinov2_registers")
    model = vitbench.load_model(save_timm(reference, tmp_path / "model.safetensors"),
                                normalization="imagenet")
    path = vitbench.save_npz(model, tmp_path / "converted.npz")
    again = vitbench.load_model(path)
    assert again.config == model.config
    close(again(X), np.asarray(model(X)))


transformers = pytest.importorskip("transformers")
HF_MODELS = {
    # name: (config class, model class, config fields, vitbench's normalisation for it)
    "vit": ("ViTConfig", "ViTForImageClassification", {"num_labels": 5}, "inception"),
    "vit_pooler": ("ViTConfig", "ViTModel", {}, "inception"),
    "deit_distilled": ("DeiTConfig", "DeiTForImageClassificationWithTeacher",
                       {"num_labels": 5}, "imagenet"),
    "dinov2": ("Dinov2Config", "Dinov2Model", {}, "imagenet"),
    "dinov2_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
                         {"num_register_tokens": 4}, "imagenet"),
}


@pytest.mark.parametrize("kind", HF_MODELS)
def test_hugging_face_folders_give_transformers_outputs(kind, tmp_path):
    config_class, model_class, fields, normalization = HF_MODELS[kind]
    config = getattr(transformers, config_class)(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        image_size=32, patch_size=8, **fields)
    reference = randomized(getattr(transformers, model_class)(config))
    reference.save_pretrained(tmp_path)  # config.json + model.safetensors
    with torch.no_grad():
        output = reference(pixel_values=pixels(X, normalization))
    head = "num_labels" in fields
    model = vitbench.load_model(tmp_path, num_classes=None if head else 0)
    assert model.config.normalization_name == normalization and model.image_size == (32, 32)
    expected = (output.cls_logits if kind.startswith("deit") else output.logits) if head \
        else output.pooler_output
    close(model(X), expected)


open_clip = pytest.importorskip("open_clip")
CLIP_VISION = {"layers": 2, "width": 128, "head_width": 64, "patch_size": 8, "image_size": 32}


def clip_model(quick_gelu, layer_scale=None):
    vision = {**CLIP_VISION, "ls_init_value": layer_scale}
    model = open_clip.model.CLIP(
        embed_dim=16, vision_cfg=vision, quick_gelu=quick_gelu,
        text_cfg={"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1})
    return randomized(model, scale=0.05)


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["openai_quick_gelu", "laion_gelu"])
def test_open_clip_image_towers_give_open_clips_features(quick_gelu, tmp_path):
    reference = clip_model(quick_gelu, layer_scale=0.1 if not quick_gelu else None)
    torch.save(reference.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    # open_clip repositories also hold the two-tower model in transformers' layout
    safetensors_torch.save_file({"text_model.x": torch.ones(1)}, tmp_path / "model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": 16, "quick_gelu": quick_gelu, "vision_cfg": CLIP_VISION},
        "preprocess_cfg": {"mean": NORMALIZATIONS["clip"][0], "std": NORMALIZATIONS["clip"][1]}}))
    model = vitbench.load_model(tmp_path)
    assert model.num_classes == 0 and model.config.gelu == ("quick" if quick_gelu else "exact")
    assert model.config.normalization_name == "clip"
    reference.visual.proj = None  # features for probing: the normed class token
    with torch.no_grad():
        close(model(X), reference.visual(pixels(X, "clip")))


def test_hub_ids_download_through_the_cache_and_are_refused_offline(tmp_path, monkeypatch):
    from test_download import Server

    from vitbench.checkpoints import download, hub

    reference = timm_model("class_token")
    folder = tmp_path / "repo"
    folder.mkdir()
    save_timm(reference, folder / "model.safetensors")
    server = Server()
    try:
        for name in ("model.safetensors",):
            server.files[f"/org/tiny-vit/resolve/main/{name}"] = (folder / name).read_bytes()
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        model = vitbench.load_model("hf://org/tiny-vit", progress=False)
        with torch.no_grad():
            close(model(X), reference(pixels(X, "inception")))
        asked = [path for path, _ in server.requests]
        # the configuration files it lacks are asked for once and skipped (404)
        assert "/org/tiny-vit/resolve/main/config.json" in asked
        monkeypatch.setenv("VITBENCH_OFFLINE", "1")
        server.requests.clear()
        vitbench.load_model("hf://org/tiny-vit", progress=False)  # from the cache
        assert server.requests == []
        with pytest.raises(download.DownloadError, match="not in the cache.*VITBENCH_OFFLINE"):
            vitbench.load_model("hf://org/other@v2", progress=False)
        monkeypatch.delenv("VITBENCH_OFFLINE")
        with pytest.raises(download.DownloadError, match="has none of"):
            vitbench.load_model("hf://org/empty", progress=False)
        with pytest.raises(ValueError, match="not a hub id"):
            hub.file_url("hf://just-a-name", "config.json")
    finally:
        server.close()


@pytest.mark.slow
def test_run_fine_tunes_and_probes_a_timm_folder_and_records_its_input(tmp_path, capsys):
    from conftest import mock_tfds

    from vitbench import cli, records

    folder = tmp_path / "timm_repo"
    folder.mkdir()
    save_timm(timm_model("gap_fc_norm"), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": "tiny", "pretrained_cfg": {
        "input_size": [3, 32, 32], "mean": NORMALIZATIONS["imagenet"][0],
        "std": NORMALIZATIONS["imagenet"][1]}}))
    results = tmp_path / "results"
    with mock_tfds(num_examples=16):
        assert cli.main(["run", f"--ckpt={folder}", f"--results_dir={results}", "--steps=2",
                         "--batch_size=8", "--micro_batch_size=4", "--resolution=16",
                         "--tasks=demo_color"]) == 0
        for method in ("linear", "knn"):  # the probes of frozen features load it alike
            assert cli.main(["run", f"--ckpt={folder}", f"--results_dir={results}",
                             "--resolution=16", "--tasks=demo_color",
                             f"--method={method}"]) == 0
    saved = records.read(records.records_path(results, "demo"))
    assert {r["config"]["method"] for r in saved} == {"finetune", "fewshot", "linear", "knn"}
    for record in saved:
        assert record["checkpoint"]["input"] == {"format": "timm", "normalization": "imagenet",
                                                 "resolution": 32}
        assert record["status"] == "finished"
    assert f"{folder} @" in (results / "demo.md").read_text()
    assert "input imagenet" in (results / "demo.md").read_text()


@pytest.mark.parametrize("patch", [14, 32])
def test_timm_patch_sizes_14_and_32(patch, tmp_path):
    size = 2 * patch
    reference = randomized(timm_vit.VisionTransformer(
        img_size=size, patch_size=patch, embed_dim=64, depth=1, num_heads=4, num_classes=3))
    model = vitbench.load_model(save_timm(reference, tmp_path / "model.safetensors"))
    assert model.config.patch_size == patch and model.image_size == (size, size)
    x = images(batch=2, height=size, width=size, seed=4)
    with torch.no_grad():
        close(model(x), reference(pixels(x, "inception")))
