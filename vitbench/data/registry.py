"""Preprocessing ops by name, and the `op1|op2(args)|...` spec strings that chain them.

An op is registered as a factory: `@register("resize")` on `def resize(size)` that returns a
function from an example dict to an example dict (TensorFlow tensors, usable in tf.data).
A spec string names ops with Python literal arguments, as big_vision does:
`"to_rgb|inception_crop(384)|flip_lr|value_range(-1, 1)"`.
"""

from __future__ import annotations

import ast
import difflib

from vitbench.data import labels, ops  # noqa: F401  (their ops register on import)
from vitbench.data.op_table import OPS, Example, Op, register  # noqa: F401  (the API)


def parse(spec: str) -> list[Op]:
    """The ops of a `|`-separated spec string, each built with its literal arguments.

    Args:
        spec: e.g. `"decode|resize(224)|value_range(-1, 1)"`; empty pieces are skipped.

    Returns:
        The ops (example dict -> example dict), in order.

    Raises:
        ValueError: a piece does not parse, has non-literal arguments, names an unknown op
            (the message suggests close ones) or has arguments its op does not take.
    """
    return [_build(piece, spec) for piece in pieces(spec)]


def pieces(spec: str) -> list[str]:
    """The op pieces (`name` or `name(args)`) of a spec string, in order."""
    return [piece.strip() for piece in spec.split("|") if piece.strip()]


def calls(spec: str) -> list[tuple[str, list, dict]]:
    """(name, args, kwargs) of each op of a spec string, unchecked against the registry.

    Raises:
        ValueError: a piece does not parse or has non-literal arguments.
    """
    return [_call(piece, spec) for piece in pieces(spec)]


def chain(spec: str) -> Op:
    """One function applying the ops of `spec` in order.

    Args:
        spec: a `|`-separated spec string (see `parse`).

    Returns:
        A function from an example dict to the example after every op.

    Raises:
        ValueError: `spec` does not parse (see `parse`).
    """
    steps = parse(spec)

    def apply(example):
        for op in steps:
            example = op(example)
        return example

    return apply


def _call(piece: str, spec: str) -> tuple[str, list, dict]:
    try:
        node = ast.parse(piece, mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"cannot parse op {piece!r} in {spec!r}: {error.msg}") from None
    if isinstance(node, ast.Name):
        name, args, kwargs = node.id, [], {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        try:
            name = node.func.id
            args = [ast.literal_eval(arg) for arg in node.args]
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        except ValueError:
            raise ValueError(f"op {piece!r} in {spec!r}: arguments must be literals") from None
    else:
        raise ValueError(f"op {piece!r} in {spec!r} is not `name` or `name(args)`")
    return name, args, kwargs


def _build(piece: str, spec: str) -> Op:
    name, args, kwargs = _call(piece, spec)
    if name not in OPS:
        close = difflib.get_close_matches(name, OPS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown op {name!r} in {spec!r}.{hint} "
                         f"Known ops: {', '.join(sorted(OPS))}")
    try:
        return OPS[name](*args, **kwargs)
    except TypeError as error:
        raise ValueError(f"op {piece!r} in {spec!r}: {error}") from None
