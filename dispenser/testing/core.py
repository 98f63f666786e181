"""Helpers for tests of the dispensing core: a fake clock, the demo formulary, order and
scan builders, loading and dispensing in one call."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from dispenser.core import Dispensary
from dispenser.core.formulary import Drug, Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.views import Actor
from dispenser.testing.data import FORMULARY

CST = timezone(timedelta(hours=8))
PHARMACIST = Actor("li.pharm", "pharmacist")
LOADER = Actor("wang.tech", "technician")
API = Actor("shop", "api")


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 9, 0, tzinfo=CST)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


DEMO_FORMULARY = Formulary.load(FORMULARY)


def _distinct_first(drugs: list[Drug]) -> list[Drug]:
    """The drugs with one product of each ingredient set first: tests that take the first
    few as "different drugs" get different therapies (two makers' acarbose are one
    therapy for the duplicate check)."""
    seen: set[tuple[str, ...]] = set()
    first: list[Drug] = []
    rest: list[Drug] = []
    for d in drugs:
        (rest if d.ingredients in seen else first).append(d)
        seen.add(d.ingredients)
    return first + rest


_ROBOT = _distinct_first([d for d in DEMO_FORMULARY.values() if d.robot])


def robot_drugs() -> list[Drug]:
    return list(_ROBOT)


def fridge_drugs() -> list[Drug]:
    return [d for d in DEMO_FORMULARY.values() if d.fridge]


_serial = itertools.count(1)


def scan(drug: Drug | str, expiry: str = "281231", batch: str = "B1",
         serial: str | None = None, prefix: bool = True) -> str:
    code = drug if isinstance(drug, str) else drug.drug_code
    return compose_scan(code, expiry, batch, serial or f"S{next(_serial):09d}", prefix)


_order_no = itertools.count(1)


def make_order(items: list[tuple[str, int]] | None = None, patient: str = "P000123",
               address: str = "No. 1 Anshan Road, Heping District, Tianjin",
               priority: str = "normal", rx: str | None = None,
               issued_on: str = "2026-11-01", diagnoses: list[str] | None = None,
               order_id: str | None = None, days_supply: int = 30,
               window_start: str = "2026-11-24T09:00:00+08:00") -> dict[str, Any]:
    n = next(_order_no)
    if items is None:
        items = [(robot_drugs()[0].drug_code, 1)]
    return {
        "order_id": order_id or f"SO-20261123-{n:06d}",
        "patient": {"id": patient, "name": "王建国", "phone": "13800000000",
                    "insurance_id": "120101195001011234"},
        "prescription": {"id": rx or f"RX-{n:06d}", "issued_on": issued_on,
                         "institution": "Tianjin Medical University General Hospital",
                         "prescriber": "Dr. Li", "diagnoses": diagnoses or ["E11.9", "I10"]},
        "items": [{"drug_code": c, "quantity": q, "days_supply": days_supply}
                  for c, q in items],
        "delivery": {"address": address, "window_start": window_start,
                     "window_end": (datetime.fromisoformat(window_start)
                                    + timedelta(hours=3)).isoformat()},
        "priority": priority,
    }


# The pharmacist's desk (issue 10): a designated hospital, prescriptions as it registers
# them, orders that cite them.
HOSPITAL = {"code": "TMUGH", "name": "Tianjin Medical University General Hospital"}
INSTITUTIONS = {"TMUGH": HOSPITAL["name"], "TJ-DC1": "Tianjin Diabetes Centre"}


def prescription(rx: str, items: list[dict[str, Any]], patient: str = "P000123",
                 institution: str = "TMUGH", issued_on: str = "2026-11-01",
                 diagnoses: list[str] | None = None) -> dict[str, Any]:
    return {"id": rx, "institution": institution, "prescriber": "Dr. Li",
            "patient_id": patient, "issued_on": issued_on,
            "diagnoses": diagnoses or ["E11.9", "I10"], "items": items}


def rx_order(rx: str, items: list[tuple[str, int]], patient: str = "P000123",
             **kw: Any) -> dict[str, Any]:
    order = make_order(items, patient=patient, rx=rx, **kw)
    order["prescription"]["institution"] = HOSPITAL["name"]
    return order


Factory = Callable[..., Dispensary]


def load(d: Dispensary, drug: Drug | str, n: int = 1, expiry: str = "281231",
         batch: str = "B1") -> list[int]:
    ids = []
    for _ in range(n):
        p = d.begin_load(scan(drug, expiry, batch), LOADER)
        d.confirm_stored(p.pack_id)
        ids.append(p.pack_id)
    return ids


def today() -> date:
    return date(2026, 11, 23)


def dispense_one(d: Dispensary, drug: Drug, clock: FakeClock | None = None) -> str:
    """Load one pack of a robot drug, order it, pick, label and complete; returns the
    dispensed serial."""
    serial = f"X{next(_serial):09d}"
    p = d.begin_load(scan(drug, serial=serial), LOADER)
    d.confirm_stored(p.pack_id)
    o = d.submit(make_order([(drug.drug_code, 1)], priority="urgent",
                            patient=f"PX{next(_serial)}"), API)
    (sh,) = [s for s in d.form_shipments() if o.order_id in s.order_ids]
    d.start_picking(sh.shipment_id)
    for pick in sh.robot_picks:
        d.record_pick(sh.shipment_id, pick.slot, pick.count)
    d.start_labelling(sh.shipment_id)
    d.complete_shipment(sh.shipment_id)
    return serial
