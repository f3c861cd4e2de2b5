"""`vitbench bench`: throughput benchmarks, as ratios against a peer run in the same process."""

from __future__ import annotations

from vitbench.commands import command


def _define(fv):
    from absl import flags

    flags.DEFINE_enum("mode", "pipeline", ["pipeline"],
                      "What to measure. pipeline: images/s of a task's train and eval "
                      "preprocessing, against the raw read of the same data.", flag_values=fv)
    flags.DEFINE_string("suite", "demo", "Suite name or suite TOML path.", flag_values=fv)
    flags.DEFINE_string("task", None, "Task of the suite (default: its first).", flag_values=fv)
    flags.DEFINE_integer("resolution", None, "Override the protocol's resolution.",
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", 64, "Batch size.", flag_values=fv)
    flags.DEFINE_integer("batches", 20, "Batches timed per stage (after 3 warm-up batches).",
                         flag_values=fv)
    flags.DEFINE_string("data_dir", None, "TFDS data dir.", flag_values=fv)


@command("bench", _define)
def run(fv):
    """Measure throughput (see --mode), reported next to a peer measured in the same run.

    `--mode pipeline` times reading and decoding a task's data, its eval pipeline and
    its train pipeline (augmentation included) at the protocol's resolution, and prints
    images/s, images/s per CPU core and each stage's ratio to that read.
    """
    import dataclasses

    from vitbench import bench, tasks

    suite = tasks.load_suite(fv.suite)
    task = suite.task(fv.task) if fv.task else suite.tasks[0]
    if fv.resolution:
        task = dataclasses.replace(task, protocol=dataclasses.replace(
            task.protocol, resolution=fv.resolution))
    measurements = bench.MODES[fv.mode](task, fv.batch_size, fv.batches, fv.data_dir)
    print(f"{fv.mode} throughput: {suite.name}/{task.name} at {task.protocol.resolution} px, "
          f"batch {fv.batch_size}\n")
    print(bench.report(measurements))
    return 0
