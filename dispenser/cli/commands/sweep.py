"""The expiry sweep: near-expiry and expired packs to an output in totes for destruction."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from dispenser.cli.context import Context, Exit
from dispenser.cli.render import pack_table, task_table

__all__ = ["register", "sweep_view"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sweep", parents=[common],
        help="pick every near-expiry and expired pack to an output for destruction",
        description="The expiry sweep (stock.sweep): every pack in stock that is near expiry "
        "or expired is reserved and picked to OUTPUT in totes for destruction; the packs "
        "end 'disposed'. Prints the destruction list (drug, batch, expiry, serial) and the "
        "totes' output tasks; follow them with 'dispenserctl tasks --purpose destruction'.")
    p.add_argument("--output", type=int, required=True, metavar="N",
                   help="the output the totes go to (from 1)")
    p.set_defaults(func=sweep)


def sweep_view(r: Mapping[str, Any]) -> RenderableType:
    """The sweep's answer: what it says, the packs to destroy, the totes' tasks."""
    parts: list[RenderableType] = [Text(str(r.get("message", "")),
                                        style="bold" if r.get("sweep_id") else "dim")]
    packs = r.get("packs") or []
    if packs:
        parts.append(pack_table({"items": packs}, title=f"For destruction ({len(packs)} "
                                f"packs, {r.get('sweep_id')})", section=True, shelf=True))
        parts.append(task_table({"items": r.get("tasks") or []}, title="Totes (output tasks)"))
    left = r.get("left") or []
    if left:
        parts.append(pack_table({"items": left}, title="Left for a later sweep", section=True,
                                shelf=True))
    return Group(*parts)


def sweep(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("stock.sweep", {"output": args.output}), sweep_view)
    return Exit.OK
