"""The pharmacist's desk: a patient's record, renewals due, and importing dispensing
records of other channels."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.cli.args import complete_files, limit
from dispenser.cli.context import Context, Exit, UsageError
from dispenser.cli.lines import Line, open_input, progress, read_lines
from dispenser.cli.patient_view import patient_view, renewals_table

__all__ = ["CSV_COLUMNS", "register"]

# The CSV form of a dispensing record (docs/cli.md): one header line, these columns.
CSV_COLUMNS = ("record_id", "source_code", "source_name", "patient_id", "dispensed_on",
               "drug_code", "atc", "quantity", "days_supply")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("patient", parents=[common],
                       help="a patient's record: supply, prescriptions, orders, history "
                       "(the read is audited)")
    p.add_argument("patient_id", metavar="ID")
    p.set_defaults(func=patient)

    p = sub.add_parser("renewals", parents=[common],
                       help="patients whose latest prescription reaches its age limit soon")
    p.add_argument("--within", type=_days, default=14, metavar="DAYS",
                   help="0..365 days from today (default 14)")
    p.add_argument("--limit", type=limit, default=100, help="1..1000 (default 100)")
    p.add_argument("--after", metavar="CURSOR", help="continue after this entry (paging)")
    p.set_defaults(func=renewals)

    p = sub.add_parser(
        "import-records", parents=[common],
        help="import dispensing records of other channels (JSON lines or CSV)",
        description="Import dispensing records of hospital pharmacies, other pharmacies and "
        "insurance claims (records.import): one JSON object per line, or CSV with the header "
        + ",".join(CSV_COLUMNS) + ". A record sent again is harmless. Refused records and "
        "conflicts are written, with their reasons, to the --refused file; exit 4 when "
        "there are any.")
    complete_files(p.add_argument("file", metavar="FILE",
                                  help="JSON-lines or CSV file (.csv), - for stdin"))
    p.add_argument("--format", choices=("auto", "jsonl", "csv"), default="auto",
                   help="auto: CSV when FILE ends in .csv (default)")
    complete_files(p.add_argument(
        "--refused", metavar="FILE",
        help="where refused records go, one JSON object per line (default FILE.refused.jsonl, "
        "or import-records.refused.jsonl for stdin)"))
    p.add_argument("--chunk", type=_chunk, default=2000,
                   help="records per records.import call, 1..10000 (default 2000)")
    p.set_defaults(func=import_records)


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 0 <= days <= 365:
        raise argparse.ArgumentTypeError("must be 0..365")
    return days


def _chunk(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= n <= 10000:
        raise argparse.ArgumentTypeError("must be 1..10000")
    return n


def patient(ctx: Context, args: argparse.Namespace) -> Exit:
    ctx.emit(ctx.call("patient.get", {"patient_id": args.patient_id}), patient_view)
    return Exit.OK


def renewals(ctx: Context, args: argparse.Namespace) -> Exit:
    params: dict[str, Any] = {"within_days": args.within, "limit": args.limit}
    if args.after:
        params["after"] = args.after
    ctx.emit(ctx.call("patient.renewals", params), renewals_table)
    return Exit.OK


# -- import-records


def _number(text: str) -> int | str:
    """CSV cells are text: a whole number becomes a number, anything else is sent as it
    is and refused by dispenserd with the field's path."""
    try:
        return int(text)
    except ValueError:
        return text


def _from_csv(row: Mapping[str, str | None]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "record_id": row.get("record_id") or "", "patient_id": row.get("patient_id") or "",
        "source": {"code": row.get("source_code") or "", "name": row.get("source_name") or ""},
        "dispensed_on": row.get("dispensed_on") or "",
        "quantity": _number(row.get("quantity") or ""),
        "days_supply": _number(row.get("days_supply") or "")}
    for key in ("drug_code", "atc"):
        if row.get(key):
            rec[key] = row[key]
    return rec


