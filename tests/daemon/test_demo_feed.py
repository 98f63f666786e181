"""The demo's hospital feed (issue 10): its records and prescriptions, registered before
the demo orders, hold what they are meant to and let the rest through."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.daemon.demo import DEMO_INSTITUTIONS, demo_hospital_feed, demo_orders
from dispenser.journal import Journal
from dispenser.testing import FORMULARY


def test_the_demo_feed_holds_what_it_plans(tmp_path: Path) -> None:
    formulary = Formulary.load(FORMULARY)
    now = datetime(2026, 11, 23, 9, tzinfo=UTC)
    orders = demo_orders(200, formulary, now.date())
    records, prescriptions = demo_hospital_feed(orders, formulary, now.date())
    journal = Journal(tmp_path / "journal.db")
    try:
        d = Dispensary(journal, formulary, Policy(), SlotGeometry(), lambda: now,
                       DEMO_INSTITUTIONS)
        feed = Actor("feed", "records")
        assert {o.status for o in d.import_records(records, feed)} == {"imported"}
        assert all(isinstance(r, dict) for r in d.register_prescriptions(prescriptions, feed))
        holds: Counter[str] = Counter()
        passed = 0
        for v in d.submit_many(orders, Actor("shop", "order_system")):
            assert not isinstance(v, Exception), v
            holds.update({h.code for h in v.holds})
            passed += not v.holds
    finally:
        journal.close()
    assert set(holds) == {"duplicate_dispensing", "prescription_unregistered",
                          "institution_not_designated", "prescription_exhausted"}, holds
    assert passed > 150
