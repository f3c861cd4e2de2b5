"""Suites as data: every shipped suite parses, VTAB-1k matches the reference exactly."""

import dataclasses
import json
import pathlib

import pytest

from vitbench import tasks
from vitbench.data import registry

SPEC = pathlib.Path(__file__).resolve().parents[2] / "shared" / "spec" / "vtab1k_tasks.json"
# Reference facts, written out here so the test holds without the spec folder too.
VTAB_GROUPS = {
    "natural": ["caltech101", "cifar100", "dtd", "oxford_flowers102", "oxford_iiit_pet", "sun397",
                "svhn"],
    "specialized": ["patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"],
    "structured": ["clevr_count_all", "clevr_closest_object_distance",
                   "dsprites_label_x_position", "dsprites_label_orientation",
                   "smallnorb_label_azimuth", "smallnorb_label_elevation",
                   "kitti_closest_vehicle_distance", "dmlab"],
}


@pytest.mark.parametrize("name", tasks.suite_names())
def test_every_shipped_suite_parses(name):
    suite = tasks.load_suite(name)
    assert suite.name == name and suite.tasks and suite.description
    for task in suite.tasks:
        for role in ("fit", "tune_train", "tune_val", "test"):
            assert task.split(role)
        registry.parse(task.pp("eval"))
        registry.parse(task.pp("train"))


def test_shipped_suites():
    assert {"vtab1k", "imagenet", "cifar10", "cifar100", "pets", "flowers", "fewshot"} <= \
        set(tasks.suite_names())


def test_vtab1k_has_the_19_tasks_in_their_groups():
    suite = tasks.load_suite("vtab1k")
    assert len(suite.tasks) == 19
    for group, names in VTAB_GROUPS.items():
        assert sorted(t.name for t in suite.tasks if t.group == group) == sorted(names)


@pytest.mark.skipif(not SPEC.exists(), reason="reference spec folder not beside the repo")
def test_vtab1k_splits_versions_and_classes_match_the_reference():
    suite = tasks.load_suite("vtab1k")
    for reference in json.loads(SPEC.read_text()):
        task = suite.task(reference["name"])
        assert task.splits == reference["splits"], task.name
        assert task.dataset == reference["tfds_name"]
        assert task.num_classes == reference["num_classes"]
        assert task.group == reference["group"]
        if task.dataset != "oxford_iiit_pet":  # VTAB's 3.*.* is gone from TFDS; see the note
            assert task.version == reference["tfds_version"]
        flip = "flip_lr" in task.protocol.train_pp
        crop = "crop" in task.protocol.train_pp
        assert (crop, flip) == (reference["bit_train_random_crop"],
                                reference["bit_train_random_flip"]), task.name


def test_vtab1k_protocol_is_the_papers():
    task = tasks.load_suite("vtab1k").task("dmlab")
    p = task.protocol
    assert (p.resolution, p.steps, p.batch_size, p.lrs) == (384, 2500, 512, (0.01,))
    assert task.split("fit") == "train[:800]+validation[:200]"
    assert task.split("tune_train") == "train[:800]"
    assert task.split("tune_val") == "validation[:200]"
    assert task.pp("eval") == "decode|resize(384)|value_range(-1, 1)|keep('image', 'label')"


def test_upstream_protocols():
    imagenet = tasks.load_suite("imagenet").task("imagenet2012")
    assert imagenet.split("tune_val") == "train[99%:]" and imagenet.split("test") == "validation"
    assert imagenet.protocol.lrs == (0.003, 0.01, 0.03, 0.06) and imagenet.protocol.steps == 20000
    assert imagenet.real_dataset == "imagenet2012_real"
    cifar = tasks.load_suite("cifar100").task("cifar100")
    assert cifar.split("tune_train") == "train[:98%]" and cifar.protocol.steps == 10000
    pets = tasks.load_suite("pets").task("oxford_iiit_pet")
    assert pets.split("tune_val") == "train[90%:]" and pets.protocol.steps == 500


def test_fewshot_suite_is_the_reference_list():
    suite = tasks.load_suite("fewshot")
    assert [t.name for t in suite.select(())] == ["caltech101", "cars196", "cifar100", "dtd",
                                                  "oxford_iiit_pet", "uc_merced"]
    assert suite.task("uc_merced").splits == {"train": "train[:1000]", "test": "train[1000:]"}
    # ImageNet is an option, as in the reference: only when asked for by name
    imagenet = suite.select(["imagenet2012"])[0]
    assert imagenet.splits == {"train": "train[:65000]", "test": "validation"}
    assert {t.protocol.method for t in suite.tasks} == {"fewshot"}
    assert suite.tasks[0].protocol.shots == (1, 5, 10, 25)
    assert suite.tasks[0].protocol.l2_reg == 1024.0
    assert suite.tasks[0].pp("eval").startswith("decode|resize(256)|central_crop(224)")


