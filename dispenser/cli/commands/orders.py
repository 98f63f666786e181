"""Orders: list, show, submit from JSON lines, cancel, and the pharmacist's holds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from rich.console import Group
from rich.text import Text

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.cli.args import complete_files, limit
from dispenser.cli.context import Context, Exit
from dispenser.cli.lines import Line, Report, open_input, progress, read_lines, refusal_text
from dispenser.cli.render import held_orders, order_detail, order_table

__all__ = ["register"]

ORDER_STATES = ("received", "held", "queued", "picking", "labelling", "completed",
                "cancelled", "rejected", "failed")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("orders", parents=[common], help="list orders (no patient data)")
    p.add_argument("--state", choices=ORDER_STATES)
    p.add_argument("--limit", type=limit, default=100, help="1..1000 (default 100)")
    p.add_argument("--after", metavar="ORDER_ID", help="continue after this order (paging)")
    p.set_defaults(func=orders)

    p = sub.add_parser("order", parents=[common], help="one order in full, with patient data")
    p.add_argument("order_id", metavar="ID")
    p.set_defaults(func=order)

    p = sub.add_parser(
        "submit", parents=[common], help="submit orders from a JSON-lines file",
        description="Submit orders, one JSON object per line (docs/orders.md), in batches "
        "(order.submit_batch). Every refused line is reported with its number and each "
        "error; the other lines are still submitted. Exit 4 when any line was refused.")
    complete_files(p.add_argument("file", metavar="FILE", help="JSON-lines file, - for stdin"))
    p.add_argument("--chunk", type=limit, default=200,
                   help="orders per order.submit_batch call, 1..1000 (default 200)")
    p.set_defaults(func=submit)

    for name, verb, doc in (
        ("cancel", "order.cancel", "cancel an order not yet picked"),
        ("release", "order.release", "release a held order after checking it"),
        ("reject", "order.reject", "reject a held or received order"),
    ):
        p = sub.add_parser(name, parents=[common], help=doc)
        p.add_argument("order_id", metavar="ID")
        p.add_argument("--reason", required=True, help="recorded in the audit trail")
        p.set_defaults(func=order_action, method=verb)

    p = sub.add_parser("holds", parents=[common],
                       help="orders held for a pharmacist, with the reasons")
    p.add_argument("--limit", type=limit, default=100)
    p.add_argument("--after", metavar="ORDER_ID")
    p.set_defaults(func=orders, state="held")


def orders(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"limit": args.limit}
    if args.state:
        params["state"] = args.state
    if args.after:
        params["after"] = args.after
    if args.state == "held":
        ctx.emit(ctx.call("order.list", params), held_orders)
    else:
        ctx.emit(ctx.call("order.list", params), lambda r: order_table(r, "Orders"))
    return Exit.OK


def order(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("order.get", {"order_id": args.order_id}), order_detail)
    return Exit.OK


def order_action(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call(args.method, {"order_id": args.order_id, "reason": args.reason})
    ctx.emit(result, lambda r: Text(f"order {r.get('order_id')} is now {r.get('state')}"))
    return Exit.OK


# -- submit


def _parse(line: Line) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(order, None)``, or ``(None, error)`` saying why the line is not an order."""
    try:
        value = json.loads(line.text)
    except json.JSONDecodeError as exc:
        return None, {"code": int(ErrorCode.PARSE_ERROR),
                      "message": f"not valid JSON: {exc.msg} at column {exc.colno}"}
    if not isinstance(value, dict):
        return None, {"code": int(ErrorCode.INVALID_ORDER),
                      "message": "an order must be a JSON object"}
    return value, None


def _outcome(result: Any) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        return {"error": {"code": int(ErrorCode.INTERNAL_ERROR),
                          "message": f"unexpected result from dispenserd: {result!r}"}}
    return dict(result)


def submit(ctx: Context, args: argparse.Namespace) -> Exit:
    with open_input(args.file) as handle:
        lines = list(read_lines(handle))
    report = Report()
    batch: list[tuple[Line, dict[str, Any]]] = []
    for line in lines:
        parsed, error = _parse(line)
        if parsed is None:
            report.add(line.number, {"error": error})
        else:
            batch.append((line, parsed))

    with progress(ctx, "submitting", len(batch)) as bar:
        for start in range(0, len(batch), args.chunk):
            chunk = batch[start:start + args.chunk]
            try:
                result = ctx.call("order.submit_batch", {"orders": [o for _, o in chunk]})
            except ApiError as exc:
                if start == 0:
                    raise  # nothing was submitted: the whole command was refused
                # Earlier chunks are in; say which lines were not submitted and why.
                error = {"code": int(exc.code), "message": exc.message,
                         **(exc.data if isinstance(exc.data, dict) else {})}
                for line, o in batch[start:]:
                    report.add(line.number, {"order_id": o.get("order_id"), "error": error})
                break
            results = result.get("results") if isinstance(result, Mapping) else None
            if not isinstance(results, list) or len(results) != len(chunk):
                raise ApiError(ErrorCode.INTERNAL_ERROR,
                               "dispenserd answered order.submit_batch with a result per "
                               "order missing; check order list before submitting again")
            for (line, _), outcome in zip(chunk, results, strict=True):
                report.add(line.number, _outcome(outcome))
            if bar is not None:
                bar.advance(bar.task_ids[0], len(chunk))

    if ctx.json:
        ctx.print_json(report.as_json())
    else:
        ctx.print(_summary(report, len(lines)))
    return Exit.PARTIAL if report.refused else Exit.OK


def _summary(report: Report, total: int) -> Group:
    accepted = report.accepted
    held = [row for row in accepted if row.get("state") == "held"]
    head = Text(f"{total} line{'s' if total != 1 else ''}: {len(accepted)} accepted"
                f"{f' ({len(held)} held for a pharmacist)' if held else ''}, "
                f"{len(report.refused)} refused",
                style="bold red" if report.refused else "bold green")
    parts: list[Text] = [head]
    for row in held:
        reasons = row.get("hold_reasons") or []
        codes = ", ".join(str(r.get("code")) for r in reasons if isinstance(r, Mapping))
        parts.append(Text(f"line {row['line']} ({row.get('order_id')}): held"
                          + (f": {codes}" if codes else ""), style="yellow"))
    parts += [refusal_text(row, "order_id") for row in sorted(report.refused,
                                                              key=lambda r: int(r["line"]))]
    return Group(*parts)
