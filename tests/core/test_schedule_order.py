"""next_shipments keeps its order up to date as shipments are queued, start picking, are
held, come back and lose orders: always the queued ones sorted by schedule key."""

from __future__ import annotations

import random

from dispenser.core import Dispensary
from dispenser.core.shipments import Shipment
from dispenser.core.states import ShipmentState
from dispenser.testing.core import API, FakeClock, load, make_order, robot_drugs

DRUGS = robot_drugs()[:6]


def expected(d: Dispensary, limit: int) -> list[str]:
    queued = sorted((sh for sh in d.shipments.live.values()
                     if sh.state is ShipmentState.QUEUED), key=Shipment.schedule_key)
    return [sh.shipment_id for sh in queued[:limit]]


def test_next_shipments_follows_every_change(disp: Dispensary, clock: FakeClock) -> None:
    rng = random.Random(5)
    for drug in DRUGS[:5]:
        load(disp, drug, 8)
    orders = []
    for k in range(40):
        hour = rng.randrange(6, 20)
        o = disp.submit(make_order(
            [(rng.choice(DRUGS).drug_code, 1)], patient=f"P{k:03d}",
            priority=rng.choice(("normal", "high", "low", "urgent")),
            window_start=f"2026-11-24T{hour:02d}:00:00+08:00"), API)
        orders.append(o.order_id)
        if k % 7 == 0:
            clock.advance(301)
            disp.form_shipments()
            assert [v.shipment_id for v in disp.next_shipments(5)] == expected(disp, 5)
    clock.advance(301)
    disp.form_shipments()
    for step in range(60):
        assert [v.shipment_id for v in disp.next_shipments(8)] == expected(disp, 8), step
        queued = expected(disp, 100)
        action = rng.random()
        if queued and action < 0.5:
            disp.start_picking(queued[0])
        elif action < 0.8:
            oid = rng.choice(orders)
            if disp.get_order(oid).state.value in ("received", "held", "queued"):
                disp.cancel(oid, API, "patient request")
        else:
            load(disp, rng.choice(DRUGS), 2)  # held shipments of it may go
    assert [v.shipment_id for v in disp.next_shipments(100)] == expected(disp, 100)
