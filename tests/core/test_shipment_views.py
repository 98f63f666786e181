"""Shipment views built with less repeated work (issue 12): the scheduler's lazy
``iter_next_shipments`` and the first order's patient and delivery kept between views."""

from __future__ import annotations

import pytest

from dispenser.core import Dispensary
from dispenser.core.states import ShipmentState
from dispenser.testing.core import API, FakeClock, load, make_order, robot_drugs

DRUGS = robot_drugs()[:3]


def _queue(disp: Dispensary, clock: FakeClock, n: int) -> None:
    for drug in DRUGS:
        load(disp, drug, 6)
    for k in range(n):
        disp.submit(make_order([(DRUGS[k % 3].drug_code, 1)], patient=f"P{k:03d}",
                               window_start=f"2026-11-24T{8 + k:02d}:00:00+08:00"), API)
    clock.advance(301)
    disp.form_shipments()


def test_iter_next_shipments_gives_what_next_shipments_gives(
        disp: Dispensary, clock: FakeClock) -> None:
    _queue(disp, clock, 5)
    eager = disp.next_shipments(4)
    assert len(eager) == 4
    assert list(disp.iter_next_shipments(4)) == eager


def test_iter_next_shipments_builds_each_view_when_taken(
        disp: Dispensary, clock: FakeClock) -> None:
    _queue(disp, clock, 3)
    ids = [v.shipment_id for v in disp.next_shipments(3)]
    views = disp.iter_next_shipments(3)
    first = next(views)
    assert first.shipment_id == ids[0]
    disp.start_picking(ids[0])
    # The shipments were chosen at the first step; the next view shows the shipment now.
    assert [v.shipment_id for v in views] == ids[1:]
    assert disp.get_shipment(ids[0]).state is ShipmentState.PICKING


def test_view_shows_the_first_order_as_stored(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, DRUGS[0], 2)
    disp.submit(make_order([(DRUGS[0].drug_code, 1)], order_id="SO-VIEW-1",
                           address="No. 7 Nanjing Road"), API)
    clock.advance(301)
    [formed] = disp.form_shipments()
    for _ in range(2):  # kept after the first view: the same every time
        view = disp.get_shipment(formed.shipment_id)
        assert view.address == "No. 7 Nanjing Road"
        assert view.patient_name == "王建国"
        assert view.window_end.isoformat() == "2026-11-24T12:00:00+08:00"


def test_what_was_kept_of_a_rolled_back_order_is_dropped(
        disp: Dispensary, clock: FakeClock) -> None:
    load(disp, DRUGS[0], 2)
    with pytest.raises(RuntimeError), disp.batch():
        disp.submit(make_order([(DRUGS[0].drug_code, 1)], order_id="SO-BACK-1",
                               address="No. 1 Old Street"), API)
        clock.advance(301)
        [formed] = disp.form_shipments()
        assert disp.get_shipment(formed.shipment_id).address == "No. 1 Old Street"
        raise RuntimeError("the batch is undone")
    # The order was never stored: the same id may now come with other content.
    disp.submit(make_order([(DRUGS[0].drug_code, 1)], order_id="SO-BACK-1",
                           address="No. 2 New Street"), API)
    clock.advance(301)
    [formed] = disp.form_shipments()
    assert formed.address == "No. 2 New Street"
    assert disp.get_shipment(formed.shipment_id).address == "No. 2 New Street"
