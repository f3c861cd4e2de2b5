"""`vitbench pretrain`: pretrain a ViT from scratch on an upstream dataset, as the paper does."""

from __future__ import annotations

from vitbench.commands import command

# Recipe fields that a flag of the same name overrides (None: the recipe's value).
RECIPE_FLAGS = {
    "steps": ("integer", "Training steps (default or 0: the recipe's epochs over the train "
                         "split)."),
    "epochs": ("float", "Epochs over the train split (paper: 90 for ImageNet-21k, 300 for "
               "ImageNet)."),
    "batch_size": ("integer", "Global batch size (paper: 4096)."),
    "lr": ("float", "Peak learning rate (paper Table 3: 1e-3 ImageNet-21k, 3e-3 ImageNet)."),
    "warmup_steps": ("integer", "Linear warm-up steps (paper: 10000)."),
    "lr_decay": ("string", "Decay after warm-up: linear or cosine."),
    "weight_decay": ("float", "Decoupled weight decay (paper: 0.03 ImageNet-21k, 0.3 ImageNet)."),
    "grad_clip_norm": ("float", "Clip gradients at this global norm (0: off)."),
    "dropout": ("float", "Dropout rate (paper: 0.1 for ImageNet and ImageNet-21k)."),
    "resolution": ("integer", "Image size (paper: 224)."),
    "loss": ("string", "softmax or sigmoid (default: the recipe's, else from the labels)."),
    "train_split": ("string", "TFDS split expression to train on (default: the recipe's)."),
    "eval_split": ("string", "TFDS split expression of the held-out top-1 (default: the "
                   "recipe's)."),
    "seed": ("integer", "Seed of initialisation, data order and augmentation."),
    "log_every": ("integer", "Steps between metric lines."),
    "checkpoint_every": ("integer", "Steps between checkpoints (a multiple of log_every)."),
    "eval_every": ("integer", "Steps between evaluations (a multiple of log_every)."),
}


def _define(fv):
    from absl import flags

    flags.DEFINE_string("dataset", "demo", "imagenet21k, imagenet2012, demo (each has a recipe "
                        "in vitbench/suites/pretrain/), or any TFDS image classification dataset.",
                        flag_values=fv)
    flags.DEFINE_string("model", None, "Zoo model (vitbench models); default: the recipe's "
                        "(vit_b16; vit_mu8 for demo).", flag_values=fv)
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the final weights (default "
                        "<results_dir>/pretrain/<dataset>_<model>).", flag_values=fv)
    flags.DEFINE_string("results_dir", "results", "Where pretrain/records.jsonl goes.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets).", flag_values=fv)
    flags.DEFINE_integer("micro_batch_size", None, "Examples per forward/backward pass; the "
                         "gradients of batch_size/micro_batch_size passes make one update "
                         "(default: the whole batch on an accelerator, cache-sized passes on "
                         "a CPU; see docs/running.md).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("model_parallel", 1, "Split each encoder block's weights over this "
                         "many devices (JAX); the remaining factor of the devices splits the "
                         "batch.", lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("multihost", False, "Join a multi-host job first "
                         "(keras.distribution.initialize: coordinator address, process count "
                         "and id from KERAS_DISTRIBUTION_* variables or the TPU runtime).",
                         flag_values=fv)
    flags.DEFINE_boolean("remat", False, "Rematerialise: recompute each encoder block's "
                         "activations in the backward pass (less memory, about a third more "
                         "compute, the same numbers).", flag_values=fv)
    flags.DEFINE_boolean("resume", True, "Continue the run saved in the workdir (--noresume "
                         "refuses to touch a workdir that holds a checkpoint).", flag_values=fv)
    for name, (kind, help_text) in RECIPE_FLAGS.items():
        getattr(flags, f"DEFINE_{kind}")(name, None, help_text, flag_values=fv)


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
                               **{name: fv[name].value for name in RECIPE_FLAGS})
    workdir = fv.workdir or pretrain_lib.default_workdir(fv.results_dir, pretraining.recipe)
    pretrain_lib.pretrain(pretraining, workdir, results_dir=fv.results_dir,
                          micro_batch_size=fv.micro_batch_size, data_dir=fv.data_dir,
                          model_parallel=fv.model_parallel, resume=fv.resume, remat=fv.remat)
    final = pathlib.Path(workdir) / pretrain_lib.FINAL  # this run's, recorded here or not
    if distribute.process_index_and_count()[0] == 0 and final.exists():
        print(f"final weights: {final} (transfer them with `vitbench run --ckpt {workdir}`)")
    return 0
