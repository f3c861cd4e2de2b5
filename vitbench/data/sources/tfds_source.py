"""TFDS datasets (the default source): status, download and preparation, reading."""

from __future__ import annotations

import pathlib
import posixpath
import urllib.parse

import tensorflow_datasets as tfds

from vitbench import offline
from vitbench.data import builders  # noqa: F401  (registers vitbench's own TFDS datasets)
from vitbench.data.sources.base import (
    MISSING,
    NEEDS_MANUAL,
    READY,
    WILL_DOWNLOAD,
    WILL_GENERATE,
    DownloadFailedError,
    ManualDownloadError,
    Source,
    Status,
    default_data_dir,
)


def _tfds_builder(task, data_dir):
    return tfds.builder(task.tfds_spec, data_dir=data_dir or default_data_dir())


def _manual_dir(builder) -> pathlib.Path:
    return pathlib.Path(builder.data_dir_root) / "downloads" / "manual"


def tfds_status(task, data_dir=None) -> Status:
    """Whether a TFDS dataset is prepared, will be downloaded or generated, or needs files."""
    builder = _tfds_builder(task, data_dir)
    if builder.is_prepared():
        return Status(READY, builder.data_dir)
    if getattr(builder, "GENERATED_LOCALLY", False):
        return Status(WILL_GENERATE, f"vitbench renders it into {builder.data_dir_root}")
    no_network = offline.is_offline()
    downloads = _downloads(builder) if no_network else []  # what it would fetch: offline only
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        manual = _manual_dir(builder)
        if not (manual.is_dir() and any(manual.iterdir())):
            return Status(NEEDS_MANUAL, _manual_message(task, builder))
        if not downloads:
            return Status(WILL_DOWNLOAD, f"will prepare from the files in {manual}")
    if no_network:
        return Status(MISSING, f"{task.name}: TFDS dataset {task.tfds_spec} is not prepared in "
                               f"{builder.data_dir_root} and {offline.VARIABLE} is set, so "
                               f"{', '.join(downloads) or 'it'} is not downloaded: prepare it "
                               f"where there is network (`tfds build {builder.name} "
                               "--data_dir DIR`, or every dataset of a suite with `vitbench "
                               "tasks --suite SUITE --prepare --data_dir DIR`) and copy "
                               f"DIR/{builder.name} into {builder.data_dir_root}")
    return Status(WILL_DOWNLOAD, f"TFDS downloads it into {builder.data_dir_root}")


def _downloads(builder) -> list:
    """The URLs that preparing the dataset downloads: those of its checksums file whose files
    are not in the manual-download folder (ImageNet-ReaL's label file beside the tar there)."""
    manual = _manual_dir(builder)
    present = {path.name for path in manual.iterdir()} if manual.is_dir() else set()
    return [url for url in (builder.url_infos or {})
            if posixpath.basename(urllib.parse.urlsplit(url).path) not in present]


def _manual_message(task, builder) -> str:
    instructions = " ".join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
    return (f"{task.name}: TFDS dataset {task.tfds_spec} cannot be downloaded automatically. "
            f"Put its files in {_manual_dir(builder)} (or pass --data_dir to use another "
            f"<data_dir>/downloads/manual). TFDS says: {instructions}")


# What a failed download raises: requests' and urllib's errors (OSErrors), TFDS's own for an
# HTTP error status and for a file whose checksum is not the one its checksums file records.
DOWNLOAD_ERRORS = (OSError, tfds.core.download.util.DownloadError,
                   tfds.core.download.download_manager.NonMatchingChecksumError)


def tfds_prepared_builder(task, data_dir=None):
    """The task's TFDS builder, its dataset downloaded and prepared first where needed."""
    builder = _tfds_builder(task, data_dir)
    if not builder.is_prepared():
        status = tfds_status(task, data_dir)
        if status.state in (NEEDS_MANUAL, MISSING):
            raise ManualDownloadError(status.detail)
        try:
            builder.download_and_prepare()
        except DOWNLOAD_ERRORS as error:
            raise DownloadFailedError(
                f"{task.name}: TFDS could not download {task.tfds_spec} into "
                f"{builder.data_dir_root} ({error}). Check the network, or prepare the dataset "
                f"on a machine that has it (e.g. `tfds build {builder.name}`) and copy its "
                f"<data_dir>/{builder.name} folder into {builder.data_dir_root} (or pass "
                "--data_dir).") from error
    return builder


class TfdsSource(Source):
    """A TFDS dataset (the default): `Task.dataset` is its name, with config."""

    def status(self, task, data_dir=None):
        return tfds_status(task, data_dir)

    def read(self, task, split, data_dir=None):
        builder = tfds_prepared_builder(task, data_dir)
        return builder.as_dataset(split=split, shuffle_files=False)

    def num_examples(self, task, split, data_dir=None):
        try:
            return tfds_prepared_builder(task, data_dir).info.splits[split].num_examples
        except KeyError:  # metadata without split sizes (e.g. mocked data)
            return None

    def features(self, task, data_dir=None):
        """The decoded examples' features, from the dataset's code or its prepared metadata."""
        try:
            return _tfds_builder(task, data_dir).info.features.get_tensor_spec()
        except Exception:  # noqa: BLE001  (no metadata to check against: the run will tell)
            return None
