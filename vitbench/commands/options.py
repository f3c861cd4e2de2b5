"""Flags that several commands share, defined once; and flags derived from the settings a
dataclass declares with `vitbench.rules.setting` (a suite's protocol, a pretraining recipe)."""

from __future__ import annotations

import dataclasses

from absl import flags

DATA_DIR_HELP = "TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)"
REMAT_HELP = ("Rematerialise: keep only each encoder block's input for the backward pass and "
              "recompute the rest, for larger micro-batches (e.g. ViT-H/14 at 384 px on one "
              "GPU) at about a third more compute; the same numbers.")
MICRO_BATCH_HELP = ("Examples per forward/backward pass (of all devices); the gradients of "
                    "batch_size/micro_batch_size passes make one update. Default: the whole "
                    "batch on an accelerator, cache-sized passes on a CPU (see "
                    "docs/running.md).")
AUTO = "auto"


def define_data_dir(fv, purpose: str = "") -> None:
    """--data_dir; `purpose` says what it is read for, where that is not the tasks' data."""
    flags.DEFINE_string("data_dir", None, f"{DATA_DIR_HELP}{purpose}.", flag_values=fv)


def define_results_dir(fv, holds: str) -> None:
    """--results_dir (default `results`); `holds` says what the command writes or reads there."""
    flags.DEFINE_string("results_dir", "results", holds, flag_values=fv)


def define_remat(fv, mode: str = "") -> None:
    flags.DEFINE_boolean("remat", False, f"{mode}{REMAT_HELP}", flag_values=fv)


def define_micro_batch_size(fv, mode: str = "", auto: bool = False) -> None:
    """--micro_batch_size: a positive integer; with `auto`, also 'auto' (the largest that fits,
    read by `micro_batch_size`)."""
    if not auto:
        flags.DEFINE_integer("micro_batch_size", None, f"{mode}{MICRO_BATCH_HELP}",
                             lower_bound=1, flag_values=fv)
        return
    flags.DEFINE_string("micro_batch_size", None, f"{MICRO_BATCH_HELP} '{AUTO}': the largest "
                        "that fits in memory, found by halving the default until a training "
                        "step runs.", flag_values=fv)


def micro_batch_size(fv) -> int | str | None:
    """The value of an `auto` --micro_batch_size: an int, 'auto' or None."""
    value = fv.micro_batch_size
    if value in (None, AUTO):
        return value
    if not (value.isdigit() and int(value) > 0):
        raise ValueError(f"--micro_batch_size must be a positive integer or '{AUTO}', not "
                         f"{value!r}")
    return int(value)


# A setting's type -> how its flag is defined (lists are parsed by `setting_values`).
_DEFINERS = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float,
             "float | None": flags.DEFINE_float,
             "str": flags.DEFINE_string, "bool": flags.DEFINE_boolean,
             "tuple[float, ...]": flags.DEFINE_list, "tuple[int, ...]": flags.DEFINE_list}


def documented_settings(cls, names=None) -> list[dataclasses.Field]:
    """The `setting` fields of `cls` that have help text (those of `names`, in their order)."""
    fields = {field.name: field for field in dataclasses.fields(cls) if field.metadata.get("doc")}
    return [fields[name] for name in (names or fields)]


def define_settings(fv, cls, names=None, bounded: bool = False) -> None:
    """One flag per documented setting of `cls` (default None: the file's value stays). With
    `bounded`, a number below its rule's lower bound is refused as the flags parse."""
    for field in documented_settings(cls, names):
        rule = field.metadata["rule"]
        bounds = ({"lower_bound": rule.lower_bound}
                  if bounded and rule is not None and rule.lower_bound is not None
                  and field.type in ("int", "float") else {})
        _DEFINERS[field.type](field.name, None, field.metadata["doc"], flag_values=fv,
                              **bounds)


def setting_values(fv, cls, names=None) -> dict:
    """The flags of `define_settings` as the settings' values (None where not given): lists of
    numbers parsed and checked."""
    values = {}
    for field in documented_settings(cls, names):
        value = fv[field.name].value
        if isinstance(value, list):  # an empty list: not given
            parse = positive_integers
            if field.type == "tuple[float, ...]":  # >= 0 where the rule takes 0 (decays)
                rule = field.metadata["rule"]
                parse = non_negative_floats if rule.test((0.0,)) else positive_floats
            value = parse(f"--{field.name}", value) if value else None
        values[field.name] = value
    return values


def positive_floats(flag, values) -> tuple[float, ...]:
    try:
        numbers = tuple(float(value) for value in values)
    except ValueError:
        numbers = ()
    if len(numbers) != len(values) or not all(number > 0 for number in numbers):
        raise ValueError(f"{flag} takes positive numbers, e.g. 0.003,0.01; got {','.join(values)}")
    return numbers


def non_negative_floats(flag, values) -> tuple[float, ...]:
    try:
        numbers = tuple(float(value) for value in values)
    except ValueError:
        numbers = ()
    if len(numbers) != len(values) or not all(number >= 0 for number in numbers):
        raise ValueError(f"{flag} takes numbers >= 0, e.g. 0.01,0; got {','.join(values)}")
    return numbers


def positive_integers(flag, values) -> tuple[int, ...]:
    """The distinct values, in increasing order (so that 5,1 and 1,5 are the same runs)."""
    if not all(value.isdigit() and int(value) > 0 for value in values):
        raise ValueError(f"{flag} takes positive integers, e.g. 1,5,10,25; got {','.join(values)}")
    return tuple(sorted({int(value) for value in values}))
