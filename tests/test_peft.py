"""Parameter-efficient fine-tuning under the VPT protocol: BitFit trains exactly the biases
and LayerNorm offsets (the spec's count), with no state for the frozen weights, and runs end
to end on the demo data."""

import keras
import numpy as np
import pytest

from vitbench import cli, records, tasks
from vitbench.models.vit import create_model
from vitbench.transfer import plan
from vitbench.transfer.methods import METHODS, optimizer_state_bytes, trainable_parameters

# ../shared/spec/peft_protocols.md 2.2: ViT-B/16's biases and LayerNorm offsets.
BITFIT_B16 = 102_912


def test_bitfit_trains_exactly_the_biases_and_layernorm_offsets():
    model = create_model("vit_b16", num_classes=10, image_size=32, trainable="biases")
    names = {v.path.rsplit("/", 1)[-1] for v in model.trainable_variables
             if not v.path.startswith("head/")}
    assert names == {"bias", "beta"}
    assert trainable_parameters(model) == {"total": BITFIT_B16 + 7690, "head": 7690}
    frozen = {v.path.rsplit("/", 1)[-1] for v in model.non_trainable_variables}
    assert frozen >= {"kernel", "gamma", "cls", "pos_embedding"}


def test_frozen_weights_get_no_optimizer_state_and_do_not_move():
    from vitbench.train import finetune_config

    model = create_model("vit_mu8", num_classes=4, image_size=32, trainable="biases")
    before = {v.path: np.asarray(v) for v in model.variables}
    config = finetune_config.TrainConfig(lr=0.01, steps=2, batch_size=4, micro_batch_size=4,
                                         optimizer="adamw", weight_decay=0.1,
                                         grad_clip_norm=None, steps_per_epoch=1)
    finetune_config.compile_for_finetuning(model, config)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    model.train_on_batch(x, np.arange(4) % 4)
    model.train_on_batch(x, np.arange(4) % 4)
    moments = [v for v in model.optimizer.variables if v.path.endswith(("momentum",
                                                                         "velocity"))]
    assert len(moments) == 2 * len(model.trainable_variables)
    trained = trainable_parameters(model)["total"]
    assert 8 * trained <= optimizer_state_bytes(model.optimizer) < 8 * trained + 64
    for variable in model.variables:
        moved = not np.array_equal(np.asarray(variable), before[variable.path])
        if "seed_generator" not in variable.path:
            assert moved == variable.trainable, variable.path


def test_bitfit_is_planned_as_vpts_fine_tuning_with_its_backbone_in_inference_mode():
    runs = plan.plan(tasks.load_suite("vtab1k_vpt"), ["dtd"], "vit_b16",
                     plan.Overrides(method="bitfit"))
    assert len(runs) == 21 and {r.method for r in runs} == {"bitfit"}
    config = runs[0].config()
    assert (config["trainable"], config["dropout"], config["protocol"]) == ("biases", 0.0,
                                                                            "vpt")
    finetune = plan.plan(tasks.load_suite("vtab1k_vpt"), ["dtd"], "vit_b16",
                         plan.Overrides(method="finetune"))[0].config()
    assert "trainable" not in finetune and finetune["dropout"] == 0.1
    with pytest.raises(ValueError, match="method bitfit is not implemented under the vit "
                                         "protocol of suite demo"):
        plan.plan(tasks.load_suite("demo"), [], "vit_b16", plan.Overrides(method="bitfit"))
    assert METHODS["bitfit"].fine_tunes


PEFT_METHODS = {"bitfit": ("biases", {}, "BitFit"),
                "lora": ("lora", {"lora_rank": 8, "lora_alpha": 8}, "LoRA"),
                "vpt_deep": ("prompts", {"prompt_tokens": 4, "prompt_dropout": 0.1},
                             "VPT-deep")}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(PEFT_METHODS))
