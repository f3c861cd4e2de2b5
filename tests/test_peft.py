"""Parameter-efficient fine-tuning under the VPT protocol: BitFit trains exactly the biases
and LayerNorm offsets (the spec's count), with no state for the frozen weights, and runs end
to end on the demo data."""

import keras
import numpy as np
import pytest

from vitbench import cli, records, tasks
from vitbench.models.vit import create_model
from vitbench.transfer import plan
from vitbench.transfer.methods import METHODS, trainable_parameters

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


@pytest.mark.slow
def test_bitfit_runs_on_the_demo_data_and_records_its_trainable_parameters(
        tmp_path, demo_data_dir, capsys):
    flags = ["run", "--suite=demo_vpt", "--method=bitfit", f"--results_dir={tmp_path}",
             f"--data_dir={demo_data_dir}", "--tasks=demo_shape", "--resolution=16",
             "--epochs=1", "--warmup_epochs=0", "--lrs=0.01", "--weight_decays=0"]
    assert cli.main(flags) == 0
    written = records.read(records.records_path(tmp_path, "demo_vpt"))
    assert [r["config"]["seed"] for r in written] == [42, 44]
    keras.utils.set_random_seed(0)
    model = create_model("vit_mu8", num_classes=3, image_size=16, trainable="biases")
    assert [r["trainable_parameters"] for r in written] == [trainable_parameters(model)] * 2
    board = (tmp_path / "demo_vpt.md").read_text()
    row = next(line for line in board.splitlines() if "scratch:vit_mu8 (BitFit" in line)
    backbone = trainable_parameters(model)["total"] - trainable_parameters(model)["head"]
    assert f"| {backbone / 1e6:.2f} " in row and "| Params (M) |" in board
