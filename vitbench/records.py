"""Run records: one JSON object per line in `<results_dir>/runs/<suite>.jsonl`.

A record is written once a run has finished, by a single `write` on a file opened for
appending, then flushed to disk. A process killed inside that write can leave a partial line;
the next append starts on a new line, and reading skips the fragment with a warning, so every
whole record stays readable. A run is identified
by the hash of its configuration, which is how a second invocation knows what is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from collections.abc import Iterable


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-able configuration (key order does not matter).

    Args:
        config: a dict of JSON-able values (others are hashed as their `str`).

    Returns:
        The first 16 hex digits of the sha256 of its canonical JSON.
    """
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def records_path(results_dir, suite: str) -> pathlib.Path:
    """The records file of a suite's runs.

    Args:
        results_dir: the results folder.
        suite: the suite's name.

    Returns:
        `<results_dir>/runs/<suite>.jsonl` (whether or not it exists).
    """
    return pathlib.Path(results_dir) / "runs" / f"{suite}.jsonl"


def append(path, record: dict) -> None:
    """Appends one record as one line, in one write, flushed to disk.

    Args:
        path: the records file; it and its folder are made if missing.
        record: a JSON-able dict (others are written as their `str`), with a `config_hash`
            for `read` to keep it.

    Raises:
        OSError: the file cannot be opened or the write was short.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A process killed inside its write can leave a partial line (Linux stops a write to
        # a regular file between pages when SIGKILL arrives); start on a new line so that the
        # fragment stays alone and is skipped, and this record stays whole.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path) -> list[dict]:
    """All whole records of a file (none if it does not exist).

    Lines that are not whole JSON objects with a `config_hash` are skipped with a warning.

    Args:
        path: the records file.

    Returns:
        The records, in the order written.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            warnings.warn(f"{path}:{number} is not a whole record (a write cut short?); "
                          "skipped", stacklevel=2)
            continue
        if not (isinstance(record, dict) and "config_hash" in record):
            warnings.warn(f"{path}:{number} is not a vitbench record (no config_hash); "
                          "skipped", stacklevel=2)
            continue
        records.append(record)
    return records


def by_hash(records: Iterable[dict]) -> dict[str, dict]:
    """The latest record of each config hash.

    Args:
        records: records in the order written; those without a `config_hash` are ignored.

    Returns:
        Config hash -> the last record with it.
    """
    return {record["config_hash"]: record for record in records if "config_hash" in record}


# What a tune grid may vary besides the rate, in the order ties are broken after it.
GRID_FIELDS = ("weight_decay", "prompt_tokens")


def setting_of(config: dict):
    """What a tune grid varies in a run config: its rate, or (rate, weight decay[, prompt
    tokens]) where the grid varies more (the VPT protocol's fine-tuning and prompts)."""
    more = tuple(config[key] for key in GRID_FIELDS if key in config)
    return (config["lr"], *more) if more else config["lr"]


def best_setting(scores: dict) -> float | tuple | None:
    """The setting with the best validation accuracy (a diverged run's None never wins; ties:
    the smaller rate, then the smaller decay, then fewer prompts), as the sweep chooses it
    (`transfer.plan.resolve`) and the boards do.

    Args:
        scores: setting (`setting_of`: a rate, or (rate, weight decay)) -> validation
            accuracy, None for a diverged run.

    Returns:
        The chosen setting; None for no scores.
    """
    if not scores:
        return None

    def rank(setting):
        values = setting if isinstance(setting, tuple) else (setting,)
        return (-1.0 if scores[setting] is None else scores[setting],
                tuple(-value for value in values if value is not None))

    return max(scores, key=rank)
