"""`imagenet21k`: ImageNet-21k (Fall 2011 release) from the official archive, as a TFDS dataset.

One split, `full`, in a fixed shuffled order: `full[:25600]` test, `full[25600:51200]`
validation, `full[51200:]` training (`HELD_OUT`). Classes are the archive's synsets in sorted
order; that this matches the official 21843-way heads is UNCONFIRMED (treat one as uncalibrated).
Design notes: docs/design/data.md.
"""

from __future__ import annotations

import pathlib
import tarfile

import tensorflow_datasets as tfds

ARCHIVE = "fall11_whole.tar"
MAX_CLASSES = 21843  # the width of the official checkpoints' ImageNet-21k head
HELD_OUT = {"test": "full[:25600]", "validation": "full[25600:51200]", "train": "full[51200:]"}


def _synsets(manual_dir: pathlib.Path):
    """Sorted synset ids of the class archives in the whole archive or in the manual dir."""
    archive = manual_dir / ARCHIVE
    if archive.exists():
        with tarfile.open(archive) as outer:
            names = [name for name in outer.getnames() if name.endswith(".tar")]
    else:
        names = [path.name for path in manual_dir.glob("n*.tar")]
    return sorted(pathlib.PurePath(name).stem for name in names)


def _class_tars(manual_dir: pathlib.Path):
    """(synset, open class tar) pairs, streaming through the whole archive if that is there."""
    archive = manual_dir / ARCHIVE
    if archive.exists():
        with tarfile.open(archive) as outer:
            for member in outer:
                if member.name.endswith(".tar"):
                    with tarfile.open(fileobj=outer.extractfile(member)) as class_tar:
                        yield pathlib.PurePath(member.name).stem, class_tar
        return
    for path in sorted(manual_dir.glob("n*.tar")):
        with tarfile.open(path) as class_tar:
            yield path.stem, class_tar


class Imagenet21k(tfds.core.GeneratorBasedBuilder):
    """ImageNet-21k (Fall 2011), one `full` split; see the module docstring for held-out slices."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Fall 2011 release, classes numbered by sorted synset id."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Download {ARCHIVE} (ImageNet-21k, Fall 2011 release, about 1.3 TB) from "
        "https://image-net.org/download-images (log in, then 'ImageNet21K Fall 2011') and put it "
        "in the manual dir, or extract it there so that the manual dir holds one "
        "n<synset id>.tar per class.")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=MAX_CLASSES),
                "synset": tfds.features.Text(),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://image-net.org/",
        )

    def _split_generators(self, dl_manager):
        manual_dir = pathlib.Path(dl_manager.manual_dir)
        synsets = _synsets(manual_dir)
        if not synsets:
            raise FileNotFoundError(
                f"no {ARCHIVE} and no n*.tar class archives in {manual_dir}. "
                + self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        if len(synsets) > MAX_CLASSES:
            raise ValueError(f"{manual_dir} holds {len(synsets)} classes, more than the "
                             f"{MAX_CLASSES} this builder numbers")
        return {"full": self._generate_examples(manual_dir, synsets)}

    def _generate_examples(self, manual_dir, synsets):
        labels = {synset: label for label, synset in enumerate(synsets)}
        for synset, class_tar in _class_tars(manual_dir):
            for member in class_tar:
                if member.isfile():
                    name = pathlib.PurePath(member.name).name
                    yield name, {"image": class_tar.extractfile(member).read(),
                                 "label": labels[synset], "synset": synset, "file_name": name}
