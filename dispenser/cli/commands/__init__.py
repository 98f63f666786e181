"""The subcommands, one module per area. Each module's ``register`` adds its parsers.

A parser's ``func`` default is the command: ``func(ctx, args) -> Exit``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dispenser.cli.commands import (
    completion,
    diag,
    machine,
    orders,
    patients,
    robot,
    shipments,
    stock,
    sweep,
    tasks,
    tokens,
)
from dispenser.cli.context import Context, Exit

__all__ = ["Command", "register_all"]

Command = Callable[[Context, argparse.Namespace], Exit]


def register_all(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
    for module in (machine, orders, shipments, tasks, stock, sweep, diag, robot, tokens,
                   patients, completion):
        module.register(sub, common)
