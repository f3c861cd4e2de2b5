"""What configuration values must be (suite files, pretraining recipes, command-line
overrides): a rule is a test with what the value must be, and `check` refuses a bad value in
those words, naming where it came from, so every source of a setting is checked alike.

A setting is defined once, as a dataclass field made by `setting`: its default, its rule and
its help text; checks (`rules_of`) and command-line flags (`vitbench.commands.options`) are
derived from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple


class Rule(NamedTuple):
    test: Callable[[object], bool]
    must_be: str  # what a value must be, as an error message says it
    lower_bound: float | None = None  # the least value a flag's parser accepts, where one is


def setting(default=dataclasses.MISSING, rule: Rule | None = None, doc: str = ""):
    """A dataclass field with its rule and its help text (`doc`)."""
    return dataclasses.field(default=default, metadata={"rule": rule, "doc": doc})


def rules_of(cls) -> dict[str, Rule]:
    """The rules of a dataclass's `setting` fields, by field name."""
    return {field.name: field.metadata["rule"] for field in dataclasses.fields(cls)
            if field.metadata.get("rule") is not None}


def is_whole_number(value) -> bool:
    """An integer of any integer type (numpy's too), not a bool."""
    return hasattr(value, "__index__") and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float, not a bool (TOML and JSON give both)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int) -> Rule:
    return Rule(lambda value: is_whole_number(value) and value >= minimum,
                "a positive integer" if minimum == 1 else f"an integer >= {minimum}", minimum)


def one_of(*choices: str) -> Rule:
    return Rule(lambda value: value in choices, " or ".join(choices))


def list_of(rule: Rule, what: str, example: str, may_be_empty: bool = False) -> Rule:
    """A list (a tuple, as the loaders turn TOML lists) of values that pass `rule`."""
    return Rule(lambda value: isinstance(value, tuple) and (may_be_empty or len(value) > 0)
                and all(rule.test(item) for item in value), f"a list of {what}, e.g. {example}")


NUMBER_OR_UNSET = Rule(lambda value: value is None or is_number(value), "a number")
NON_NEGATIVE = Rule(lambda value: is_number(value) and value >= 0, "a number >= 0", 0)
POSITIVE = Rule(lambda value: is_number(value) and value > 0, "a positive number")
FRACTION = Rule(lambda value: is_number(value) and 0 <= value < 1, "a number in [0, 1)", 0)
SHARE = Rule(lambda value: is_number(value) and 0 < value <= 1, "a number in (0, 1]", 0)
TEXT = Rule(lambda value: isinstance(value, str), "a string")
BOOLEAN = Rule(lambda value: isinstance(value, bool), "true or false")


def check(rules: dict[str, Rule], key: str, value, what: str) -> None:
    """Raises a ValueError naming `what` (where the value came from) unless `value` passes the
    rule of `key` (a key without one passes)."""
    rule = rules.get(key)
    if rule is not None and not rule.test(value):
        raise ValueError(f"{what} is {value!r}; it must be {rule.must_be}")
