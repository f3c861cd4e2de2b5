"""Subcommands of `vitbench`: each module registers one with `@command`."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable

from absl import flags


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    summary: str
    description: str
    define_flags: Callable[[flags.FlagValues], None]
    run: Callable[[flags.FlagValues], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, define_flags: Callable[[flags.FlagValues], None]):
    """Registers `run(flag_values)` as `vitbench <name>`; its docstring is the help text."""

    def register(run):
        description = inspect.cleandoc(run.__doc__ or "")
        COMMANDS[name] = Command(name, description.splitlines()[0], description, define_flags, run)
        return run

    return register


# Command modules, in the order `vitbench --help` lists them. They import heavy libraries
# (Keras, TensorFlow) inside `run`, so the CLI starts instantly.
for _module in ("demo", "run", "pretrain", "leaderboard", "compare", "models", "checkpoints",
                "tasks", "bench", "inspect_checkpoint"):
    importlib.import_module(f"vitbench.commands.{_module}")
