"""Stock: list packs, load scanned packs, quarantine a batch, discrepancies."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.text import Text

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.cli.args import complete_files, limit
from dispenser.cli.context import Context, Exit
from dispenser.cli.lines import Line, Report, open_input, progress, read_lines, refusal_text
from dispenser.cli.render import discrepancies_table, pack_table

__all__ = ["register", "scan_text"]

PACK_STATES = ("loading", "in_stock", "picked", "dispensed", "disposed", "quarantined",
               "missing", "dropped", "refused")
GS = "\x1d"
# How a GS1 group separator arrives when a scanner or a file cannot carry the control
# character itself.
_GS_SPELLINGS = ("<GS>", "{GS}", "\\x1d", "\\x1D", "\\u001d", "\\u001D", "^]")
# Refusals that no later line can avoid: stop instead of reporting each line the same way.
_FATAL = {ErrorCode.FORBIDDEN, ErrorCode.UNAUTHENTICATED, ErrorCode.METHOD_NOT_FOUND}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stock", parents=[common], help="packs in the machine, soonest expiry first")
    p.add_argument("--drug", metavar="CODE", help="only this drug code (GTIN-14)")
    p.add_argument("--state", choices=PACK_STATES, help="pack state (default in_stock)")
    p.add_argument("--slot", type=int)
    p.add_argument("--near-expiry", action="store_true",
                   help="only packs in stock that are near expiry or expired (they serve no "
                   "order; the expiry sweep takes them out)")
    p.add_argument("--limit", type=limit, default=100)
    p.add_argument("--after", type=int, metavar="PACK_ID")
    p.set_defaults(func=stock)

    p = sub.add_parser(
        "load", parents=[common], help="load scanned packs, one GS1 scan per line",
        description="Load packs: one GS1 DataMatrix scan per line, from FILE or stdin (a "
        "barcode scanner types lines). Each pack is stored before the next line is read "
        "(stock.load with wait), and every line is reported: the slot it went to, or why it "
        "was refused. A group separator may be typed as <GS>, {GS}, \\x1d or ^]. Exit 4 when "
        "any line was refused.")
    complete_files(p.add_argument("file", metavar="FILE", nargs="?", default="-",
                                  help="file of scans, - for stdin (default)"))
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="return once each STORE is queued instead of once it is stored")
    p.set_defaults(func=load)

    p = sub.add_parser("quarantine", parents=[common],
                       help="quarantine every pack of a batch (recall, damage)")
    drug = p.add_mutually_exclusive_group(required=True)
    drug.add_argument("--drug", metavar="CODE", help="the batch's drug code (GTIN-14)")
    # The old spelling, hidden (dispenser 0.1.0 took --gtin).
    drug.add_argument("--gtin", dest="drug", help=argparse.SUPPRESS)
    p.add_argument("--batch", required=True)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=quarantine)

    p = sub.add_parser("discrepancies", parents=[common],
                       help="slots where the robot found other than expected")
    p.add_argument("--limit", type=limit, default=100)
    p.add_argument("--after", type=int, metavar="ID")
    p.set_defaults(func=discrepancies)


def stock(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"limit": args.limit}
    for key, value in (("drug_code", args.drug), ("state", args.state), ("slot", args.slot),
                       ("after", args.after)):
        if value is not None:
            params[key] = value
    if args.near_expiry:
        params["near_expiry"] = True
    ctx.emit(ctx.call("stock.list", params), lambda r: pack_table(r, shelf=True))
    return Exit.OK


def quarantine(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call("stock.quarantine",
                      {"drug_code": args.drug, "batch": args.batch, "reason": args.reason})
    def shown(r: Mapping[str, Any]) -> Text:
        count = r.get("quarantined")
        return Text(f"{count} pack{'' if count == 1 else 's'} of {args.drug} batch "
                    f"{args.batch} quarantined")

    ctx.emit(result, shown)
    return Exit.OK


def discrepancies(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"limit": args.limit}
    if args.after is not None:
        params["after"] = args.after
    ctx.emit(ctx.call("stock.discrepancies", params), discrepancies_table)
    return Exit.OK


# -- load


def scan_text(line: str) -> str:
    """The scan as the daemon expects it: spelled-out group separators made real."""
    for spelling in _GS_SPELLINGS:
        line = line.replace(spelling, GS)
    return line.strip(" \t")


def _error(exc: ApiError) -> dict[str, Any]:
    data = exc.data if isinstance(exc.data, dict) else {}
    return {"code": int(exc.code), "message": exc.message, **data}


def _load_one(ctx: Context, line: Line, wait: bool) -> dict[str, Any]:
    scan = scan_text(line.text)
    try:
        pack = ctx.call("stock.load", {"scan": scan, "wait": wait})
    except ApiError as exc:
        if exc.code in _FATAL:
            raise
        return {"scan": scan, "error": _error(exc)}
    if not isinstance(pack, Mapping):
        return {"scan": scan, "error": {"code": int(ErrorCode.INTERNAL_ERROR),
                                        "message": f"unexpected result: {pack!r}"}}
    if pack.get("state") == "refused":
        # The scan was fine but the robot would not store the pack (wrong pack at the input).
        return {"scan": scan, "pack": dict(pack), "error": {
            "code": int(ErrorCode.LOAD_REFUSED), "reason": "refused",
            "message": "the robot did not store the pack; take it from the input point"}}
    return {"scan": scan, "pack": dict(pack)}


def _stored_text(row: dict[str, Any]) -> Text:
    pack = row["pack"]
    return Text(f"line {row['line']}: pack {pack.get('pack_id')} {pack.get('drug_code')} batch "
                f"{pack.get('batch')} expiry {pack.get('expiry')} -> slot {pack.get('slot')} "
                f"({pack.get('state')})", style="green")


def load(ctx: Context, args: argparse.Namespace) -> Exit:
    report = Report()
    with open_input(args.file) as handle:
        # A file is counted first for the progress bar; stdin is handled line by line as it
        # is typed, so each scan gets its answer at once.
        lines = list(read_lines(handle)) if args.file != "-" else read_lines(handle)
        total = len(lines) if isinstance(lines, list) else None
        # A scanner typing into the terminal: a bar redrawn over its echo would only hide it.
        typed = handle.isatty()
        with progress(ctx, "loading", total, show=not typed) as bar:
            for line in lines:
                row = _load_one(ctx, line, args.wait)
                report.add(line.number, row)
                if not ctx.json:
                    shown = report.rows[-1]
                    message = refusal_text(shown, "scan") if "error" in shown \
                        else _stored_text(shown)
                    ctx.print(message)  # above the bar: Live redirects stdout
                if bar is not None:
                    bar.advance(bar.task_ids[0])
    if ctx.json:
        ctx.print_json(report.as_json())
    else:
        count = len(report.rows)
        ctx.print(Text(f"{count} scan{'s' if count != 1 else ''}: "
                           f"{len(report.accepted)} loaded, {len(report.refused)} refused",
                           style="bold red" if report.refused else "bold green"))
    return Exit.PARTIAL if report.refused else Exit.OK
