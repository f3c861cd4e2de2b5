"""`vitbench`: one absl-flags command with subcommands (see `vitbench --help`)."""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from vitbench import commands

PROG = "vitbench"
# Raised for unknown names, bad values, missing or corrupt files and failed downloads.
USER_ERRORS = (LookupError, ValueError, OSError, RuntimeError)


def usage() -> str:
    width = max(len(name) for name in commands.COMMANDS)
    rows = "\n".join(f"  {name.ljust(width)}  {command.summary}"
                     for name, command in commands.COMMANDS.items())
    return (f"usage: {PROG} <command> [--flags]\n\n"
            "Reproduce and extend the Vision Transformer study.\n\n"
            f"commands:\n{rows}\n\n"
            f"`{PROG} <command> --help` describes a command's flags.")


def command_usage(command: commands.Command, flag_values: flags.FlagValues) -> str:
    lines = [f"usage: {PROG} {command.name} [--flags]", "", command.description, "", "flags:"]
    for name in sorted(flag_values):
        flag = flag_values[name]
        if name != flag.name:
            continue  # the short alias of a flag listed under its long name
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        lines.append(f"  --{name}: {flag.help}{default}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Runs one subcommand; returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = args.pop(0)
    command = commands.COMMANDS.get(name)
    if command is None:
        print(f"{PROG}: unknown command {name!r}; commands: {', '.join(commands.COMMANDS)}",
              file=sys.stderr)
        return 2
    flag_values = flags.FlagValues()
    command.define_flags(flag_values)
    flags.DEFINE_boolean("help", False, "Show this help.", short_name="h",
                         flag_values=flag_values)
    try:
        extra = flag_values([f"{PROG} {name}"] + args)[1:]
        if extra:  # absl keeps what is not a flag: a value meant for one (`run vtab1k`)
            raise flags.Error(f"unexpected argument{'s' * (len(extra) > 1)} "
                              f"{' '.join(extra)}: every setting is a flag, as in "
                              "--name=value")
    except flags.Error as error:
        print(f"{PROG} {name}: {error}\n`{PROG} {name} --help` lists its flags.",
              file=sys.stderr)
        return 2
    if flag_values.help:
        print(command_usage(command, flag_values))
        return 0
    try:
        return command.run(flag_values) or 0
    except KeyboardInterrupt:  # Ctrl-C: what was recorded or saved stays; no traceback
        print(f"\n{PROG} {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`vitbench models | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as error:  # bad input: say what, not where in the code
        # A KeyError's str() quotes its message; an OSError's args[0] is only its number.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{PROG} {name}: error: {message}", file=sys.stderr)
        return 1


def run():
    """Console-script entry point."""
    # Keep TensorFlow's and TFDS's start-up chatter (probing folders that do not exist yet) out
    # of the command's output; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.set_verbosity(logging.ERROR)
    sys.exit(main())
