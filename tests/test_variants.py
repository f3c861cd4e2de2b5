"""`benchmarks/variants.py`: each candidate computes what vitbench's own step computes (a
dropout of the configured rate with matching gradients; the same batch on the device), and the
script times every variant against vitbench's in one command."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bench import BENCHMARKS, load_script
from test_dropout import assert_fraction

variants = load_script("variants")
RATE = 0.3


def masked(name, x, seed=(7, 9)):
    """(output, gradient of sum(output * weights) with respect to `x`, the weights) of the
    dropout variant `name`."""
    weights = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, x.shape), x.dtype)
    fn = variants.DROPOUT_VARIANTS[name]
    settings = variants.jax_settings(variants.DROPOUT_SETTINGS.get(name, {}))

    def loss(x):
        return jnp.sum(fn(x, RATE, jnp.asarray(seed, jnp.uint32)) * weights)

    with settings:
        output = jax.jit(lambda x: fn(x, RATE, jnp.asarray(seed, jnp.uint32)))(x)
        gradient = jax.jit(jax.grad(loss))(x)
    return np.asarray(output), np.asarray(gradient), np.asarray(weights)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vitbench", "keras", "rbg", "recomputed", "materialised",
                                  "kernel", "packed"])
def test_dropout_variants_drop_the_rate_and_their_gradients_follow_the_mask(name):
    x = jnp.ones((8, 50, 67), jnp.float32)
    output, gradient, weights = masked(name, x)
    kept = output > 0
    assert_fraction(1 - kept.mean(), RATE, kept.size)
    np.testing.assert_allclose(output[kept], 1 / (1 - RATE), rtol=1e-4)
    np.testing.assert_array_equal(output[~kept], 0)
    # d(sum(dropout(x) * w))/dx = w * mask / keep: the forward pass's mask, the same scale.
    np.testing.assert_allclose(gradient, weights * output, rtol=1e-6)
    again, _, _ = masked(name, x)
    np.testing.assert_array_equal(again, output)  # the same seed, the same mask
    other, _, _ = masked(name, x, seed=(8, 9))
    assert (other > 0).mean() != pytest.approx(1.0) and (other != output).any()


@pytest.mark.parametrize("name", ["recomputed", "materialised", "kernel", "packed"])
def test_variants_of_vitbench_masks_draw_the_same_masks_and_gradients(name):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 9, 41)), jnp.float32)
    ours, our_gradient, _ = masked("vitbench", x)
    theirs, gradient, _ = masked(name, x)
    np.testing.assert_array_equal(theirs, ours)
    np.testing.assert_array_equal(gradient, our_gradient)


def test_recomputed_masks_are_not_kept_and_packed_ones_are_kept_as_bits(capsys):
    from jax.ad_checkpoint import print_saved_residuals

    def saved(name):
        fn = variants.DROPOUT_VARIANTS[name]
        seed = jnp.asarray((1, 2), jnp.uint32)
        print_saved_residuals(lambda x: jnp.sum(fn(x, RATE, seed) ** 2),
                              jnp.ones((2, 9, 41), jnp.float32))
        return capsys.readouterr().out

    assert "bool[2,9,41]" in saved("vitbench")  # the mask, a byte an element
    assert "bool[" not in saved("recomputed")  # only the seed
    packed = saved("packed")
    assert "u8[2,9,6]" in packed and "bool[" not in packed  # 41 bits in 6 bytes


@pytest.mark.parametrize("name, barriers", [("vitbench", 0), ("materialised", 1), ("packed", 1),
                                            ("recomputed", 1)])
def test_materialised_and_packed_masks_and_the_recomputed_gradient_pass_a_barrier(name, barriers):
    fn = variants.DROPOUT_VARIANTS[name]
    seed = jnp.asarray((1, 2), jnp.uint32)
    program = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(fn(x, RATE, seed))))(
        jnp.ones((2, 40), jnp.float32)))
    assert program.count("optimization_barrier") == barriers


def test_no_dropout_is_the_identity():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)), jnp.float32)
    output, gradient, weights = masked("none", x)
    np.testing.assert_array_equal(output, x)
    np.testing.assert_array_equal(gradient, weights)


@pytest.mark.parametrize("name", sorted(variants.TRANSFER_VARIANTS))
def test_transfer_variants_put_the_same_batch_on_the_device(name):
    variant = variants.TRANSFER_VARIANTS[name]
    if not variant.available():
        pytest.skip(f"{name} needs what this platform lacks")
    batch = np.random.default_rng(3).uniform(-1, 1, (7, 8, 8, 3)).astype(np.float32)  # 7: odd
    copied = variant.copy(batch)
    assert isinstance(copied, jax.Array)
    assert copied.devices() == {jax.local_devices()[0]}
    np.testing.assert_array_equal(np.asarray(copied), batch)


def test_dispatching_first_predicts_what_vitbench_predicts_batch_by_batch():
    from conftest import TINY, randomize

    from vitbench.evaluate import prediction
    from vitbench.models.vit import create_model

    model = randomize(create_model(TINY, 5, 16))
    images = np.random.default_rng(4).uniform(-1, 1, (7, 16, 16, 3)).astype(np.float32)
    batches = [{"image": images[:3], "id": 0}, {"image": images[3:6], "id": 1},
               {"image": images[6:], "id": 2}]  # the last one short: padded, then cut
    ours = list(prediction.predict_batches(model.predict_on_batch, batches, 3))
    theirs = list(variants.dispatch_first_batches(model.predict_on_batch, iter(batches), 3))
    assert [batch["id"] for _, batch in theirs] == [0, 1, 2]
    assert [output.shape for output, _ in theirs] == [(3, 5), (3, 5), (1, 5)]
    for (expected, _), (output, _) in zip(ours, theirs):
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)
    assert list(variants.dispatch_first_batches(model.predict_on_batch, iter([]), 3)) == []


@pytest.mark.slow
@pytest.mark.parametrize("group, chosen, peer", [("dropout", ["vitbench", "none"], True),
                                                 ("transfer", ["dispatch_first", "vitbench"],
                                                  False)])
def test_the_script_times_each_variant_against_vitbench_in_one_command(group, chosen, peer):
    if peer:
        pytest.importorskip("timm")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "variants.py"), group, "--model=vit_mu8",
         "--resolution=32", "--batch_size=4", "--batches=2", "--warmup=1",
         "--variants=" + ",".join(chosen), "--peer" if peer else "--no-peer"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    measured = [json.loads(line) for line in lines if line.startswith("{")]
    others = [v for v in chosen if v != "vitbench"]
    assert [m["variant"] for m in measured] == ["vitbench"] + ["timm"] * peer + others
    assert all(m["model"] == "vit_mu8" and m["batch_size"] == 4 for m in measured)
    mode = {"dropout": "train", "transfer": "infer"}[group]
    assert all(m["mode"] == mode for m in measured)
    if group == "dropout":
        assert all(m["dropout"] == 0.1 for m in measured)  # timm's too
    else:
        assert all(m["copy_gb_per_second"] > 0 for m in measured)
    ours, other = measured[0], measured[-1]
    ratios = [line for line in lines if " / " in line and "x (" in line]
    assert ratios[0].startswith(f"{group} vitbench / vitbench: 1.00x")
    ratio = other["images_per_second"] / ours["images_per_second"]
    if peer:  # each ratio as soon as it can be given; on a CPU the peer is timm eager
        timm = measured[1]
        assert timm["implementation"] == "timm eager"
        to_timm = [m["images_per_second"] / timm["images_per_second"] for m in (ours, other)]
        assert ratios[1].startswith(f"{group} vitbench / timm eager: {to_timm[0]:.2f}x")
        assert ratios[2].startswith(f"{group} {other['variant']} / vitbench: {ratio:.2f}x")
        assert ratios[3].startswith(f"{group} {other['variant']} / timm eager: {to_timm[1]:.2f}x")
        assert len(ratios) == 4
    else:
        assert ratios[1].startswith(f"{group} {other['variant']} / vitbench: {ratio:.2f}x")
        assert len(ratios) == 2


def test_a_failing_variant_is_reported_and_skipped(monkeypatch, capsys):
    failing = [sys.executable, "-c", "import sys; sys.exit('out of memory')"]
    monkeypatch.setattr(variants, "_child_command", lambda args, name: failing)
    args = variants.argparse.Namespace(child_timeout=60)
    assert variants.measure(args, "rbg") is None
    output = capsys.readouterr()
    assert output.out == "rbg: failed (exit 1): out of memory\n"
    assert "out of memory" in output.err  # the end of its error output, for the log
    assert variants.main(["dropout", "--variants=rbg"]) == 1  # no ratios without vitbench's
    assert "vitbench's own implementation was not measured" in capsys.readouterr().out


@pytest.mark.slow
def test_a_variant_past_its_time_is_reported_and_skipped(monkeypatch, capsys):
    hanging = [sys.executable, "-c", "import sys, time; print('compiling', file=sys.stderr, "
               "flush=True); time.sleep(60)"]
    monkeypatch.setattr(variants, "_child_command", lambda args, name: hanging)
    assert variants.measure(variants.argparse.Namespace(child_timeout=3), "kernel") is None
    output = capsys.readouterr()
    assert output.out == "kernel: no result within 3 s\n"
    assert "compiling" in output.err


def test_an_unknown_variant_is_refused_with_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        variants.main(["dropout", "--variants=vitbench,philox"])
    error = capsys.readouterr().err
    assert "unknown dropout variants philox" in error
    assert "vitbench, packed, recomputed, materialised, kernel, rbg, keras, none" in error
