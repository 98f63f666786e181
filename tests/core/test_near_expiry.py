"""Near expiry (issue 8): an in-stock pack whose expiry is before today +
max(min_shelf_life_days, min_days_supply) can serve no order; it stays ``in_stock``, is
flagged (``near_expiry``, and ``expired`` once its expiry is before today), listed, counted
and offered to the expiry sweep (``Dispensary.packs_to_sweep``).

Packs are loaded on 2026-11-23 (default policy: 30 days of shelf life, min_days_supply 1)
and the clock is moved on so that they age in the machine.
"""

from __future__ import annotations

from datetime import date, timedelta

from dispenser.core import Dispensary
from dispenser.core.policy import Policy
from dispenser.core.states import PackState, ShipmentState
from dispenser.testing.core import (
    API,
    LOADER,
    Factory,
    FakeClock,
    load,
    make_order,
    robot_drugs,
)

DRUG, OTHER, THIRD = robot_drugs()[:3]
START = date(2026, 11, 23)


def on_day(days: int) -> str:
    return (START + timedelta(days=days)).strftime("%y%m%d")


def age(clock: FakeClock, days: int) -> None:
    clock.advance(days * 86400)


def test_near_expiry_and_expired_are_derived_flags(disp: Dispensary, clock: FakeClock) -> None:
    gone = load(disp, DRUG, 1, expiry=on_day(40), batch="GONE")[0]
    near = load(disp, DRUG, 1, expiry=on_day(79), batch="NEAR")[0]
    edge = load(disp, DRUG, 1, expiry=on_day(80), batch="EDGE")[0]
    fine = load(disp, OTHER, 1, expiry=on_day(400), batch="FINE")[0]
    age(clock, 50)  # today + 30 = day 80
    views = {p.pack_id: p for p in disp.list_stock()}
    assert (views[gone].near_expiry, views[gone].expired) == (True, True)
    assert (views[near].near_expiry, views[near].expired) == (True, False)
    assert (views[edge].near_expiry, views[edge].expired) == (False, False)
    assert (views[fine].near_expiry, views[fine].expired) == (False, False)
    assert all(v.state is PackState.IN_STOCK for v in views.values())  # not a state
    assert disp.get_pack(near).near_expiry and disp.get_pack(gone).expired

    listed = disp.list_stock(near_expiry=True)
    assert [p.pack_id for p in listed] == [gone, near]
    assert all(p.state is PackState.IN_STOCK for p in listed)
    assert [p.pack_id for p in disp.list_stock(near_expiry=False)] == [edge, fine]
    assert disp.list_stock(OTHER.drug_code, near_expiry=True) == []
    assert [p.pack_id for p in disp.list_stock(near_expiry=True, after=gone)] == [near]
    assert [p.pack_id for p in disp.list_stock(near_expiry=True, limit=1)] == [gone]


def test_the_shortest_allowed_supply_sets_the_line(make: Factory, clock: FakeClock) -> None:
    d = make(policy=Policy(min_shelf_life_days=10, min_days_supply=28))
    p = load(d, DRUG, 1, expiry=on_day(40))[0]
    age(clock, 12)  # 28 days left: still serves a 28-day supply
    assert not d.get_pack(p).near_expiry
    age(clock, 1)
    assert d.get_pack(p).near_expiry and not d.get_pack(p).expired


def test_stock_counts(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, DRUG, 2, expiry=on_day(40), batch="GONE")
    load(disp, DRUG, 3, expiry=on_day(70), batch="NEAR")
    load(disp, OTHER, 4, expiry=on_day(400), batch="FINE")
    load(disp, THIRD, 2, expiry=on_day(60), batch="RECALL")
    disp.quarantine_batch(THIRD.drug_code, "RECALL", LOADER, "recall")
    age(clock, 50)
    counts = disp.stock_counts()
    assert (counts.in_stock, counts.near_expiry, counts.expired, counts.quarantined) == (
        9, 5, 2, 2)
    # quarantined packs are not in stock, so neither near expiry nor expired
    assert counts.as_dict() == {"in_stock": 9, "near_expiry": 5, "expired": 2,
                                "quarantined": 2}


def test_packs_to_sweep_leave_reserved_packs_and_blocked_slots(disp: Dispensary,
                                                               clock: FakeClock) -> None:
    reserved_batch = load(disp, DRUG, 3, expiry=on_day(40), batch="SOON")
    later = load(disp, OTHER, 2, expiry=on_day(35), batch="LATER")
    recalled = load(disp, THIRD, 1, expiry=on_day(35), batch="RECALL")
    fine = load(disp, OTHER, 1, expiry=on_day(400), batch="FINE")
    disp.quarantine_batch(THIRD.drug_code, "RECALL", LOADER, "recall")
    disp.submit(make_order([(DRUG.drug_code, 1)]), API)  # reserves one SOON pack today
    clock.advance(301)
    (sh,) = disp.form_shipments()
    assert sh.state is ShipmentState.QUEUED
    age(clock, 15)  # SOON 25 days left, LATER 20: both near expiry
    sweep = disp.packs_to_sweep()
    soon_slot = disp.get_pack(reserved_batch[0]).slot
    later_slot = disp.get_pack(later[0]).slot
    assert soon_slot is not None and later_slot is not None
    by_slot: dict[int, list[int]] = {}
    for p in sweep:
        assert p.slot is not None and p.near_expiry and p.state is PackState.IN_STOCK
        by_slot.setdefault(p.slot, []).append(p.pack_id)
    assert [p.slot for p in sweep] == sorted(p.slot for p in sweep if p.slot is not None)
    assert len(by_slot[soon_slot]) == 2  # one of its three is reserved
    assert by_slot[later_slot] == later
    assert recalled[0] not in {p.pack_id for p in sweep}
    assert fine[0] not in {p.pack_id for p in sweep}
    assert set(by_slot) == {soon_slot, later_slot}


def test_flags_and_counts_survive_a_reload(make: Factory, clock: FakeClock) -> None:
    d = make()
    load(d, DRUG, 2, expiry=on_day(40))
    load(d, OTHER, 1, expiry=on_day(400))
    age(clock, 20)
    before = d.stock_counts()
    d.journal.close()
    again = make()
    assert again.stock_counts() == before
    assert before.near_expiry == 2 and before.in_stock == 3
