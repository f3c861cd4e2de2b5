"""`hf://org/name[@revision]`: a Hugging Face hub repository's weights and configuration,
fetched file by file into the vitbench cache like any download (resumable, refused offline).

The hub serves every file at `$HF_ENDPOINT/org/name/resolve/revision/file` (the endpoint the
hub's own tools read, default https://huggingface.co); a repository is a folder of
`formats.FOLDER_WEIGHTS` and `formats.FOLDER_CONFIGS`, of which each holds some.
"""

from __future__ import annotations

import os
import pathlib

from vitbench import offline
from vitbench.checkpoints import download, formats

SCHEME = "hf://"
DEFAULT_ENDPOINT = "https://huggingface.co"


def is_hub_id(ckpt: str) -> bool:
    return str(ckpt).startswith(SCHEME)


def file_url(ckpt: str, name: str) -> str:
    """The URL of file `name` of the repository `ckpt` (hf://org/name[@revision])."""
    repo, _, revision = str(ckpt)[len(SCHEME):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{ckpt!r} is not a hub id: write hf://org/name or "
                         "hf://org/name@revision")
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/{repo}/resolve/{revision or 'main'}/{name}"


def folder(ckpt: str) -> pathlib.Path:
    """Where the repository's files are cached (whether or not they are there)."""
    return download.cached_path(file_url(ckpt, formats.FOLDER_WEIGHTS[0])).parent


def is_cached(ckpt: str) -> bool:
    return any((folder(ckpt) / name).is_file() for name in formats.FOLDER_WEIGHTS)


def check_fetchable(ckpt: str) -> None:
    """Raises in offline mode unless the repository's weights are cached."""
    if offline.is_offline() and not is_cached(ckpt):
        raise download.DownloadError(
            f"{ckpt} is not in the cache and {offline.VARIABLE} is set, so it is not "
            f"downloaded: put its files ({' or '.join(formats.FOLDER_WEIGHTS)}, with "
            f"{', '.join(formats.FOLDER_CONFIGS)} where it has them) in {folder(ckpt)}")


def fetch(ckpt: str, progress: bool = True) -> pathlib.Path:
    """The cached folder of the repository `ckpt`, downloading its configuration files (those
    it has) and its first weights file first where they are not cached.

    Raises:
        ValueError: `ckpt` is not hf://org/name[@revision].
        vitbench.checkpoints.download.DownloadError: offline and not cached, the repository
            has none of `formats.FOLDER_WEIGHTS`, or the download failed.
    """
    check_fetchable(ckpt)
    if is_cached(ckpt):
        return folder(ckpt)
    for name in formats.FOLDER_CONFIGS:
        try:
            download.fetch(file_url(ckpt, name), progress=False)
        except download.NotFoundError:
            continue
    for name in formats.weights_names((folder(ckpt) / formats.OPEN_CLIP_CONFIG).is_file()):
        try:
            download.fetch(file_url(ckpt, name), progress=progress)
            return folder(ckpt)
        except download.NotFoundError:
            continue
    raise download.DownloadError(f"{ckpt} has none of {', '.join(formats.FOLDER_WEIGHTS)}: not "
                                 "a ViT checkpoint vitbench reads (docs/checkpoint_formats.md)")