def test_peft_methods_run_on_the_demo_data_and_record_their_trainable_parameters(
        tmp_path, demo_data_dir, capsys, method):
    trainable, options, note = PEFT_METHODS[method]
    flags = ["run", "--suite=demo_vpt", f"--method={method}", f"--results_dir={tmp_path}",
             f"--data_dir={demo_data_dir}", "--tasks=demo_shape", "--resolution=16",
             "--epochs=1", "--warmup_epochs=0", "--lrs=0.01", "--weight_decays=0"]
    assert cli.main(flags) == 0
    written = records.read(records.records_path(tmp_path, "demo_vpt"))
    assert [r["config"]["seed"] for r in written] == [42, 44]
    keras.utils.set_random_seed(0)
    model = create_model("vit_mu8", num_classes=3, image_size=16, trainable=trainable,
                         **options)
    assert [r["trainable_parameters"] for r in written] == [trainable_parameters(model)] * 2
    assert all(r["train"]["optimizer_state_bytes"] > 0 for r in written)
    board = (tmp_path / "demo_vpt.md").read_text()
    row = next(line for line in board.splitlines() if f"scratch:vit_mu8 ({note}" in line)
    backbone = trainable_parameters(model)["total"] - trainable_parameters(model)["head"]
    assert f"| {backbone / 1e6:.3g} " in row and "| Params (M) " in board


# ../shared/spec/peft_protocols.md 2.3: LoRA r = 8 on ViT-B/16's query and value.
LORA_B16 = 294_912


def test_lora_trains_the_query_and_value_updates_only():
    model = create_model("vit_b16", num_classes=10, image_size=32, trainable="lora",
                         lora_rank=8, lora_alpha=8)
    counts = trainable_parameters(model)
    assert counts["total"] - counts["head"] == LORA_B16
    names = {v.path.split("/")[-2:][0] for v in model.trainable_variables
             if not v.path.startswith("head/")}
    assert names == {"query_lora", "value_lora"}  # biases frozen, key and output untouched


@pytest.mark.parametrize("options", [
    {"trainable": "lora", "lora_rank": 2, "lora_alpha": 4},
    {"trainable": "prompts", "prompt_tokens": 3, "prompt_dropout": 0.1}], ids=["lora", "vpt"])
def test_a_saved_peft_model_comes_back_with_its_adapters_and_frozen_weights(tmp_path, options):
    """What a resumed run loads: the same outputs, the same trainable variables."""
    model = create_model("vit_mu8", num_classes=4, image_size=16, **options)
    for variable in model.trainable_variables:
        variable.assign(np.full(variable.shape, 0.05, "float32"))
    model.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
    assert [v.path for v in again.trainable_variables] == \
        [v.path for v in model.trainable_variables]


