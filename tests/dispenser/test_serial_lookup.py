"""The dispensed-serial check of every loading scan goes through the (gtin, serial) index,
not through every dispensed pack (the index on state alone is what SQLite picks unaided)."""

from __future__ import annotations

from pathlib import Path

from dispenser.core import SERIAL_DISPENSED
from dispenser.journal import Journal


def test_dispensed_serial_lookup_uses_the_serial_index(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        plan = journal.query("EXPLAIN QUERY PLAN " + SERIAL_DISPENSED, ("06900000010006", "S1"))
    finally:
        journal.close()
    details = " ".join(str(row[-1]) for row in plan)
    assert "packs_serial" in details, details
    assert "gtin=? AND serial=?" in details, details
