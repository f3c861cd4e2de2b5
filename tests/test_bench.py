"""`vitbench bench` and `benchmarks/peers.py`: measurements as JSON lines, ratios to a peer."""

import importlib.util
import pathlib
import sys

import pytest
from conftest import mock_tfds

from vitbench import bench, cli, tasks

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    """The benchmark script `benchmarks/<name>.py`, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # for dataclasses, which look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pipeline_benchmark_measures_four_stages():
    task = tasks.load_suite("demo").task("demo_color")
    with mock_tfds(num_examples=10):
        measurements = bench.pipeline_throughput(task, batch_size=4, batches=3, warmup=1)
    assert [m.name for m in measurements] == ["read and decode", "eval pipeline",
                                              "train pipeline", "train batches on the device"]
    # 10 examples in batches of 4: eval passes end on a batch of 2 (4 | 4, 2, 4 timed).
    assert [m.images for m in measurements] == [12, 10, 12, 12]
    assert all(m.seconds > 0 for m in measurements)
    records = bench.pipeline_records(task, measurements, batch_size=4, cores=2)
    assert [r["ratio_to_peer"] for r in records][0] == 1.0  # the peer's ratio to itself
    for record, measurement in zip(records, measurements):
        assert record["images_per_second"] == pytest.approx(measurement.images
                                                            / measurement.seconds)
        assert record["images_per_second_per_core"] == record["images_per_second"] / 2
        assert record["ratio_to_peer"] == pytest.approx(
            record["images_per_second"] / records[0]["images_per_second"])


def test_bench_command_prints_one_json_line_per_pipeline_stage(capsys):
    import json

    with mock_tfds(num_examples=10):
        status = cli.main(["bench", "--suite=demo", "--task=demo_shape", "--batch_size=4",
                           "--batches=2", "--resolution=16"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert status == 0
    assert [line["stage"] for line in lines] == ["read and decode", "eval pipeline",
                                                 "train pipeline", "train batches on the device"]
    assert {(line["mode"], line["task"], line["resolution"], line["batch_size"],
             line["peer"], line["cores"]) for line in lines} == \
        {("pipeline", "demo_shape", 16, 4, "read and decode", bench.cpu_cores())}


# Training runs whole calls of up to 8 steps (execution.MAX_BATCHES_PER_CALL): 10 -> 16; in
# passes of 2 images, whole updates of 2 passes: up to 4 updates a call, 5 -> 8.
@pytest.mark.slow
@pytest.mark.parametrize("mode,factor,remat,feed,batches,steps,dropout,micro", [
    ("infer", 1, False, "host", 2, 2, None, None), ("infer", 1, False, "device", 3, 3, None, 2),
    ("train", 3, False, "device", 10, 16, None, None), ("train", 3, True, "host", 2, 2, 0.1, None),
    ("train", 3, False, "host", 5, 8, None, 2)])
def test_model_benchmark_reports_throughput_flops_and_utilisation(capsys, mode, factor, remat,
                                                                  feed, batches, steps,
                                                                  dropout, micro):
    import json

    from vitbench.models import zoo

    assert cli.main(["bench", f"--mode={mode}", "--model=vit_mu8", "--batch_size=4",
                     "--resolution=32", f"--batches={batches}", "--warmup=1",
                     "--peak_tflops=2", f"--{'' if remat else 'no'}remat",
                     f"--input={feed}"] + ([f"--dropout={dropout}"] if dropout else [])
                    + ([f"--micro_batch_size={micro}"] if micro else [])) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    flops = zoo.count_flops(zoo.get_config("vit_mu8"), 32, 1000) * factor
    # Without --micro_batch_size the demo model's batch is one pass, on a CPU too.
    assert (line["implementation"], line["mode"], line["batch_size"], line["steps"],
            line["remat"], line["input"], line["dropout"], line["micro_batch_size"]) == (
        "vitbench", mode, 4, steps, remat, feed, dropout or 0.0, micro or 4)
    assert line["images_per_second"] > 0
    assert line["step_seconds"] == pytest.approx(4 / line["images_per_second"])
    assert line["gflops_per_image"] == pytest.approx(flops / 1e9)
    assert line["tflops"] == pytest.approx(line["images_per_second"] * flops / 1e12)
    assert line["mfu"] == pytest.approx(line["tflops"] / 2)
    assert line["device"] == "cpu" and line["peak_memory_gb"] is None
    assert line["software"].startswith("keras 3.") and line["devices"] == 1


BENCH_ON_TWO_DEVICES = """
import json
from vitbench import bench
for mode, feed, devices, micro in (("train", "host", None, None), ("infer", "device", None, 2),
                                   ("train", "device", None, 2), ("train", "device", 1, None)):
    print(json.dumps(bench.model_throughput("vit_mu8", mode, 4, 32, steps=2, warmup=1, peak=2,
                                            input=feed, devices=devices,
                                            micro_batch_size=micro)))
for batch, devices, micro in ((6, 3, None), (6, 2, 3), (5, 2, None)):
    try:
        bench.model_throughput("vit_mu8", "train", batch, 32, steps=1, devices=devices,
                               micro_batch_size=micro)
    except ValueError as error:
        print("error:", error)
