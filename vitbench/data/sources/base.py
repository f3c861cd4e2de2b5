"""What every task source has: its status answers, its errors, the `Source` interface."""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

READY, WILL_GENERATE, WILL_DOWNLOAD, NEEDS_MANUAL, MISSING, INVALID = (
    "ready", "will generate", "will download", "needs manual files", "missing", "invalid")


class ManualDownloadError(OSError):
    """A dataset needs files the user must download; the message says which and where."""


class DownloadFailedError(OSError):
    """TFDS could not download a dataset; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Status:
    state: str  # READY, WILL_GENERATE, WILL_DOWNLOAD, NEEDS_MANUAL, MISSING or INVALID
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.state in (READY, WILL_GENERATE, WILL_DOWNLOAD)


def default_data_dir() -> str:
    """$TFDS_DATA_DIR, else TFDS's own default (~/tensorflow_datasets)."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


class Source:
    """Where a task's examples come from: one subclass per kind of data, an instance of each
    in `SOURCES` under the name a task's `source` field gives."""

    def status(self, task, data_dir=None) -> Status:
        """Whether the task's data is there, will be fetched, or needs the user's files."""
        raise NotImplementedError

    def read(self, task, split: str, data_dir=None) -> tf.data.Dataset:
        """The examples of a split expression, in the data's order."""
        raise NotImplementedError

    def num_examples(self, task, split: str, data_dir=None) -> int | None:
        """How many examples a split expression has, or None where unknown."""
        raise NotImplementedError

    def fingerprint(self, task) -> str | None:
        """What identifies the data's content in a run's config, or None where the name and
        version do (TFDS)."""
        return None

    def features(self, task, data_dir=None) -> dict | None:
        """{feature: tf.TensorSpec} of a read example, or None where unknown."""
        return None

    def class_names(self, task, data_dir=None) -> list | None:
        """The class names by class id, or None where the data names none."""
        return None