class TestAgainstPeft:
    """Hugging Face peft's LoRA (`target_modules=["query", "value"]`) on transformers' ViT
    built from the same weights, fed the same [-1, 1] pixels."""

    RANK, ALPHA = 4, 8

    @pytest.fixture
    def pair(self, tmp_path):
        torch = pytest.importorskip("torch")
        transformers = pytest.importorskip("transformers")
        peft = pytest.importorskip("peft")
        from vitbench.checkpoints.loader import load_model

        config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64,
                                        image_size=32, patch_size=8, num_labels=5)
        torch.manual_seed(0)
        reference = transformers.ViTForImageClassification(config)
        with torch.no_grad():
            for parameter in reference.parameters():
                parameter.normal_(0, 0.1)
        reference.save_pretrained(tmp_path)
        # transformers 5 names ViT's query and value projections q_proj and v_proj
        names = {name.rsplit(".", 1)[-1] for name, _ in reference.named_modules()}
        targets = ["query", "value"] if "query" in names else ["q_proj", "v_proj"]
        lora_config = peft.LoraConfig(r=self.RANK, lora_alpha=self.ALPHA,
                                      target_modules=targets, lora_dropout=0.0,
                                      bias="none", modules_to_save=["classifier"])
        theirs = peft.get_peft_model(reference, lora_config).eval()
        ours = load_model(tmp_path, trainable="lora", lora_rank=self.RANK,
                          lora_alpha=self.ALPHA)
        return torch, theirs, ours

    @staticmethod
    def inputs():
        from conftest import images

        return images(batch=3, height=32, width=32, seed=5)

    def logits(self, torch, theirs, x):
        pixels = torch.from_numpy(x).permute(0, 3, 1, 2)
        return theirs(pixel_values=pixels).logits

    @staticmethod
    def lora_pairs(theirs, ours):
        """(our variable, their A or B parameter, as ours is laid out) for every update."""
        import re

        theirs_by_key = {}  # (layer, "q" or "v", "A" or "B") -> parameter
        for name, module in theirs.named_modules():
            found = re.search(r"layers?\.(\d+)\..*\.(q|v)[a-z_]*\.lora_(A|B)\.default$", name)
            if found:
                theirs_by_key[(int(found[1]), found[2], found[3])] = module.weight
        pairs = []
        for variable in ours.trainable_variables:
            parts = variable.path.split("/")
            if parts[-1] not in ("lora_a", "lora_b"):
                continue
            layer, projection = int(parts[0].split("_")[-1]), parts[-2][0]
            if parts[-1] == "lora_a":  # peft's A: (rank, D) -> ours (D, rank)
                pairs.append((variable, theirs_by_key[(layer, projection, "A")],
                              lambda w: w.T))
            else:  # peft's B: (heads x head size, rank) -> ours (rank, heads, head size)
                pairs.append((variable, theirs_by_key[(layer, projection, "B")],
                              lambda w, v=variable: w.T.reshape(v.shape)))
        return pairs

    def test_the_trainable_count_is_peft_s(self, pair):
        _, theirs, ours = pair
        counted = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
        assert trainable_parameters(ours)["total"] == counted
        assert counted == 2 * 2 * (32 * self.RANK + self.RANK * 32) + 33 * 5

    def test_at_the_start_it_is_the_frozen_model(self, pair):
        torch, theirs, ours = pair
        x = self.inputs()
        with torch.no_grad(), theirs.disable_adapter():
            frozen = self.logits(torch, theirs, x).numpy()
        with torch.no_grad():
            np.testing.assert_allclose(self.logits(torch, theirs, x).numpy(), frozen)
        np.testing.assert_allclose(np.asarray(ours(x)), frozen, atol=1e-4, rtol=1e-4)

    def test_with_the_same_updates_the_logits_and_gradients_agree(self, pair):
        """Random non-zero A and B in both: the same logits, and the same gradients of every
        A and B for a cross-entropy loss on one batch (float32, 1e-4)."""
        import jax

        torch, theirs, ours = pair
        rng = np.random.default_rng(1)
        pairs = self.lora_pairs(theirs, ours)
        assert len(pairs) == 2 * 2 * 2
        with torch.no_grad():
            for variable, parameter, layout in pairs:
                parameter.copy_(torch.from_numpy(
                    rng.normal(0, 0.2, tuple(parameter.shape)).astype("float32")))
                variable.assign(layout(parameter.detach().numpy()))
        x, labels = self.inputs(), np.array([0, 3, 4])
        logits = self.logits(torch, theirs, x)
        np.testing.assert_allclose(np.asarray(ours(x)), logits.detach().numpy(), atol=1e-4,
                                   rtol=1e-4)
        torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels)).backward()

        trainable = [v.value for v in ours.trainable_variables]
        frozen = [v.value for v in ours.non_trainable_variables]

        def loss(trainable):
            out, _ = ours.stateless_call(trainable, frozen, x, training=False)
            return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, out, from_logits=True))

        gradients = dict(zip([v.path for v in ours.trainable_variables],
                             jax.grad(loss)(trainable)))
        for variable, parameter, layout in pairs:
            np.testing.assert_allclose(np.asarray(gradients[variable.path]),
                                       layout(parameter.grad.numpy()), atol=1e-4, rtol=1e-4)


# ../shared/spec/peft_protocols.md 2.5: 9,216 x p on ViT-B/16 deep, 768 x p shallow.
@pytest.mark.parametrize("depth, per_prompt", [("deep", 9216), ("shallow", 768)])
def test_vpt_trains_its_prompts_only(depth, per_prompt):
    model = create_model("vit_b16", num_classes=10, image_size=32, trainable="prompts",
                         prompt_tokens=10, prompt_depth=depth)
    counts = trainable_parameters(model)
    assert counts["total"] - counts["head"] == per_prompt * 10
    assert {v.path.rsplit("/", 1)[-1] for v in model.trainable_variables} == {
        "prompts", "kernel", "bias"}  # the head's kernel and bias


