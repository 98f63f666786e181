"""The robot: adopt one that answers in place of the journal's (technician)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from dispenser.cli.context import Context, Exit

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    robot = sub.add_parser("robot", parents=[common], help="the robot (technician)")
    rsub = robot.add_subparsers(dest="robot_command", metavar="COMMAND", required=True)
    p = rsub.add_parser("adopt", parents=[common],
                        help="take the robot that answers as the journal's (after a board "
                        "replacement; maintenance mode): counts the slots its predecessor "
                        "may have changed")
    p.add_argument("--note", help="what was done, for the record")
    p.set_defaults(func=adopt)


def _adopted(result: Mapping[str, Any]) -> RenderableType:
    lines = [Text(f"robot adopted (adoption {result.get('adoption_id')}): "
                  f"{result.get('unknown_intents')} command(s) of the old robot unknown, "
                  f"{len(result.get('slots_to_count') or [])} slot(s) to count")]
    settlement = result.get("settlement")
    if not isinstance(settlement, Mapping):
        lines.append(Text("counting goes on: see dispenserctl status", style="yellow"))
    elif settlement.get("settled"):
        lines.append(Text(f"settled by the counts: {len(settlement.get('done') or [])} done, "
                          f"{len(settlement.get('void') or [])} to send again",
                          style="green"))
    else:
        lines.append(Text("the counts fit no order of events: shipments failed "
                          f"{settlement.get('failed_shipments') or []}, see "
                          "dispenserctl discrepancies", style="bold red"))
    if isinstance(settlement, Mapping) and settlement.get("discrepancies"):
        lines.append(Text(f"slots blocked by their count: {settlement['discrepancies']}",
                          style="bold red"))
    lines.append(Text("leave maintenance mode to resume: dispenserctl maintenance off"))
    return Group(*lines)


def adopt(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {}
    if args.note:
        params["note"] = args.note
    result = ctx.call("robot.adopt", params, timeout=max(ctx.timeout, 180.0))
    ctx.emit(result, _adopted)
    return Exit.OK
