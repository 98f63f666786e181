"""A held shipment names the drug it really waits for: when stock of the drug it was held
for comes in but another drug of its orders is short by then, the hold names that one."""

from __future__ import annotations

from dispenser.core import Dispensary
from dispenser.core.states import ShipmentState
from dispenser.testing.core import API, FakeClock, load, make_order, robot_drugs

A, B = (d.drug_code for d in robot_drugs()[:2])


def test_hold_reason_follows_the_drug_that_is_short(disp: Dispensary,
                                                    clock: FakeClock) -> None:
    load(disp, robot_drugs()[1], 1)  # one pack of B, none of A
    first = disp.submit(make_order([(A, 1), (B, 1)], patient="P1"), API)
    clock.advance(301)
    (held,) = disp.form_shipments()
    assert held.state is ShipmentState.HELD
    assert [h.drug_code for h in held.holds] == [A]
    # A later shipment takes the pack of B the held one does not keep.
    disp.submit(make_order([(B, 1)], patient="P2"), API)
    clock.advance(301)
    (other,) = disp.form_shipments()
    assert other.state is ShipmentState.QUEUED
    load(disp, robot_drugs()[0], 1)  # A comes in: now B is the one missing
    view = disp.get_shipment(held.shipment_id)
    assert view.state is ShipmentState.HELD
    assert [h.drug_code for h in view.holds] == [B]
    assert [h.drug_code for h in disp.get_order(first.order_id).holds] == [B]
    load(disp, robot_drugs()[1], 1)
    assert disp.get_shipment(held.shipment_id).state is ShipmentState.QUEUED