class TestPromptInvariants:
    """VPT's prompts: the sequence is class token + p prompts + patches; each deep layer
    replaces only the prompt slots; with no prompts the model is the base model; the prompts'
    order changes nothing (only the class token is read)."""

    @staticmethod
    def models(count, depth="deep"):
        from vitbench.models import prompts

        keras.utils.set_random_seed(0)
        base = create_model("vit_mu8", num_classes=4, image_size=32)
        prompted = create_model("vit_mu8", num_classes=4, image_size=32,
                                prompt_tokens=count, prompt_depth=depth)
        weights = {v.path: np.asarray(v) for v in base.variables}
        for variable in prompted.variables:
            if variable.path in weights:
                variable.assign(weights[variable.path])
        for variable in prompted.variables:  # a head that reads something
            if variable.path.startswith("head/"):
                variable.assign(np.random.default_rng(1).normal(size=variable.shape))
                base.get_layer("head").variables[variable.path.endswith("bias")].assign(
                    np.asarray(variable))
        prompts.initialize(prompted, 7)
        return base, prompted

    X = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")

    def test_the_sequence_is_the_class_token_the_prompts_and_the_patches(self):
        _, prompted = self.models(3)
        patches = (32 // 8) ** 2
        for i in range(4):  # vit_mu8's 4 blocks: each gets 1 + 3 + 16 tokens
            assert tuple(prompted.get_layer(f"prompt_{i}").output.shape[1:]) == (
                1 + 3 + patches, 64)

    def test_a_layer_replaces_only_the_prompt_slots(self):
        from vitbench.models.prompts import Prompts

        layer = Prompts(2, prefix=1, replace=True)
        tokens = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
        out = np.asarray(layer(tokens))
        np.testing.assert_array_equal(out[:, :1], tokens[:, :1])
        np.testing.assert_array_equal(out[:, 3:], tokens[:, 3:])
        np.testing.assert_array_equal(out[:, 1:3], np.zeros((2, 2, 8)))  # the set's start
        inserted = np.asarray(Prompts(2, prefix=1, replace=False)(tokens))
        assert inserted.shape == (2, 8, 8)
        np.testing.assert_array_equal(inserted[:, 3:], tokens[:, 1:])

    def test_without_prompts_it_is_the_base_model(self):
        base, plain = self.models(0)
        np.testing.assert_array_equal(np.asarray(plain(self.X)), np.asarray(base(self.X)))
        _, prompted = self.models(3)
        assert np.abs(np.asarray(prompted(self.X)) - np.asarray(base(self.X))).max() > 1e-4

    @pytest.mark.parametrize("depth", ["deep", "shallow"])
    def test_permuting_the_prompts_changes_nothing(self, depth):
        _, prompted = self.models(5, depth)
        before = np.asarray(prompted(self.X))
        order = np.array([3, 0, 4, 1, 2])
        for variable in prompted.variables:
            if variable.path.endswith("/prompts"):
                variable.assign(np.asarray(variable)[:, order])
        np.testing.assert_allclose(np.asarray(prompted(self.X)), before, atol=1e-5)


def test_vpt_prompts_train_with_sgd_and_l2_as_vpt_does():
    runs = plan.plan(tasks.load_suite("vtab1k_vpt"), ["dtd"], "vit_b16",
                     plan.Overrides(method="vpt_deep"))
    assert len(runs) == 40 + 5  # VPT's prompt grid: 10 rates x 4 decays, then 5 seeds
    config = runs[0].config()
    assert (config["optimizer"], config["prompt_tokens"], config["prompt_depth"],
            config["prompt_dropout"], config["trainable"], config["dropout"]) == (
        "sgd(momentum=0.9)", 10, "deep", 0.1, "prompts", 0.0)
    assert runs[0].config()["lr_scaling"] == "batch/256"


def test_sgds_l2_equals_torchs_weight_decay_with_biases_exempt():
    torch = pytest.importorskip("torch")
    from vitbench.train import optimizers

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 3)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    kernel, bias = (np.asarray(w) for w in model.get_weights())
    model.compile(optimizer=optimizers.SGD(0.1, momentum=0.9, l2=0.05), loss="mse")
    for _ in range(4):
        model.train_on_batch(x, y)
    w, b = torch.nn.Parameter(torch.tensor(kernel)), torch.nn.Parameter(torch.tensor(bias))
    oracle = torch.optim.SGD([{"params": [w], "weight_decay": 0.05},
                              {"params": [b], "weight_decay": 0.0}], lr=0.1, momentum=0.9)
    for _ in range(4):
        oracle.zero_grad()
        ((torch.tensor(x) @ w + b - torch.tensor(y)) ** 2).mean().backward()
        oracle.step()
    np.testing.assert_allclose(model.get_weights()[0], w.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_the_prompt_count_is_chosen_on_val200_with_the_rate_and_decay():
    """`--prompt_tokens 5,10`: every (rate, decay) tried with each p; the final runs take the
    best, ties to fewer prompts; the dry run shows p."""
    runs = plan.plan(tasks.load_suite("vtab1k_vpt"), ["dtd"], "vit_b16",
                     plan.Overrides(method="vpt_deep", lrs=(1.0,), weight_decays=(0.0,),
                                    prompt_tokens=(5, 10)))
    tunes, finals = runs[:2], runs[2:]
    assert [r.prompt_tokens for r in tunes] == [5, 10] and len(finals) == 5
    assert tunes[1].config()["prompt_tokens"] == 10
    done = {records.config_hash(r.config()): {"metrics": {"accuracy": 0.6}} for r in tunes}
    assert plan.resolve(finals[0], done).prompt_tokens == 5  # a tie: fewer prompts
    done[records.config_hash(tunes[1].config())] = {"metrics": {"accuracy": 0.7}}
    chosen = plan.resolve(finals[0], done)
    assert chosen.prompt_tokens == 10 and chosen.config()["prompt_tokens"] == 10
    assert records.setting_of(chosen.config()) == (1.0, 0.0, 10)


def test_prompt_tokens_are_refused_where_there_are_no_prompts():
    with pytest.raises(ValueError, match="--prompt_tokens applies to VPT's prompts"):
        plan.plan(tasks.load_suite("vtab1k_vpt"), ["dtd"], "vit_b16",
                  plan.Overrides(method="lora", prompt_tokens=(5,)))


def test_the_dry_run_shows_the_prompt_grid(capsys):
    assert cli.main(["run", "--suite=vtab1k_vpt", "--ckpt=scratch:vit_ti16", "--dry_run",
                     "--method=vpt_deep", "--tasks=dtd", "--prompt_tokens=5,10"]) == 0
    out = capsys.readouterr().out
    assert " p " in out.splitlines()[0] and "0 of 85 runs done" in out


def test_the_device_peak_is_read_where_the_backend_reports_one(monkeypatch):
    """On a GPU JAX reports the process's peak bytes (recorded with each fine-tuning run);
    a CPU reports none, and nothing is recorded."""
    import jax

    from vitbench.train import execution

    assert execution.device_peak_bytes() is None  # this machine's CPU

    class Device:
        def memory_stats(self):
            return {"peak_bytes_in_use": 123_456, "bytes_in_use": 1}

    monkeypatch.setattr(jax, "local_devices", lambda: [Device()])
    assert execution.device_peak_bytes() == 123_456


def test_bitfit_rows_get_their_delta_to_vpts_bias_row(tmp_path):
    """VPT's published Bias row (spec 3a) sits on the vtab1k_vpt board beside BitFit runs of
    vit_b16, which get their deltas to it; no LoRA row is there (NOAH's is another
    protocol)."""
    from test_leaderboards import GENERATED, rows_by_checkpoint, write_records

    from vitbench.leaderboards import publish

    lines = []
    for run in plan.plan(tasks.load_suite("vtab1k_vpt"), [], "vit_b16",
                         plan.Overrides(method="bitfit", lrs=(0.001,), weight_decays=(0.0,))):
        config = run.config()
        lines.append({"config_hash": records.config_hash(config), "config": config,
                      "status": "finished", "metrics": {"accuracy": 0.5}})
    write_records(tmp_path, "vtab1k_vpt", lines)
    publish.write_all(tmp_path, generated=GENERATED)
    rows = rows_by_checkpoint((tmp_path / "vtab1k_vpt.md").read_text())
    assert "(Δ -22.80)" in rows["vit_b16 (BitFit)"]["CIFAR-100"]  # Bias: 72.8
    assert f"(Δ {50 - 62.05:+.2f})" in rows["vit_b16 (BitFit)"]["Mean"]  # spec 3b: 62.05
    bias = rows["*ViT-B/16, ImageNet-21k, BitFit (VPT paper Table 13)*"]
    assert (bias["CIFAR-100"], bias["Mean"]) == ("72.80", "62.05")
    assert not any("LoRA" in label for label in rows)
