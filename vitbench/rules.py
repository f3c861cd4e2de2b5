"""What configuration values must be (suite files, pretraining recipes, command-line
overrides): a rule is a (test, what the value must be) pair, and `check` refuses a bad value in
those words, naming where it came from, so every source of a setting is checked alike."""

from __future__ import annotations

from collections.abc import Callable

Rule = tuple[Callable[[object], bool], str]


def is_whole_number(value) -> bool:
    """An integer of any integer type (numpy's too), not a bool."""
    return hasattr(value, "__index__") and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float, not a bool (TOML and JSON give both)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(minimum: int) -> Rule:
    return (lambda value: is_whole_number(value) and value >= minimum,
            "a positive integer" if minimum == 1 else f"an integer >= {minimum}")


def list_of(rule: Rule, what: str, example: str, may_be_empty: bool = False) -> Rule:
    """A list (a tuple, as the loaders turn TOML lists) of values that pass `rule`."""
    test = rule[0]
    return (lambda value: isinstance(value, tuple) and (may_be_empty or len(value) > 0)
            and all(test(item) for item in value), f"a list of {what}, e.g. {example}")


NON_NEGATIVE: Rule = (lambda value: is_number(value) and value >= 0, "a number >= 0")
POSITIVE: Rule = (lambda value: is_number(value) and value > 0, "a positive number")
FRACTION: Rule = (lambda value: is_number(value) and 0 <= value < 1, "a number in [0, 1)")
TEXT: Rule = (lambda value: isinstance(value, str), "a string")
BOOLEAN: Rule = (lambda value: isinstance(value, bool), "true or false")


def check(rules: dict[str, Rule], key: str, value, what: str) -> None:
    """Raises a ValueError naming `what` (where the value came from) unless `value` passes the
    rule of `key` (a key without one passes)."""
    test, must_be = rules.get(key, (lambda _: True, ""))
    if not test(value):
        raise ValueError(f"{what} is {value!r}; it must be {must_be}")
