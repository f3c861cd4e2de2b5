"""The table of preprocessing op factories by name, which `register` fills (see
`vitbench.data.registry` for the spec strings that chain them)."""

from __future__ import annotations

from collections.abc import Callable

Example = dict[str, object]
Op = Callable[[Example], Example]

OPS: dict[str, Callable[..., Op]] = {}


def register(name: str):
    """Registers an op factory under `name`."""

    def add(factory):
        if name in OPS:
            raise ValueError(f"op {name!r} is registered twice")
        OPS[name] = factory
        return factory

    return add
