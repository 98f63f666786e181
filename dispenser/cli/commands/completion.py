"""``completion bash|zsh``: the shell completion script for dispenserctl.

Generated from the command line parser itself (``shtab``), so it knows every command,
option and choice there is. The package also installs both scripts where bash-completion
and zsh look for them (``share/bash-completion/completions/dispenserctl``,
``share/zsh/site-functions/_dispenserctl``); ``contrib/completion/`` holds the same text.
"""

from __future__ import annotations

import argparse
import sys

import shtab

from dispenser.cli.context import Context, Exit

__all__ = ["SHELLS", "register", "script"]

SHELLS = ("bash", "zsh")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "completion", parents=[common], help="print the shell completion script (bash, zsh)",
        description="Print the completion script for bash or zsh. Load it in the current "
        "shell with: source <(dispenserctl completion bash). The package installs both "
        "where bash-completion and zsh find them. Needs no daemon.")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=completion, offline=True)


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell``, from the parser as it is now."""
    _one_line_help(parser)
    return str(shtab.complete(parser, shell=shell))


def _one_line_help(parser: argparse.ArgumentParser) -> None:
    """Completion menus describe a command by its one-line help, not its --help text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.description = None
                _one_line_help(command)


def completion(ctx: Context, args: argparse.Namespace) -> Exit:
    sys.stdout.write(script(args.parser, args.shell))
    sys.stdout.flush()
    return Exit.OK
