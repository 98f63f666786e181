"""The dispensed-serial check of every loading scan goes through the (drug_code, serial)
index, not through every dispensed pack (the index on state alone is what SQLite picks unaided)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dispenser.core.packs import SERIAL_DISPENSED
from dispenser.journal import Journal


def test_dispensed_serial_lookup_uses_the_serial_index(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        plan = journal.query("EXPLAIN QUERY PLAN " + SERIAL_DISPENSED, ("06900000010006", "S1"))
    finally:
        journal.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "packs_serial" in details, details
    assert "drug_code=? AND serial=?" in details, details


def test_stock_of_one_drug_is_read_through_the_drug_index(tmp_path: Path) -> None:
    from dispenser.core import Dispensary
    from dispenser.core.formulary import Formulary
    from dispenser.core.policy import Policy
    from dispenser.core.stock import SlotGeometry

    root = Path(__file__).resolve().parents[2]
    journal = Journal(tmp_path / "journal.sqlite")
    seen: list[str] = []
    try:
        formulary = Formulary.load(root / "dispenser" / "data" / "formulary.csv")
        d = Dispensary(journal, formulary, Policy(),
                       SlotGeometry(1, 2, 2, 2), lambda: datetime.now(UTC))
        journal.conn.set_trace_callback(seen.append)
        d.list_stock("06900000010006")
        journal.conn.set_trace_callback(None)
        (sql,) = [s for s in seen if "FROM packs" in s]
        plan = journal.query("EXPLAIN QUERY PLAN " + sql)
    finally:
        journal.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "packs_batch" in details, details
