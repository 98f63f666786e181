"""Output tasks (packs picked to an output for pharmacy software): list and show."""

from __future__ import annotations

import argparse
from typing import Any

from dispenser.cli.args import limit
from dispenser.cli.context import Context, Exit
from dispenser.cli.render import task_detail, task_table

__all__ = ["register"]

TASK_STATES = ("queued", "in_process", "aborting", "completed", "incomplete", "aborted")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tasks", parents=[common],
                       help="list output tasks (pharmacy software's outputs, WWKS2)")
    p.add_argument("--state", choices=TASK_STATES)
    p.add_argument("--purpose", choices=("wwks2_output", "destruction"))
    p.add_argument("--limit", type=limit, default=100)
    p.add_argument("--after", metavar="TASK_ID")
    p.set_defaults(func=tasks)

    p = sub.add_parser("task", parents=[common],
                       help="one output task in full: lines, packs, who asked")
    p.add_argument("task_id", metavar="ID")
    p.set_defaults(func=task)


def tasks(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"limit": args.limit}
    for name in ("state", "purpose", "after"):
        value = getattr(args, name)
        if value:
            params[name] = value
    ctx.emit(ctx.call("task.list", params), task_table)
    return Exit.OK


def task(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("task.get", {"task_id": args.task_id}), task_detail)
    return Exit.OK
