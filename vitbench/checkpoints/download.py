"""Downloads into the vitbench cache: atomic, resumable, checksummed, keyed by host and path.

Files land at `<cache>/<host>/<path>` under `$VITBENCH_CACHE` (default
`$XDG_CACHE_HOME/vitbench`, i.e. `~/.cache/vitbench`); `gs://bucket/path` is read over the
public https endpoint. A download that is interrupted resumes when run again.
Design notes: docs/design/checkpoints.md.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import sys
import urllib.error
import urllib.parse
import urllib.request

from vitbench import offline

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60


class DownloadError(OSError):
    """A download failed; the message says what to do next."""


class NotFoundError(DownloadError):
    """The server has no such file (HTTP 404)."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the expected sha256."""


def cache_dir() -> pathlib.Path:
    """The vitbench cache root ($VITBENCH_CACHE, else the user's cache dir).

    Returns:
        `$VITBENCH_CACHE` if set, else `$XDG_CACHE_HOME/vitbench` (default
        `~/.cache/vitbench`), with `~` expanded. It may not exist yet.
    """
    if os.environ.get("VITBENCH_CACHE"):
        return pathlib.Path(os.environ["VITBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(base).expanduser() / "vitbench"


def is_remote(path: str) -> bool:
    return urllib.parse.urlsplit(str(path)).scheme in ("http", "https", "gs")


def to_https(url: str) -> str:
    """gs://bucket/path -> https://storage.googleapis.com/bucket/path; others unchanged."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "gs":
        return f"https://storage.googleapis.com/{parts.netloc}{urllib.parse.quote(parts.path)}"
    return url


def cached_path(url: str) -> pathlib.Path:
    """Where the file for `url` lives in the cache (whether or not it is there).

    Args:
        url: an http(s) or gs:// URL; its query string is not part of the key.

    Returns:
        `<cache>/<host>/<path>`.

    Raises:
        DownloadError: the URL does not name a file (no path, a trailing '/', or '..').
    """
    parts = urllib.parse.urlsplit(to_https(url))
    host = parts.netloc.replace(":", "_")
    relative = urllib.parse.unquote(parts.path).lstrip("/")
    if not relative or relative.endswith("/") or ".." in pathlib.PurePosixPath(relative).parts:
        raise DownloadError(f"cannot cache {url!r}: it does not name a file")
    return cache_dir() / host / relative


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_fetchable(url: str) -> None:
    """Raises in offline mode (`vitbench.offline`) unless `url` is in the cache."""
    target = cached_path(url)
    if offline.is_offline() and not target.exists():
        raise DownloadError(f"{url} is not in the cache and {offline.VARIABLE} is set, so it is "
                            f"not downloaded: put the file at {target} (`vitbench checkpoints "
                            "--download NAME` fetches a known one where there is network, into "
                            "the same $VITBENCH_CACHE)")


def fetch(url: str, sha256: str = "", progress: bool = True) -> pathlib.Path:
    """The local path of `url`, downloading it into the cache first if needed.

    Args:
        url: an http(s) or gs:// URL.
        sha256: the expected hex digest of a new download; empty to skip the check. A file
            already in the cache is returned unchecked.
        progress: show a progress bar on stderr while downloading.

    Returns:
        The cached file's path (`cached_path(url)`).

    Raises:
        DownloadError: the URL does not name a file, the file is not cached in offline mode
            (`VITBENCH_OFFLINE`), or the server or network failed (a partial file is kept
            and resumed by the next call).
        ChecksumError: the download does not have `sha256` (the partial file is deleted).
    """
    target = cached_path(url)
    if target.exists():
        return target
    check_fetchable(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    _download(to_https(url), partial, progress)
    if sha256:
        actual = sha256_of(partial)
        if actual != sha256.lower():
            partial.unlink()
            raise ChecksumError(
                f"{url} has sha256 {actual}, expected {sha256}; the partial file was deleted. "
                "Run again to download it afresh; if this repeats, the file on the server changed.")
    os.replace(partial, target)
    return target


def _download(url: str, partial: pathlib.Path, progress: bool) -> None:
    """Streams `url` into `partial`, resuming from what it already holds."""
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vitbench"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing from `start` on: complete, or too long
            if _full_size(error.headers) == start:
                return
            partial.unlink()  # longer than the file (or its size unknown): start over
            return _download(url, partial, progress)
        raise (NotFoundError if error.code == 404 else DownloadError)(
            f"downloading {url} failed: HTTP {error.code} {error.reason}. Check the URL; "
            "`vitbench checkpoints` lists the known ones.") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(
            f"cannot reach {url}: {error}. Check the network and run again.") from error
    with response:
        resumed = start and response.status == 206
        if start and not resumed:
            start = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        received = start
        bar = _progress_bar(url, total, start) if progress else None
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:  # reset, timeout, IncompleteRead
            raise _interrupted(url, partial, received, total, error) from error
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received != total:
        raise _interrupted(url, partial, received, total, "connection closed early")


def _full_size(headers) -> int | None:
    """The file's size in a 416 answer's `Content-Range: bytes */SIZE` (RFC 9110), or None."""
    content_range = (headers or {}).get("Content-Range") or ""
    size = content_range.rpartition("/")[2]
    return int(size) if content_range.startswith("bytes ") and size.isdigit() else None


def _interrupted(url, partial, received, total, reason) -> DownloadError:
    of_total = f" of {total}" if total is not None else ""
    return DownloadError(
        f"download of {url} was interrupted after {received}{of_total} bytes ({reason}). "
        f"The partial file {partial} is kept: run the same command again to resume.")


def _progress_bar(url: str, total, start: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                desc=pathlib.PurePosixPath(urllib.parse.urlsplit(url).path).name,
                file=sys.stderr, leave=False)

