"""Journals written while packs named their drug ``gtin`` open after core migration 5
renamed the column to ``drug_code``: every pack keeps its drug, quarantined batches stay
quarantined, dispensed serials stay dispensed, and the indexes still serve the lookups."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import LoadRefused
from dispenser.core.packs import SERIAL_DISPENSED
from dispenser.core.policy import Policy
from dispenser.core.states import PackState
from dispenser.core.stock import SlotGeometry
from dispenser.journal import Journal, db
from dispenser.journal.migrations import CORE_MIGRATIONS
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    FakeClock,
    make_order,
    robot_drugs,
    scan,
)

DATA = Path(__file__).parent / "data"
STAMP = "2026-11-20T09:00:00+08:00"


def _columns(j: Journal, table: str) -> list[str]:
    return [str(r[1]) for r in j.query(f"PRAGMA table_info({table})")]


def _index(j: Journal, name: str) -> list[str]:
    return [str(r[2]) for r in j.query(f"PRAGMA index_info({name})")]


def _open(path: Path) -> tuple[Journal, Dispensary]:
    j = Journal(path)
    return j, Dispensary(j, DEMO_FORMULARY, Policy(), SlotGeometry(2, 5, 20, 10), FakeClock())


def _renamed(j: Journal) -> None:
    assert "drug_code" in _columns(j, "packs") and "gtin" not in _columns(j, "packs")
    assert "drug_code" in _columns(j, "quarantined_batches")
    assert "gtin" not in _columns(j, "quarantined_batches")
    assert _index(j, "packs_serial") == ["drug_code", "serial"]
    assert _index(j, "packs_batch") == ["drug_code", "batch"]
    assert (5, "the drug identifier is drug_code") in {(int(r[0]), str(r[1])) for r in j.query(
        "SELECT number, name FROM schema_migrations WHERE component = 'core'")}


def test_a_journal_of_0_1_0_keeps_its_packs_drug_codes(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript((DATA / "journal-v0.1.0.sql").read_text())
    raw.execute("PRAGMA user_version = 2")
    raw.close()
    j, d = _open(path)
    try:
        _renamed(j)
        packs = d.list_stock("06900000010006")
        assert [(p.pack_id, p.drug_code, p.serial) for p in packs] == [
            (n, "06900000010006", f"S00000000{n}") for n in (1, 2, 3, 4)]
        slot = d.packs.stock.slots[0]
        assert (slot.drug_code, slot.packs) == ("06900000010006", [1, 2, 3, 4])
        # The audit rows written before the rename keep their words: the chain verifies.
        assert j.verify().ok
    finally:
        j.close()


def test_the_journal_just_before_the_rename_keeps_packs_quarantine_and_serials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.sqlite"
    drug, other = robot_drugs()[0].drug_code, robot_drugs()[1].drug_code
    # The schema as the release before the rename made it: core migrations 1 to 4.
    before = tuple(m for m in CORE_MIGRATIONS if m.number < 5)
    assert len(before) == 4
    monkeypatch.setattr(db, "CORE_MIGRATIONS", before)
    old = Journal(path)
    assert "gtin" in _columns(old, "packs")
    rows = [(1, drug, "B1", "2028-12-31", "KEEP-1", 3, 1, "in_stock", None, None),
            (2, drug, "B1", "2028-12-31", "GONE-1", None, None, "dispensed", "SH-1", "O-1"),
            (3, other, "RC", "2028-06-30", "RC-1", 7, 2, "quarantined", None, None)]
    with old.transaction():
        for r in rows:
            old.write("INSERT INTO packs (pack_id, gtin, batch, expiry, serial, slot, "
                      "store_seq, state, shipment_id, order_id, loaded_at, updated_at) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (*r, STAMP, STAMP))
        old.write("INSERT INTO quarantined_batches (gtin, batch, time, actor, reason) "
                  "VALUES (?,?,?,?,?)", (other, "RC", STAMP, "li.pharm", "recall R-1"))
    old.close()
    monkeypatch.undo()

    j, d = _open(path)
    try:
        _renamed(j)
        assert [(p.pack_id, p.drug_code, p.slot) for p in d.list_stock(drug)] == [(1, drug, 3)]
        assert [(p.pack_id, p.drug_code) for p in d.list_stock(
            other, PackState.QUARANTINED)] == [(3, other)]
        assert d.packs.stock.slots[3].drug_code == drug
        # The dispensed serial is found through the renamed index.
        plan = " ".join(str(r[-1]) for r in j.query("EXPLAIN QUERY PLAN " + SERIAL_DISPENSED,
                                                    (drug, "GONE-1")))
        assert "packs_serial" in plan, plan
        with pytest.raises(LoadRefused) as refused:
            d.check_scan(scan(drug, serial="GONE-1"))
        assert refused.value.reason_code == "serial_dispensed"
        with pytest.raises(LoadRefused) as refused:
            d.check_scan(scan(other, "280630", "RC"))
        assert refused.value.reason_code == "quarantined"
        # The pack in stock still serves an order for its drug.
        o = d.submit(make_order([(drug, 1)], priority="urgent"), API)
        (sh,) = [s for s in d.form_shipments() if o.order_id in s.order_ids]
        assert [(p.drug_code, p.slot, p.count) for p in sh.robot_picks] == [(drug, 3, 1)]
    finally:
        j.close()