"""


@pytest.mark.slow
def test_model_benchmark_runs_data_parallel_over_every_local_device():
    import json
    import os
    import subprocess
    import sys

    from conftest import UNOPTIMISED_BACKEND

    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": f"{UNOPTIMISED_BACKEND} --xla_force_host_platform_device_count=2"}
    result = subprocess.run([sys.executable, "-c", BENCH_ON_TWO_DEVICES], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    measured = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(m["mode"], m["input"], m["devices"], m["micro_batch_size"]) for m in measured] == [
        ("train", "host", 2, 4), ("infer", "device", 2, 2), ("train", "device", 2, 2),
        ("train", "device", 1, 4)]
    for line in measured:
        assert line["batch_size"] == 4 and line["images_per_second"] > 0  # the global batch
        assert line["peak_tflops"] == 2  # one device's; the utilisation is of all of them
        assert line["mfu"] == pytest.approx(line["tflops"] / (2 * line["devices"]))
    assert [line for line in lines if line.startswith("error:")] == [
        "error: 3 devices asked for; there are 2: cpu:0, cpu:1",
        "error: the batch (6) and the micro-batch (3) must split evenly over the 2 devices: "
        "make --batch_size and --micro_batch_size multiples of 2, or choose fewer --devices",
        "error: the batch (5) and the micro-batch (5) must split evenly over the 2 devices: "
        "make --batch_size and --micro_batch_size multiples of 2, or choose fewer --devices"]


def test_photos_script_times_the_pipelines_on_jpegs(tmp_path, capsys, monkeypatch):
    import json

    from PIL import Image

    photos = load_script("photos")
    monkeypatch.setattr(photos, "IMAGES", {"train": 6, "test": 4})
    assert photos.main(["--out", str(tmp_path), "--resolution", "32", "--batches", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    assert [(r["stage"], r["task"], r["resolution"]) for r in lines] == [
        (stage, "photos", 32) for stage in ("read and decode", "eval pipeline", "train pipeline",
                                            "train batches on the device")]
    written = sorted((tmp_path / "photos").glob("*/*/*.jpg"))
    assert len(written) == 10 and {path.parent.name for path in written} == {"class0", "class1"}
    with Image.open(written[0]) as image:
        assert (image.format, image.size) == ("JPEG", photos.SIZE)


def test_spec_sheet_peaks_by_device_and_precision():
    """Dense tensor-core peaks; fp32 is TF32's (JAX's default for float32 matmuls on these
    GPUs); the PCIe and NVL cards have their own."""
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 494.7
    assert bench.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.5
    assert bench.peak_tflops("NVIDIA H100 NVL", "bf16") == 835.5
    assert bench.peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert bench.peak_tflops("NVIDIA H200 NVL", "fp32") == 417.5
    assert bench.peak_tflops("NVIDIA A100-SXM4-40GB", "fp32") == 156.0
    assert bench.peak_tflops("cpu", "fp32") is None


@pytest.mark.parametrize("flags, message", [
    (["--mode=infer", "--remat"], "applies to training only"),
    (["--mode=train", "--peak_tflops=0"], "peak TFLOP/s must be positive, not 0.0")])
def test_model_benchmark_settings_that_cannot_apply_are_refused(capsys, flags, message):
    assert cli.main(["bench", "--model=vit_mu8", "--batch_size=2", "--resolution=16"]
                    + flags) == 1
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_peers_script_times_timm_on_the_same_model():
    import json
    import subprocess

    pytest.importorskip("timm")
    script = BENCHMARKS / "peers.py"
    result = subprocess.run([sys.executable, str(script), "--model=vit_mu8", "--mode=train",
                             "--batch_size=4", "--resolution=32", "--batches=2", "--warmup=1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    peer, ours = map(json.loads, lines[:2])  # timm first (its memory handed back), then ours
    assert (peer["implementation"], ours["implementation"]) == ("timm eager", "vitbench")
    assert peer["gflops_per_image"] == pytest.approx(ours["gflops_per_image"])
    ratio = ours["images_per_second"] / peer["images_per_second"]
    assert lines[2].startswith(f"vitbench / timm eager: {ratio:.2f}x")


def test_the_timm_peer_has_our_architecture():
    from vitbench.models import zoo

    pytest.importorskip("timm")
    peers = load_script("peers")
    for name, size in [("vit_mu8", 32), ("vit_s16", 224)]:
        peer = peers.timm_model(name, size, 1000)
        assert sum(p.numel() for p in peer.parameters()) == \
            zoo.count_params(zoo.get_config(name), size, 1000)


def test_the_timm_peer_has_our_regularisation(monkeypatch):
    from vitbench.models import zoo

    pytest.importorskip("timm")
    peers = load_script("peers")
    assert zoo.get_config("vit_l16").dropout == 0.1  # the official L/16 fine-tunes with it
    monkeypatch.setitem(zoo.ZOO, "vit_mu8", zoo.get_config(
        "vit_mu8", dropout=0.1, attention_dropout=0.05, stochastic_depth=0.2))
    peer = peers.timm_model("vit_mu8", 32, 10)
    rates = {name: module.p for name, module in peer.named_modules()
             if type(module).__name__ == "Dropout"}
    assert rates["pos_drop"] == 0.1
    assert all(rates[f"blocks.{i}.{site}"] == 0.1 for i in range(len(peer.blocks))
               for site in ("attn.proj_drop", "mlp.drop1", "mlp.drop2"))
    assert all(rates[f"blocks.{i}.attn.attn_drop"] == 0.05 for i in range(len(peer.blocks)))
    drop_paths = [block.drop_path1.drop_prob if hasattr(block.drop_path1, "drop_prob") else 0.0
                  for block in peer.blocks]
    assert drop_paths[0] == 0.0 and drop_paths[-1] == pytest.approx(0.2)
    assert peers.timm_model("vit_mu8", 32, 10, dropout=0.0).pos_drop.p == 0.0  # --dropout


def test_kernel_profile_counts_each_gpu_kernel_once(tmp_path):
    import gzip
    import json

    kernels = load_script("profile_kernels")

    def named(kind, pid, tid, name):
        return {"ph": "M", "name": kind, "pid": pid, "tid": tid, "args": {"name": name}}

    def kernel(tid, name, microseconds, pid=2):
        return {"ph": "X", "pid": pid, "tid": tid, "name": name, "dur": microseconds}

    # JAX's trace: the GPU's stream lines, its "XLA Ops" line repeating them, host events.
    events = [named("process_name", 1, 0, "/host:CPU"),
              named("process_name", 2, 0, "/device:GPU:0"),
              named("thread_name", 2, 7, "Stream #14(Compute)"),
              named("thread_name", 2, 8, "Stream #15(MemcpyH2D)"),
              named("thread_name", 2, 9, "XLA Ops"),
              kernel(7, "nvjet_sm90_gemm", 300), kernel(7, "loop_add_fusion", 100),
              kernel(7, "nvjet_sm90_gemm", 300), kernel(8, "MemcpyH2D", 50),
              kernel(9, "dot.1", 600), kernel(9, "add.2", 100), kernel(0, "host", 5000, pid=1)]
    path = tmp_path / "plugins" / "profile" / "run" / "perfetto_trace.json.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as file:
        json.dump({"traceEvents": events}, file)
    found = kernels.jax_kernels(str(tmp_path))
    assert found == {"nvjet_sm90_gemm": pytest.approx(600e-6),
                     "loop_add_fusion": pytest.approx(100e-6), "MemcpyH2D": pytest.approx(50e-6)}
    report = kernels.summary("vitbench", found, steps=2, wall=0.002)
    assert report["kernel_ms_per_step"] == pytest.approx(0.375)
    assert report["categories"] == pytest.approx({"gemm": 0.3, "elementwise/fusion": 0.05,
                                                  "copy/transpose": 0.025})


def test_sweep_cost_script_scales_vtab1k_down_with_its_splits_and_tune_fraction(tmp_path):
    load_script("photos")  # the photographs it trains on
    sweep_cost = load_script("sweep_cost")
    path = tmp_path / "vtab_shaped.toml"
    path.write_text(sweep_cost.suite_toml(tmp_path / "photos", 96, 250, 32))
    task = tasks.load_suite(str(path)).task("photos")
    vtab = tasks.load_suite("vtab1k").task("dtd").protocol
    assert (task.protocol.steps, task.protocol.batch_size, task.protocol.resolution) == \
        (250, 32, 96)
    assert task.protocol.schedule("tune") == (50, 4) and task.protocol.schedule("final") == \
        (250, 20)  # VTAB-1k's shares: 500 of 2500 steps, 200 of them warm-up
    assert (task.protocol.train_pp, task.protocol.eval_pp) == (vtab.train_pp, vtab.eval_pp)
    assert [task.split(role) for role in ("tune_train", "tune_val", "fit", "test")] == \
        ["train[:800]", "train[800:]", "train", "test"]
    assert sum(sweep_cost.IMAGES.values()) == 1200


def test_defaults_finish_in_minutes_on_a_cpu_and_a_bar_shows_the_time_left(capsys):
    """Tried as a new user would: no --batch_size, --batches or --warmup on this CPU gives
    the CPU's small defaults, and each measurement draws a bar on stderr (not in the JSON
    lines on stdout)."""
    import json

    from vitbench.commands import bench as bench_command

    assert cli.main(["bench", "--mode=infer", "--model=vit_mu8", "--resolution=16"]) == 0
    captured = capsys.readouterr()
    line = json.loads(captured.out.strip().splitlines()[-1])
    cpu = bench_command.CPU_DEFAULTS
    assert (line["batch_size"], line["steps"], line["warmup"]) == (
        cpu["batch_size"], cpu["batches"], cpu["warmup"])
    assert "vit_mu8 infer" in captured.err and "batch" in captured.err
    assert all(text.startswith("{") for text in captured.out.strip().splitlines())
