"""What caused a duplicate or provenance hold (the ``cause`` of a hold reason, docs/api.md)
as a line a pharmacist reads: the supply or the prescription behind it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from dispenser.cli.sheet import Column, Sheet

__all__ = ["cause_text", "held_causes"]


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def cause_text(cause: Any) -> str | None:
    """The supply or prescription behind a hold, in a line: ``record H-1 of TMUGH
    (Tianjin ...), until 2026-12-20`` or ``prescription RX-1 of TMUGH, issued 2026-11-01:
    prescription.issued_on``."""
    if not isinstance(cause, Mapping) or not cause:
        return None
    kind = cause.get("kind")
    until = f", until {cause.get('supply_until')}" if cause.get("supply_until") else ""
    product = cause.get("drug_code") or (f"ATC {cause['atc']}" if cause.get("atc") else "")
    if kind == "dispensed":
        return f"dispensed here: order {cause.get('ref')}, {product}{until}"
    if kind == "record":
        return (f"record {cause.get('ref')} of {cause.get('source')} "
                f"({cause.get('source_name')}), {product}{until}")
    if kind == "order":
        return f"open order {cause.get('ref')}, {product}{until}"
    if "prescription_id" in cause:
        out = f"prescription {cause['prescription_id']}"
        if cause.get("institution"):
            out += f" of {cause['institution']}, issued {cause.get('issued_on')}"
        if cause.get("field"):
            out += f"; field {cause['field']}"
        if "left" in cause:
            out += (f"; {cause.get('filled')} of {cause.get('prescribed')} packs filled, "
                    f"{cause.get('left')} left")
        return out
    return None


def held_causes(result: Any) -> RenderableType | None:
    """Under the held orders list: for each duplicate or provenance hold, what caused it
    (None when no hold has a cause)."""
    items = _rows(result.get("items")) if isinstance(result, Mapping) else []
    sheet = Sheet("Why", [Column("order"), Column("check", "state"), Column("cause", "text")],
                  section=True)
    shown = False
    for o in items:
        for h in _rows(o.get("hold_reasons")):
            line = cause_text(h.get("cause"))
            if line is not None:
                sheet.add_row(Text(str(o.get("order_id"))),
                              Text(str(h.get("code")), style="yellow"),
                              Text(f"{h.get('detail')} [{line}]"))
                shown = True
    return sheet if shown else None
