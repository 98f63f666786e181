"""The pharmacist's views: the patient's record on one screen (readable at 80 columns),
the renewals list, and what caused a duplicate or provenance hold.

The patient's record is patient data (drug history): it is shown to the person who asked
for it and never written anywhere else by dispenserctl.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from dispenser.cli.causes import cause_text
from dispenser.cli.render import kv_table, state, text
from dispenser.cli.sheet import Column, Sheet

__all__ = ["patient_view", "renewals_table"]


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _supplies(record: Mapping[str, Any]) -> Sheet | None:
    rows = _rows(record.get("supplies"))
    if not rows:
        return None
    sheet = Sheet("Current supply", [
        Column("until", "short"), Column("days", "short", justify="right"),
        Column("ingredient: from", "text")], section=True)
    for s in rows:
        kind = s.get("kind")
        where = (f"on order {s.get('ref')}" if kind == "order" else
                 f"{s.get('source_name')}, {s.get('dispensed_on')}")
        sheet.add_row(text(s.get("supply_until")), text(s.get("days_left")),
                      text(f"{s.get('ingredient')}: {where}"))
    return sheet


def _prescriptions(record: Mapping[str, Any]) -> Sheet | None:
    rows = _rows(record.get("prescriptions"))
    if not rows:
        return None
    sheet = Sheet("Prescriptions", [
        Column("prescription"), Column("issued", "short"), Column("from", "short"),
        Column("designated", "short", drop=1), Column("packs left of prescribed", "list")],
        section=True)
    for rx in rows:
        items = ", ".join(f"{'+'.join(i.get('ingredients') or []) or i.get('atc')} "
                          f"{i.get('left')}/{i.get('quantity')}" for i in _rows(rx.get("items")))
        sheet.add_row(text(rx.get("prescription_id")), text(rx.get("issued_on")),
                      text(rx.get("institution")), text(bool(rx.get("designated"))),
                      text(items))
    return sheet


def _history(record: Mapping[str, Any]) -> Sheet | None:
    rows = _rows(record.get("history"))
    if not rows:
        return None
    total = record.get("history_total")
    title = "Dispensing history" + (f" (newest {len(rows)} of {total})"
                                    if isinstance(total, int) and total > len(rows) else "")
    sheet = Sheet(title, [
        Column("dispensed", "short"), Column("source", "short"),
        Column("packs", "short", justify="right"),
        Column("days", "short", justify="right", drop=1), Column("product", "text")],
        section=True)
    for h in rows:
        sheet.add_row(text(h.get("dispensed_on")),
                      text("here" if h.get("source") == "this pharmacy" else h.get("source")),
                      text(h.get("quantity")), text(h.get("days_supply")),
                      text(h.get("description")))
    return sheet


def _open_orders(record: Mapping[str, Any]) -> Sheet | None:
    rows = _rows(record.get("open_orders"))
    if not rows:
        return None
    sheet = Sheet("Open orders", [Column("order"), Column("state", "state"),
                                  Column("holds", "text")], section=True)
    for o in rows:
        holds = []
        for h in _rows(o.get("hold_reasons")):
            line = cause_text(h.get("cause"))
            holds.append(f"{h.get('code')}: {h.get('detail')}"
                         + (f" [{line}]" if line else ""))
        sheet.add_row(text(o.get("order_id")), state(o.get("state")),
                      text("; ".join(holds) or None))
    return sheet


def patient_view(record: Mapping[str, Any]) -> RenderableType:
    head = kv_table([("patient", text(record.get("patient_id"))),
                     ("as of", record.get("today"))])
    parts: list[RenderableType] = [head]
    for part in (_supplies(record), _prescriptions(record), _open_orders(record),
                 _history(record)):
        if part is not None:
            parts.append(part)
    if len(parts) == 1:
        parts.append(Text("no dispensing, prescription or open order on record", style="dim"))
    return Group(*parts)


def renewals_table(result: Any) -> RenderableType:
    items = _rows(result.get("items")) if isinstance(result, Mapping) else []
    if not items:
        return Text("no prescription reaches its limit in that time", style="dim")
    sheet = Sheet("Re-examination due", [
        Column("patient"), Column("prescription"), Column("from", "short", drop=2),
        Column("issued", "short", drop=1), Column("limit", "short"),
        Column("days", "short", justify="right")],
        hint=Text(f"more: repeat with --after {result['next']}", style="dim")
        if isinstance(result, Mapping) and result.get("next") else None)
    for r in items:
        sheet.add_row(text(r.get("patient_id")), text(r.get("prescription_id")),
                      text(r.get("institution")), text(r.get("issued_on")),
                      text(r.get("limit_on")), text(r.get("days_left")))
    return sheet
