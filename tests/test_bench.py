"""`vitbench bench --mode pipeline`: measures each stage and reports ratios to the peer."""

import pytest

from conftest import mock_tfds
from vitbench import bench, cli, tasks


def test_pipeline_benchmark_measures_three_stages():
    task = tasks.load_suite("demo").task("demo_color")
    with mock_tfds(num_examples=10):
        measurements = bench.pipeline_throughput(task, batch_size=4, batches=3, warmup=1)
    assert [m.name for m in measurements] == ["read and decode", "eval pipeline",
                                              "train pipeline"]
    # 10 examples in batches of 4: eval passes end on a batch of 2 (4 | 4, 2, 4 timed).
    assert [m.images for m in measurements] == [12, 10, 12]
    assert all(m.seconds > 0 for m in measurements)
    table = bench.report(measurements, cores=2)
    first_row = table.splitlines()[2].split()
    assert first_row[-1] == "1.00"  # the peer's ratio to itself
    assert float(first_row[-2]) * 2 == pytest.approx(float(first_row[-3]), abs=0.02)


def test_bench_command(capsys):
    with mock_tfds(num_examples=10):
        status = cli.main(["bench", "--suite=demo", "--task=demo_shape", "--batch_size=4",
                           "--batches=2", "--resolution=16"])
    out = capsys.readouterr().out
    assert status == 0
    assert "demo/demo_shape at 16 px, batch 4" in out and "train pipeline" in out