def test_a_suites_fewshot_table_adds_probes_of_its_tasks():
    demo = tasks.load_suite("demo")
    probes = demo.fewshot_tasks(["demo_shape"])
    assert [t.name for t in probes] == ["demo_shape"]
    assert probes[0].protocol.method == "fewshot" and probes[0].protocol.shots == (1, 5, 10, 25)
    assert demo.task("demo_shape").protocol.method == "finetune"
    assert tasks.load_suite("vtab1k").fewshot_tasks(()) == ()
    with pytest.raises(ValueError, match="method 'ridge' is not one of"):
        tasks.parse_suite({"protocol": {"method": "ridge"}, "task": []})
    with pytest.raises(ValueError, match=r"\[methods.ridge\] names no method; methods: "
                                         "finetune, fewshot, linear, knn"):
        tasks.parse_suite({"methods": {"ridge": {}}, "task": [
            {"name": "a", "group": "demo", "dataset": "d", "num_classes": 2, "splits": {}}]})
    with pytest.raises(ValueError, match=r"\[fewshot\]: unknown protocol field"):
        tasks.parse_suite({"fewshot": {"shot": [1]}, "task": [
            {"name": "t", "group": "custom", "dataset": "d", "num_classes": 2, "splits": {}}]})


def test_resolution_template_follows_the_protocol():
    task = tasks.load_suite("vtab1k").task("svhn")
    task = dataclasses.replace(task, protocol=dataclasses.replace(task.protocol, resolution=64))
    assert task.pp("train").startswith("decode|inception_crop(64)|flip_lr")


def test_user_suite_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[protocol]\nsteps = 7\n[[task]]\nname = "a"\n'
                    'group = "custom"\ndataset = "cifar10"\nnum_classes = 10\n'
                    'splits = { train = "train[:10]", test = "test[:10]" }\n'
                    'protocol = { lrs = [0.1] }\n')
    suite = tasks.load_suite(str(path))
    assert suite.tasks[0].protocol.steps == 7 and suite.tasks[0].protocol.lrs == (0.1,)


TASK = ('[[task]]\nname = "a"\ngroup = "custom"\ndataset = "x"\nnum_classes = 2\n'
        'splits = {}\n')


@pytest.mark.parametrize("body,message", [
    ('[[task]]\nname = "a"\ngroup = "custom"\ndataset = "x"\nnum_classes = 2\nsplits = {}\n'
     'colour = "red"\n', r"task a: unknown field\(s\) colour \(required: name, group, "
                          "dataset, num_classes, splits; optional: source, version"),
    (TASK.replace("num_classes = 2\n", "").replace('dataset = "x"\n', ""),
     r"task a: missing field\(s\) dataset, num_classes \(required: name, group"),
    ('[protocol]\nstep = 3\n[[task]]\nname = "a"\n', r"unknown protocol field\(s\) \['step'\]"),
    ('[[task]]\nname = "a"\ngroup = "weird"\ndataset = "x"\nnum_classes = 2\nsplits = {}\n',
     "group 'weird'"),
    ('name = "x"\n', "defines no"),
    ('name = [', "not valid TOML"),
    ('[protocl]\nsteps = 3\n' + TASK, r"unknown table\(s\) or key\(s\) \['protocl'\]"),
    ('[protocol]\nlrs = [-0.1]\n' + TASK, r"lrs is \(-0.1,\); it must be a list of positive"),
    ('[protocol]\nlrs = 0.01\n' + TASK, "lrs is 0.01; it must be a list of positive numbers"),
    ('[protocol]\nlrs = ["0.01"]\n' + TASK, r"lrs is \('0.01',\); it must be a list"),
    ('[protocol]\nsteps = 2.5\n' + TASK, "steps is 2.5; it must be a positive integer"),
    ('[protocol]\nbatch_size = 0\n' + TASK, "batch_size is 0; it must be a positive integer"),
    ('[protocol]\nwarmup_steps = -3\n' + TASK, "warmup_steps is -3; it must be an integer >= 0"),
    ('[protocol]\nseeds = 0\n' + TASK, "seeds is 0; it must be a positive integer"),
    ('[fewshot]\nshots = 5\n' + TASK, r"\[fewshot\]: protocol field shots is 5"),
    ('[protocol]\nresolution = "32"\n' + TASK, "resolution is '32'; it must be a positive"),
    (TASK.replace("num_classes = 2", 'num_classes = "3"'),
     "task a: num_classes is '3'; it must be a positive integer"),
])
def test_bad_suite_files_say_what_is_wrong(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        tasks.load_suite(str(path))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(KeyError, match="Did you mean vtab1k"):
        tasks.load_suite("vtab")
    with pytest.raises(KeyError, match="Valid: caltech101"):
        tasks.load_suite("vtab1k").task("caltech")
    with pytest.raises(KeyError, match="has no split 'val'"):
        tasks.load_suite("vtab1k").task("dtd").split("val")
