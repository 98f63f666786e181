"""Shipments: list, show, confirm manual (fridge, bulky) packs, reprint labels."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.text import Text

from dispenser.cli.args import limit
from dispenser.cli.commands.stock import scan_text
from dispenser.cli.context import Context, Exit
from dispenser.cli.render import shipment_detail, shipment_table

__all__ = ["register"]

SHIPMENT_STATES = ("forming", "queued", "held", "picking", "labelling", "completed",
                   "cancelled", "failed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("shipments", parents=[common], help="list shipments (no patient data)")
    p.add_argument("--state", choices=SHIPMENT_STATES)
    p.add_argument("--limit", type=limit, default=100)
    p.add_argument("--after", metavar="SHIPMENT_ID")
    p.set_defaults(func=shipments)

    p = sub.add_parser("shipment", parents=[common],
                       help="one shipment in full: picks, packs, billing, patient")
    p.add_argument("shipment_id", metavar="ID")
    p.set_defaults(func=shipment)

    p = sub.add_parser("confirm-manual", parents=[common],
                       help="confirm a manual (fridge, bulky) pack put in the tote by its scan")
    p.add_argument("shipment_id", metavar="SHIPMENT_ID")
    p.add_argument("scan", metavar="SCAN", help="the pack's GS1 scan (<GS> for a separator)")
    p.set_defaults(func=confirm_manual)

    p = sub.add_parser("reprint", parents=[common],
                       help="print a shipment's label and/or packing slip again")
    p.add_argument("shipment_id", metavar="SHIPMENT_ID")
    p.add_argument("--what", choices=("label", "slip", "both"), default="both")
    p.set_defaults(func=reprint)


def shipments(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    if args.after:
        params["after"] = args.after
    ctx.emit(ctx.call("shipment.list", params), shipment_table)
    return Exit.OK


def shipment(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("shipment.get", {"shipment_id": args.shipment_id}), shipment_detail)
    return Exit.OK


def _manual_progress(result: Mapping[str, Any]) -> Group:
    lines = [Text(f"shipment {result.get('shipment_id')} is {result.get('state')}")]
    for m in result.get("manual_picks") or []:
        if isinstance(m, Mapping):
            lines.append(Text(f"  {m.get('drug_code')}: {m.get('confirmed')}/{m.get('count')} "
                              "confirmed"))
    return Group(*lines)


def confirm_manual(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call("shipment.confirm_manual",
                      {"shipment_id": args.shipment_id, "scan": scan_text(args.scan)})
    ctx.emit(result, _manual_progress)
    return Exit.OK


def reprint(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call("label.reprint", {"shipment_id": args.shipment_id, "what": args.what})
    what = {"both": "label and packing slip", "slip": "packing slip"}.get(args.what, "label")
    printed = isinstance(result, Mapping) and result.get("printed") is True
    ctx.emit(result, lambda r: Text(f"{what} of {args.shipment_id} printed" if printed
                                    else f"not printed: {', '.join(r.get('reasons') or [])}"))
    return Exit.OK if printed else Exit.REFUSED
