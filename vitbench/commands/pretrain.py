"""`vitbench pretrain`: pretrain a ViT from scratch on an upstream dataset, as the paper does."""

from __future__ import annotations

from vitbench.commands import command, options


def _define(fv):
    from absl import flags

    from vitbench.train import recipes

    flags.DEFINE_string("dataset", "demo", "imagenet21k, imagenet2012, demo (each has a recipe "
                        "in vitbench/suites/pretrain/), or any TFDS image classification dataset.",
                        flag_values=fv)
    flags.DEFINE_string("model", None, "Zoo model (vitbench models); default: the recipe's "
                        "(vit_b16; vit_mu8 for demo).", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the final weights (default "
                        "<results_dir>/pretrain/<dataset>_<model>).", flag_values=fv)
    options.define_results_dir(fv, "Where pretrain/records.jsonl goes.")
    options.define_data_dir(fv)
    options.define_micro_batch_size(fv)
    flags.DEFINE_integer("model_parallel", 1, "Split each encoder block's weights over this "
                         "many devices (JAX); the remaining factor of the devices splits the "
                         "batch.", lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("multihost", False, "Join a multi-host job first "
                         "(keras.distribution.initialize: coordinator address, process count "
                         "and id from KERAS_DISTRIBUTION_* variables or the TPU runtime).",
                         flag_values=fv)
    options.define_remat(fv)
    flags.DEFINE_boolean("resume", True, "Continue the run saved in the workdir (--noresume "
                         "refuses to touch a workdir that holds a checkpoint).", flag_values=fv)
    # Recipe fields that a flag of the same name overrides (None: the recipe's value).
    options.define_settings(fv, recipes.Recipe)


@command("pretrain", _define)
def pretrain(fv):
    """Pretrain a ViT from random initialisation on an upstream dataset.

    The recipes in vitbench/suites/pretrain/ are the paper's (Table 3): Adam, batch 4096, 10k warm-
    up steps then linear (ImageNet-21k) or cosine (ImageNet) decay, weight decay, dropout, 224 px, a
    representation layer, sigmoid cross-entropy on ImageNet-21k. Runs on every local device
    (data parallel, or --model_parallel), resumes from its workdir, and writes final.npz
    there: `vitbench run --ckpt <workdir>` transfers it.
    """
    import pathlib

    from vitbench.train import distribute

    if fv.multihost:
        distribute.initialize_hosts()
    from vitbench.train import pretrain as pretrain_lib
    from vitbench.train import recipes

    pretraining = recipes.load(fv.dataset, fv.model, data_dir=fv.data_dir,
                               **options.setting_values(fv, recipes.Recipe))
    workdir = fv.workdir or pretrain_lib.default_workdir(fv.results_dir, pretraining.recipe)
    pretrain_lib.pretrain(pretraining, workdir, results_dir=fv.results_dir,
                          micro_batch_size=fv.micro_batch_size, data_dir=fv.data_dir,
                          model_parallel=fv.model_parallel, resume=fv.resume, remat=fv.remat)
    final = pathlib.Path(workdir) / pretrain_lib.FINAL  # this run's, recorded here or not
    if distribute.process_index_and_count()[0] == 0 and final.exists():
        print(f"final weights: {final} (transfer them with `vitbench run --ckpt {workdir}`)")
    return 0
