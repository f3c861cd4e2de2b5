"""`vitbench inspect`: the paper's pictures of what a checkpoint learned."""

from __future__ import annotations

from vitbench.commands import command, options


def _define(fv):
    from absl import flags

    flags.DEFINE_string("ckpt", None, "Checkpoint: a registry name (vitbench checkpoints), a "
                        ".npz/.keras file, a timm / Hugging Face / open_clip file or folder, an "
                        "hf://org/name id, a `vitbench pretrain` workdir (e.g. "
                        "results/pretrain/demo_vit_mu8, which `vitbench demo` trains) or a URL.",
                        flag_values=fv)
    flags.DEFINE_string("images", None, "Directory of images (jpg, png, ...; subfolders too) "
                        "to measure attention on (default: the demo dataset's test images, "
                        "offline).",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "Output directory (default "
                        "<results_dir>/figures/<checkpoint name>).", flag_values=fv)
    options.define_results_dir(fv, "Where figures/ goes by default.")
    flags.DEFINE_integer("num_images", 32, "Images the attention distance averages over "
                         "(the paper: 128).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("rollout_images", 8, "Images shown with their attention rollout.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("resolution", None, "Image size (default: the checkpoint's; another "
                         "resamples the position embeddings).", lower_bound=1, flag_values=fv)
    options.define_data_dir(fv, ", for the demo images")


@command("inspect", _define)
def inspect(fv):
    """Draw what a checkpoint learned, as the ViT paper's Figures 6 and 7 do.

    Writes four PNG figures, the numbers behind them (quantities.npz, attention_distance.csv)
    and index.md, a page showing them: the principal components of the patch-embedding
    filters as RGB tiles; the cosine similarity of every position embedding to every other;
    the mean attention distance of every head against depth; and attention rollout maps from
    the output token over sample images.
    """
    from vitbench.inspection import report

    if not fv.ckpt:
        raise ValueError("--ckpt is required, e.g. --ckpt results/pretrain/demo_vit_mu8 (the "
                         "checkpoint `vitbench demo` pretrains) or --ckpt vit_b16")
    paths = report.inspect_checkpoint(fv.ckpt, fv.out, fv.images, fv.num_images,
                                      fv.rollout_images, fv.resolution, fv.data_dir,
                                      fv.results_dir)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
