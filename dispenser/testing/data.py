"""Test data: the demo formulary's drugs, simulator packs and their scans, orders."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["FORMULARY", "GS", "drugs", "formulary_rows", "order", "pack", "pack_key", "scan"]

ROOT = Path(__file__).resolve().parents[2]
FORMULARY = ROOT / "dispenser" / "data" / "formulary.csv"
GS = "\x1d"


@cache
def _rows() -> tuple[dict[str, str], ...]:
    with open(FORMULARY, newline="", encoding="utf-8") as fh:
        return tuple(csv.DictReader(fh))


def formulary_rows() -> list[dict[str, str]]:
    """The demo formulary's rows (``drug_code``, ``fridge``, ``manual`` ...)."""
    return [dict(r) for r in _rows()]


def drugs() -> dict[str, list[dict[str, str]]]:
    """Formulary rows split into robot and fridge items (deterministic choice)."""
    rows = formulary_rows()
    robot = _by_rounds([r for r in rows if r["fridge"] == "false" and r["manual"] == "false"])
    fridge = [r for r in rows if r["fridge"] == "true" and r["manual"] == "false"]
    return {"robot": robot, "fridge": fridge}


def _by_rounds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The first product of each ingredient set, then the second of each, and so on: a few
    neighbouring rows are different therapies (two makers' acarbose are one therapy for
    the duplicate check), as tests that take them as different drugs need."""
    rounds: list[list[dict[str, str]]] = []
    seen: dict[str, int] = {}
    for r in rows:
        n = seen.get(r["ingredients"], 0)
        seen[r["ingredients"]] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(r)
    return [r for one in rounds for r in one]


def pack(gtin: str, batch: str, expiry: date, serial: str) -> dict[str, str]:
    """A pack as the simulator's input point takes it."""
    return {"gtin": gtin, "batch": batch, "expiry": expiry.isoformat(), "serial": serial}


def scan(p: dict[str, str]) -> str:
    """The GS1 DataMatrix scan of a simulator pack, as a hand scanner sends it."""
    y, m, d = p["expiry"].split("-")
    return f"]d201{p['gtin']}17{y[2:]}{m}{d}10{p['batch']}{GS}21{p['serial']}"


def pack_key(p: dict[str, Any]) -> tuple[str, str, str, str]:
    """(drug, batch, expiry, serial) of a pack from the API (its ``drug_code``) or from the
    simulator (its ``gtin``, docs/simulator.md): the same 14 digits, so the two compare."""
    drug = p["drug_code"] if "drug_code" in p else p["gtin"]
    return (drug, p["batch"], p["expiry"], p["serial"])


def order(order_id: str, patient: str, items: list[tuple[str, int]], *,
          diagnoses: tuple[str, ...] = ("E11.9",), address: str | None = None,
          priority: str = "normal", prescription: str | None = None) -> dict[str, Any]:
    """An order as the order system sends it, delivered from tomorrow."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    return {
        "order_id": order_id,
        "patient": {"id": patient, "name": f"Test Patient {patient}", "phone": "+86 22 5550000"},
        "prescription": {"id": prescription or f"RX-{order_id}",
                         "issued_on": (date.today() - timedelta(days=5)).isoformat(),
                         "institution": "Test Clinic", "prescriber": "Dr Test",
                         "diagnoses": list(diagnoses)},
        "items": [{"drug_code": code, "quantity": qty, "days_supply": 30} for code, qty in items],
        "delivery": {"address": address or f"{patient} Test Street 1, Tianjin",
                     "window_start": start.isoformat(),
                     "window_end": (start + timedelta(hours=3)).isoformat()},
        "priority": priority,
    }