def _read(args: argparse.Namespace) -> list[tuple[int, Any]]:
    """(line number, record or the error that makes the line no record)."""
    fmt = args.format
    if fmt == "auto":
        fmt = "csv" if str(args.file).lower().endswith(".csv") else "jsonl"
    with open_input(args.file) as handle:
        lines = list(read_lines(handle))
    out: list[tuple[int, Any]] = []
    if fmt == "csv":
        if not lines:
            return out
        header = next(csv.reader([lines[0].text]))
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise UsageError(f"{args.file}: CSV header lacks column(s) {', '.join(missing)}; "
                             f"expected {','.join(CSV_COLUMNS)}")
        for line in lines[1:]:
            (row,) = csv.DictReader(io.StringIO(lines[0].text + "\n" + line.text))
            out.append((line.number, _from_csv(row)))
        return out
    for line in lines:
        out.append((line.number, _parse_json(line)))
    return out


def _parse_json(line: Line) -> Any:
    try:
        return json.loads(line.text)
    except json.JSONDecodeError as exc:
        return ApiError(ErrorCode.PARSE_ERROR, f"not valid JSON: {exc.msg} at column "
                        f"{exc.colno}")


def import_records(ctx: Context, args: argparse.Namespace) -> Exit:
    entries = _read(args)
    refused_path = Path(args.refused) if args.refused else Path(
        "import-records.refused.jsonl" if args.file in (None, "-")
        else f"{args.file}.refused.jsonl")
    counts = {"imported": 0, "unchanged": 0, "conflict": 0, "refused": 0}
    refused: list[dict[str, Any]] = []
    batch = [(n, r) for n, r in entries if not isinstance(r, ApiError)]
    for n, r in entries:
        if isinstance(r, ApiError):
            counts["refused"] += 1
            refused.append({"line": n, "status": "refused", "message": r.message})
    with progress(ctx, "importing", len(batch)) as bar:
        for start in range(0, len(batch), args.chunk):
            chunk = batch[start:start + args.chunk]
            try:
                result = ctx.call("records.import", {"records": [r for _, r in chunk]})
            except ApiError as exc:
                if start == 0 and not refused:
                    raise  # nothing was sent: the whole command was refused
                for n, r in batch[start:]:
                    counts["refused"] += 1
                    refused.append({"line": n, "status": "not sent", "message": exc.message,
                                    "record_id": r.get("record_id") if isinstance(r, dict)
                                    else None})
                break
            answers = result.get("results") if isinstance(result, Mapping) else None
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise ApiError(ErrorCode.INTERNAL_ERROR, "dispenserd answered records.import "
                               "without one result per record; import the file again (a "
                               "record sent twice is harmless)")
            for (n, _), answer in zip(chunk, answers, strict=True):
                status = answer.get("status") if isinstance(answer, Mapping) else None
                if status in ("imported", "unchanged"):
                    counts[status] += 1
                else:
                    counts["conflict" if status == "conflict" else "refused"] += 1
                    refused.append({"line": n, **(answer if isinstance(answer, Mapping)
                                                   else {"status": "refused"})})
            if bar is not None:
                bar.advance(bar.task_ids[0], len(chunk))
    if refused:
        refused.sort(key=lambda r: int(r["line"]))
        try:
            refused_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                            for r in refused), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {refused_path}: {exc.strerror or exc}") from None
    summary = {**counts, "records": len(entries),
               "refused_file": str(refused_path) if refused else None}
    if ctx.json:
        ctx.print_json(summary)
    else:
        bad = counts["refused"] + counts["conflict"]
        head = Text(f"{len(entries)} record{'s' if len(entries) != 1 else ''}: "
                    f"{counts['imported']} imported, {counts['unchanged']} unchanged, "
                    f"{counts['refused']} refused, {counts['conflict']} conflicting",
                    style="bold red" if bad else "bold green")
        parts = [head]
        if refused:
            parts.append(Text(f"reasons of the {bad} not imported: {refused_path}",
                              style="red"))
        ctx.print(Group(*parts))
    return Exit.PARTIAL if refused else Exit.OK
