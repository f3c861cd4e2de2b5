"""Writing files atomically: readers (and a process killed mid-write) see the old file or the
new one, never a part; and making the folders they go in (`make_folder`)."""

from __future__ import annotations

import os
import pathlib
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path, data) -> pathlib.Path:
    """Writes `data` (str, bytes, or a function that writes into the binary file it is given)
    to a temporary file beside `path`, then renames it. The file gets the permissions `open`
    would give it (mkstemp's are owner-only)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write = data if callable(data) else (
        lambda f: f.write(data.encode() if isinstance(data, str) else data))
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise
    return path


def make_folder(path, what: str) -> pathlib.Path:
    """Makes the folder `path` (and its parents) or raises a ValueError that begins with
    `what` it is for (e.g. "the results dir results"), so that it fails before any work."""
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what} cannot be used: {error.strerror} ({error.filename})") from None
    return path
