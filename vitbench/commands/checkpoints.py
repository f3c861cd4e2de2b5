"""`vitbench checkpoints`: the known checkpoints (official and well-known others), their licence
and input normalisation, and whether they are cached."""

from __future__ import annotations

from tabulate import tabulate

from vitbench.checkpoints import download, hub
from vitbench.checkpoints.registry import find_checkpoint, get_checkpoint, known_checkpoints
from vitbench.commands import command
from vitbench.models import zoo


def _define(fv):
    from absl import flags

    flags.DEFINE_string("model", None, "Only checkpoints of this zoo model (e.g. vit_b16).",
                        flag_values=fv)
    flags.DEFINE_list("download", [], "Download these checkpoints (names, aliases or URLs) into "
                      "the cache, e.g. on a machine with network before an offline job "
                      "(VITBENCH_OFFLINE); then list them.", flag_values=fv)


def checkpoint_rows(model=None):
    rows = []
    for entry in known_checkpoints().values():
        if model and entry.model != model:
            continue
        rows.append({
            "name": entry.name, "aliases": ", ".join(entry.aliases), "model": entry.model,
            "upstream": entry.upstream, "fine-tuned": entry.finetuned or "-",
            "res": entry.resolution, "classes": entry.num_classes, "format": entry.format,
            "input": entry.normalization, "licence": entry.licence,
            "cached": "yes" if _is_cached(entry.url) else "no",
            "url": entry.url,
        })
    return rows


def _is_cached(url: str) -> bool:
    return hub.is_cached(url) if hub.is_hub_id(url) else download.cached_path(url).exists()


@command("checkpoints", _define)
def run(fv):
    """List every known checkpoint: model, upstream data, resolution, file format, input
    normalisation ('inception' is [-1, 1]), licence, URL, cached or not.

    Any name or alias here works as `--ckpt` and in `vitbench.load_model`, as do local files
    and hf://org/name ids in the formats of docs/checkpoint_formats.md. Files are cached
    under $VITBENCH_CACHE (default ~/.cache/vitbench); `--download` fetches some first.
    """
    from vitbench.checkpoints.loader import resolve

    for name in fv.download:
        if not (download.is_remote(name) or hub.is_hub_id(name) or find_checkpoint(name)):
            get_checkpoint(name)  # raises, listing close and valid names
        print(f"{name}: {resolve(name)}")
    # An unknown model name raises, listing the valid ones.
    rows = checkpoint_rows(fv.model and zoo.get_config(fv.model).name)
    if not rows:
        print(f"no known checkpoint for {fv.model}")
        return 1
    print(f"cache: {download.cache_dir()}\n")
    print(tabulate(rows, headers="keys"))
    return 0
