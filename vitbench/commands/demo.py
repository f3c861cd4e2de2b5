"""`vitbench demo`: the whole ViT study in miniature, offline, in a few minutes on a CPU."""

from __future__ import annotations

from absl import flags

from vitbench.commands import command, options

SCRATCH = "scratch:vit_mu8"


def _define(fv):
    options.define_results_dir(fv, "Where records, the pretraining workdir "
                               "(pretrain/demo_vit_mu8[_steps<N>]) and the leaderboards go.")
    options.define_data_dir(fv, ", where the demo dataset is generated")
    flags.DEFINE_integer("pretrain_steps", None, "Pretraining steps (default: the demo "
                         "recipe's 4 epochs, 625 steps).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("steps", None, "Fine-tuning steps per task (default: the demo "
                         "suite's 300).", lower_bound=1, flag_values=fv)
    flags.DEFINE_list("tasks", [], "Only these demo tasks, of demo_count, demo_shape, demo_color, "
                      "demo_position (default: all four).", flag_values=fv)
    flags.DEFINE_list("shots", None, "Few-shot: images per class (default 1,5,10,25).",
                      flag_values=fv)


def gains(results):
    """A frame of what pretraining bought per task and evaluation, from the paired comparison
    of the pretrained (A) and scratch (B) rows (`leaderboards.compare`)."""
    import pandas as pd

    from vitbench.evaluate import comparison

    lines = []
    for result in results:
        for task in result.tasks:
            d = task.difference
            if d is None:
                continue
            evaluation = (task.column.metric.replace("shot", "-shot")
                          if result.board.method == "fewshot" else "fine-tuned")
            lines.append({"task": task.column.task, "evaluation": evaluation,
                          "from scratch": f"{d.accuracy_b:.3f}",
                          "pretrained": f"{d.accuracy_a:.3f}", "gain": f"{d.delta:+.3f}",
                          "95% interval": f"[{d.low:+.3f}, {d.high:+.3f}]",
                          "p": f"{d.p_value:.2g}", "test": d.test,
                          "verdict": comparison.verdict(d.delta, task.adjusted).replace(
                              "A better", "pretrained better").replace("B better",
                                                                       "scratch better")})
    return pd.DataFrame(lines)


@command("demo", _define)
def demo(fv):
    """The ViT study in miniature, offline: pretrain, transfer, compare with no pretraining.

    1. Pretrains vit_mu8 on the `upstream` split of the generated demo dataset (20000 images
       named by shape, colour and object count together: 48 classes;
       vitbench/suites/pretrain/demo.toml).
    2. Transfers it to the demo suite (demo_count, demo_shape, demo_color, demo_position):
       fine-tuning and few-shot linear probes, recorded as `vitbench run` records them.
    3. Does the same from random initialisation (scratch:vit_mu8).
    4. Writes the leaderboards (results/demo.md, results/demo_fewshot.md, both models as rows)
       and prints what pretraining bought per task.
    Finished steps are skipped when it runs again.
    """
    from vitbench import tasks
    from vitbench.leaderboards import boards, collect, compare, publish
    from vitbench.train import pretrain as pretrain_lib
    from vitbench.train import recipes
    from vitbench.transfer import plan
    from vitbench.transfer import suite as suite_runner

    suite = tasks.load_suite("demo")
    suite.select(fv.tasks)  # unknown task names fail here, before pretraining
    overrides = plan.Overrides(steps=fv.steps, shots=options.positive_integers(
        "--shots", fv.shots) if fv.shots else None)
    setup = recipes.load("demo", steps=fv.pretrain_steps)
    workdir = pretrain_lib.default_workdir(fv.results_dir, setup.recipe)
    if fv.pretrain_steps:  # a shorter pretraining is another checkpoint
        workdir = workdir.with_name(f"{workdir.name}_steps{fv.pretrain_steps}")
    print(f"1/3 pretraining {setup.recipe.model} on the demo upstream split")
    pretrain_lib.pretrain(setup, workdir, results_dir=fv.results_dir, data_dir=fv.data_dir)
    finished = {}
    for number, (label, ckpt) in enumerate([("pretrained", str(workdir)),
                                            ("from scratch", SCRATCH)], 2):
        print(f"{number}/3 transferring the {label} model ({ckpt}) to the demo suite")
        suite_runner.run_suite(suite, fv.tasks, ckpt, overrides, fv.results_dir,
                               data_dir=fv.data_dir)
        finished[label] = suite_runner.recorded(suite, fv.tasks, ckpt, overrides,
                                                fv.results_dir)
    tables = [path for path in publish.write_all(fv.results_dir) if path.suffix == ".md"]
    rows = {label: {collect.row_of(record, boards.protocol_defaults(record))
                    for record in records} for label, records in finished.items()}
    results = compare.compare(fv.results_dir, "demo", rows["pretrained"], rows["from scratch"])
    written = compare.write(fv.results_dir, "demo", results)
    print("\nTest accuracy, pretrained vs from scratch, with the gain's 95% interval and "
          "p-value (paired on the same test items; verdicts Holm-adjusted over each "
          "board's tasks):\n")
    print(gains(results).to_markdown(index=False, disable_numparse=True))
    print("\nleaderboards: " + ", ".join(str(path) for path in tables))
    print(f"the comparison in full: {written[0]}")
    print(f"what the pretrained model learned: vitbench inspect --ckpt {workdir}")
    return 0
