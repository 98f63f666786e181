"""Fixtures for the dispensing core: a fake clock, the demo formulary, order and scan
builders."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from dispenser.core import Dispensary
from dispenser.core.formulary import Drug, Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.journal import Journal

ROOT = Path(__file__).resolve().parents[2]
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


_FORMULARY = Formulary.load(ROOT / "dispenser" / "data" / "formulary.csv")


@pytest.fixture(scope="session")
def formulary() -> Formulary:
    return _FORMULARY


def robot_drugs() -> list[Drug]:
    return [d for d in _FORMULARY.values() if d.robot]


def fridge_drugs() -> list[Drug]:
    return [d for d in _FORMULARY.values() if d.fridge]


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


Factory = Callable[..., Dispensary]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock) -> Iterator[Factory]:
    journals: list[Journal] = []

    def factory(policy: Policy | None = None, geometry: SlotGeometry | None = None,
                name: str = "journal.db") -> Dispensary:
        j = Journal(tmp_path / name)
        journals.append(j)
        return Dispensary(j, _FORMULARY, policy or Policy(), geometry or SlotGeometry(
            2, 5, 20, 10), clock)

    yield factory
    for j in journals:
        j.close()


@pytest.fixture(scope="module")
def make_dispensary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    """For hypothesis tests: every call gives a fresh journal (function fixtures are not
    reset between examples)."""
    journals: list[Journal] = []
    counter = itertools.count()

    def factory(policy: Policy | None = None, geometry: SlotGeometry | None = None,
                clock: FakeClock | None = None) -> Dispensary:
        path = tmp_path_factory.mktemp("hyp") / f"j{next(counter)}.db"
        j = Journal(path)
        journals.append(j)
        return Dispensary(j, _FORMULARY, policy or Policy(),
                          geometry or SlotGeometry(1, 3, 10, 4), clock or FakeClock())

    yield factory
    for j in journals:
        j.close()


@pytest.fixture
def disp(make: Factory) -> Dispensary:
    return make()


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
