"""The known-checkpoints table: consistent with the zoo, unique names, clear lookups."""

import pytest

from vitbench.checkpoints import registry
from vitbench.models import zoo

ENTRIES = list(registry.known_checkpoints().values())


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_is_consistent(entry):
    config = zoo.get_config(entry.model)
    config.grid(entry.resolution)  # divisible by the patch size
    assert entry.name.startswith(entry.model + ".")
    assert entry.normalization in zoo.NORMALIZATIONS and entry.licence
    if entry.format != "official":  # a hub repository in another library's format
        assert entry.url.startswith("hf://") and entry.format in ("timm", "transformers",
                                                                  "open_clip")
        assert entry.num_classes in (0, 1000) and entry.normalization != "inception"
        return
    assert entry.url.startswith("https://storage.googleapis.com/vit_models/")
    assert entry.url.endswith(".npz") and "+" not in entry.url
    assert entry.num_classes in (1000, 21843)
    assert entry.upstream in ("imagenet21k", "imagenet2012")
    assert entry.licence == "Apache-2.0" and entry.normalization == "inception"


def test_names_and_aliases_are_unique():
    names = [e.name for e in ENTRIES] + [a for e in ENTRIES for a in e.aliases]
    assert len(names) == len(set(names))
    assert len({e.url for e in ENTRIES}) == len(ENTRIES)


def test_paper_models_are_all_there():
    for name in ["vit_b32", "vit_b16", "vit_l32", "vit_l16", "vit_h14"]:
        entry = registry.get_checkpoint(name)
        assert entry.upstream == "imagenet21k" and entry.representation
        assert entry.num_classes == 21843
    assert registry.get_checkpoint("vit_b16.i21k_ft_in1k").resolution == 384
    assert registry.get_checkpoint("vit_l16.i21k_ft_in1k_224").resolution == 224


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match="Did you mean vit_b16.i21k"):
        registry.get_checkpoint("vit_b16.i21")
