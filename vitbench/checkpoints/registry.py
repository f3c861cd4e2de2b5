"""Registry of the known public checkpoints, read from `known.toml` beside this file."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from importlib import resources

import tomllib


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published weights file and what it holds."""

    name: str
    model: str
    upstream: str
    finetuned: str
    resolution: int
    num_classes: int
    representation: bool
    url: str
    sha256: str = ""
    aliases: tuple[str, ...] = ()
    paper: str = ""  # the ViT paper's name for this model ("ViT-B/16"), if it is the paper's
    note: str = ""
    format: str = "official"  # a `vitbench.checkpoints.formats.Weights.format`
    licence: str = "Apache-2.0"  # the weights' licence (the official ones' is Apache 2.0)
    normalization: str = "inception"  # a `zoo.NORMALIZATIONS` name: the input it expects


@functools.cache
def known_checkpoints() -> dict[str, Checkpoint]:
    """Every known checkpoint by name, in file order.

    Returns:
        Name -> `Checkpoint`, as listed in `known.toml` (cached: the same dict every call).
    """
    text = resources.files("vitbench.checkpoints").joinpath("known.toml").read_text()
    entries = [Checkpoint(**{**row, "aliases": tuple(row.get("aliases", ()))})
               for row in tomllib.loads(text)["checkpoint"]]
    return {entry.name: entry for entry in entries}


@functools.cache
def _by_alias() -> dict[str, Checkpoint]:
    return {alias: entry for entry in known_checkpoints().values() for alias in entry.aliases}


def find_checkpoint(name: str) -> Checkpoint | None:
    """The checkpoint with this name or alias, or None.

    Args:
        name: a checkpoint name or one of its aliases (exact match).

    Returns:
        The `Checkpoint`, or None for an unknown name.
    """
    return known_checkpoints().get(name) or _by_alias().get(name)


def get_checkpoint(name: str) -> Checkpoint:
    """The checkpoint with this name or alias; an unknown name lists close and valid ones.

    Args:
        name: a checkpoint name or one of its aliases (exact match).

    Returns:
        The `Checkpoint`.

    Raises:
        KeyError: an unknown name; the message suggests close ones and lists the known ones.
    """
    found = find_checkpoint(name)
    if found is None:
        names = list(known_checkpoints()) + list(_by_alias())
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown checkpoint {name!r}.{hint} Known checkpoints: "
                       f"{', '.join(known_checkpoints())} (run `vitbench checkpoints`).")
    return found
