"""Technician commands: robot registers, self-test, printer, Modbus statistics, audit check,
and the audit key (made here, locally, without the daemon)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from dispenser.cli.args import number
from dispenser.cli.context import Context, Exit, UsageError
from dispenser.cli.render import registers_table, selftest_table, stats_table
from dispenser.journal import AuditKey

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    diag = sub.add_parser("diag", parents=[common], help="diagnostics (technician)")
    dsub = diag.add_subparsers(dest="diag_command", metavar="COMMAND", required=True)

    p = dsub.add_parser("registers", parents=[common],
                        help="read robot holding registers as they are")
    p.add_argument("address", type=number, metavar="ADDR")
    p.add_argument("count", type=number, metavar="COUNT", help="1..125")
    p.set_defaults(func=registers)

    p = dsub.add_parser("selftest", parents=[common],
                        help="home, scan a slot, print a test label (maintenance mode only)")
    p.add_argument("--slot", type=int, default=0)
    p.set_defaults(func=selftest)

    p = dsub.add_parser("printer", parents=[common], help="ask the printer for its status now")
    p.set_defaults(func=printer)

    p = dsub.add_parser("stats", parents=[common], help="Modbus traffic and robot counters")
    p.set_defaults(func=stats)

    audit = sub.add_parser("audit", parents=[common], help="the audit trail (technician)")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    p = asub.add_parser("verify", parents=[common],
                        help="check the audit trail is complete and unaltered (exit 5 if not)")
    p.set_defaults(func=audit_verify)
    p = asub.add_parser("init-key", parents=[common],
                        help="make a new audit key file (mode 0600; never over an existing "
                        "file); run as root at install, see docs/install.md")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=audit_init_key, offline=True)


def registers(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call("diag.registers", {"address": args.address, "count": args.count})
    ctx.emit(result, registers_table)
    return Exit.OK


def selftest(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call("diag.selftest", {"slot": args.slot})
    ctx.emit(result, selftest_table)
    return Exit.OK if isinstance(result, Mapping) and result.get("ok") else Exit.REFUSED


def _printer(result: Mapping[str, Any]) -> Text:
    if result.get("ready"):
        return Text("printer ready", style="green")
    return Text("printer not ready: " + ", ".join(map(str, result.get("reasons") or [])),
                style="bold red")


def printer(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("diag.printer"), _printer)
    return Exit.OK


def stats(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("diag.stats"), stats_table)
    return Exit.OK


def _audit(result: Mapping[str, Any]) -> RenderableType:
    if result.get("ok"):
        return Text(f"audit trail intact: {result.get('records')} records", style="green")
    lines = [Text(f"AUDIT TRAIL CHECK FAILED after {result.get('records')} records",
                  style="bold red")]
    if result.get("first_bad_row") is not None:
        lines.append(Text(f"  first bad record: {result['first_bad_row']}"))
    findings = result.get("findings")
    if isinstance(findings, list) and findings:
        for f in findings:
            where = f" from record {f['first_bad_row']}" if f.get("first_bad_row") else ""
            kind = str(f.get("kind", "")).replace("_", " ")
            lines.append(Text(f"  {kind}{where}: {f.get('message')}"))
    else:
        lines += [Text(f"  {problem}") for problem in result.get("problems") or []]
    return Group(*lines)


def audit_verify(ctx: Context, args: argparse.Namespace) -> Exit:
    result = ctx.call("audit.verify", timeout=max(ctx.timeout, 300.0))
    ctx.emit(result, _audit)
    ok = isinstance(result, Mapping) and result.get("ok") is True
    return Exit.OK if ok else Exit.AUDIT_FAILED


def audit_init_key(ctx: Context, args: argparse.Namespace) -> Exit:
    try:
        key = AuditKey.create(args.file)
    except FileExistsError:
        raise UsageError(f"{args.file} exists: an audit key is never overwritten (the "
                         "journal's rows would no longer verify); give another FILE") from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.file}: {exc.strerror}") from None
    result = {"file": args.file, "key_id": key.key_id}
    ctx.emit(result, lambda r: Text(
        f"audit key written to {r['file']} (key id {r['key_id']}, mode 0600); keep a copy "
        "with the backups, apart from the journal"))
    return Exit.OK
