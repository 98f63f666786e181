"""The machine: status, live view, pause/resume/maintenance, faults and their acknowledgement."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from dispenser.cli.args import limit
from dispenser.cli.commands import top as top_view
from dispenser.cli.context import Context, Exit
from dispenser.cli.render import fault_table, status_view

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common],
                       help="machine state, robot, printer, outputs, counts")
    p.set_defaults(func=status)

    top_view.register(sub, common)

    p = sub.add_parser("pause", parents=[common],
                       help="stop sending new robot commands (queued ones finish)")
    p.add_argument("--reason", default="", help="recorded in the audit trail")
    p.set_defaults(func=pause)

    p = sub.add_parser("resume", parents=[common], help="from paused or maintenance to ready")
    p.set_defaults(func=resume)

    p = sub.add_parser("maintenance", parents=[common],
                       help="enter (on) or leave (off) maintenance mode (technician)")
    p.add_argument("mode", choices=("on", "off"))
    p.set_defaults(func=maintenance)

    p = sub.add_parser("faults", parents=[common],
                       help="open faults (--all: the history, newest first)")
    p.add_argument("--all", action="store_true", help="acknowledged faults too")
    p.add_argument("--limit", type=limit, default=100)
    p.add_argument("--after", type=int, metavar="FAULT_ID")
    p.set_defaults(func=faults)

    p = sub.add_parser("ack", parents=[common],
                       help="acknowledge a fault once its cause is cleared (resets the robot)")
    p.add_argument("fault_id", type=int, metavar="FAULT_ID")
    p.add_argument("--note", help="what was done, for the fault record")
    p.set_defaults(func=ack)


_STATE_PHRASE = {
    "startup": "starting up", "homing": "homing", "ready": "ready", "paused": "paused",
    "fault": "stopped by a fault", "estop": "stopped by the emergency stop",
    "maintenance": "in maintenance mode", "stopping": "stopping",
}


def _state_line(result: Any) -> Text:
    state = result.get("state") if isinstance(result, dict) else None
    line = f"machine is {_STATE_PHRASE.get(str(state), state)}"
    pause = result.get("pause") if isinstance(result, dict) else None
    if state == "paused" and isinstance(pause, dict) and pause.get("reason"):
        line += f": {pause['reason']}"
    return Text(line)


def status(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("machine.status"), status_view)
    return Exit.OK


def pause(ctx: Context, args: argparse.Namespace) -> Exit:
    params = {"reason": args.reason} if args.reason else {}
    ctx.emit(ctx.call("machine.pause", params), _state_line)
    return Exit.OK


def resume(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("machine.resume"), _state_line)
    return Exit.OK


def maintenance(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("machine.maintenance", {"on": args.mode == "on"}), _state_line)
    return Exit.OK


def faults(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"limit": args.limit}
    if not args.all:
        params["active"] = True
    if args.after is not None:
        params["after"] = args.after
    title = "Faults" if args.all else "Open faults"
    ctx.emit(ctx.call("fault.list", params), lambda r: fault_table(r, title))
    return Exit.OK


def ack(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"fault_id": args.fault_id}
    if args.note:
        params["note"] = args.note
    result = ctx.call("fault.ack", params)
    ctx.emit(result, lambda r: Text(f"fault {r.get('fault_id')} ({r.get('kind')}) acknowledged"
                                    f" by {r.get('acked_by')}"))
    return Exit.OK
