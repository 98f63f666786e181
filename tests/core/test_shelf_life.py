"""Shelf life at allocation (issue 8): a pack is given to an order item only if it lasts
the whole supply, ``expiry >= dispense date + max(min_shelf_life_days, days_supply)``;
FEFO among the packs that qualify. A pack that aged in the machine after it was loaded is
never dispensed against that rule: not at allocation, not from a reservation made before
it aged out (re-checked when picking starts), not for packs owed later.

The clock starts on 2026-11-23; packs are loaded then (the loading check wants 30 days of
shelf life) and the clock is moved on so that they age in the machine.
"""

from __future__ import annotations

from datetime import date, timedelta

from dispenser.core import Dispensary
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState, ShipmentState
from dispenser.testing.core import API, Factory, FakeClock, load, make_order, robot_drugs

DRUG = robot_drugs()[0]
OTHER = robot_drugs()[1]
START = date(2026, 11, 23)


def yymmdd(day: date) -> str:
    return day.strftime("%y%m%d")


def age(clock: FakeClock, days: int) -> date:
    """Move the clock on by whole days; returns the new today."""
    clock.advance(days * 86400)
    return clock.now.date()


def order_after(today: date, items: list[tuple[str, int]], **kw: object) -> dict[str, object]:
    """An order whose delivery window is still ahead on ``today``."""
    return make_order(items, window_start=f"{today + timedelta(days=1)}T09:00:00+08:00", **kw)


def formed(d: Dispensary, clock: FakeClock) -> list[object]:
    clock.advance(301)  # the merge window
    return d.form_shipments()  # type: ignore[return-value]


def test_fefo_passes_over_a_pack_that_expires_during_the_supply(disp: Dispensary,
                                                               clock: FakeClock) -> None:
    short = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=48)), batch="SHORT")
    long = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=48 + 395)), batch="LONG")
    today = age(clock, 43)  # SHORT has 5 days left, LONG 13 months
    disp.submit(order_after(today, [(DRUG.drug_code, 1)]), API)  # days_supply 30
    (sh,) = formed(disp, clock)
    assert sh.state is ShipmentState.QUEUED  # type: ignore[attr-defined]
    slots = [p.slot for p in sh.robot_picks]  # type: ignore[attr-defined]
    assert slots == [disp.get_pack(long[0]).slot]
    assert disp.get_pack(short[0]).slot not in slots


def test_only_short_dated_stock_holds_the_shipment(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, DRUG, 2, expiry=yymmdd(START + timedelta(days=48)), batch="SHORT")
    today = age(clock, 43)
    o = disp.submit(order_after(today, [(DRUG.drug_code, 1)]), API)
    (sh,) = formed(disp, clock)
    assert sh.state is ShipmentState.HELD  # type: ignore[attr-defined]
    assert [h.code for h in sh.holds] == ["stock_short"]  # type: ignore[attr-defined]
    assert sh.robot_picks == []  # type: ignore[attr-defined]
    assert disp.get_order(o.order_id).state is OrderState.HELD
    assert disp.stock.slots[disp.list_stock()[0].slot or 0].reserved == 0


def test_the_supply_or_the_minimum_shelf_life_whichever_is_longer(make: Factory,
                                                                 clock: FakeClock) -> None:
    d = make(policy=Policy(min_shelf_life_days=30))
    on_day_60 = load(d, DRUG, 1, expiry=yymmdd(START + timedelta(days=60)), batch="D60")
    on_day_59 = load(d, OTHER, 1, expiry=yymmdd(START + timedelta(days=59)), batch="D59")
    # A 60-day supply needs expiry on or after today + 60: day 60 qualifies, day 59 not.
    d.submit(order_after(START, [(DRUG.drug_code, 1)], days_supply=60, patient="P1"), API)
    d.submit(order_after(START, [(OTHER.drug_code, 1)], days_supply=60, patient="P2"), API)
    first, second = formed(d, clock)
    assert first.state is ShipmentState.QUEUED  # type: ignore[attr-defined]
    assert [p.slot for p in first.robot_picks] == [  # type: ignore[attr-defined]
        d.get_pack(on_day_60[0]).slot]
    assert second.state is ShipmentState.HELD  # type: ignore[attr-defined]
    assert d.get_pack(on_day_59[0]).slot is not None


def test_minimum_shelf_life_applies_to_a_short_supply(make: Factory, clock: FakeClock) -> None:
    d = make(policy=Policy(min_shelf_life_days=30))
    load(d, DRUG, 1, expiry=yymmdd(START + timedelta(days=40)), batch="D40")
    today = age(clock, 11)  # 29 days left
    d.submit(order_after(today, [(DRUG.drug_code, 1)], days_supply=10), API)
    (sh,) = formed(d, clock)
    assert sh.state is ShipmentState.HELD  # type: ignore[attr-defined]


def test_a_reservation_that_aged_out_moves_when_picking_starts(disp: Dispensary,
                                                               clock: FakeClock) -> None:
    soon = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=40)), batch="SOON")
    later = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=400)), batch="LATER")
    disp.submit(order_after(START, [(DRUG.drug_code, 1)]), API)
    (sh,) = formed(disp, clock)
    soon_slot, later_slot = disp.get_pack(soon[0]).slot, disp.get_pack(later[0]).slot
    assert [p.slot for p in sh.robot_picks] == [soon_slot]  # type: ignore[attr-defined]
    age(clock, 15)  # SOON has 25 days left: not enough for a 30-day supply any more
    started = disp.start_picking(sh.shipment_id)  # type: ignore[attr-defined]
    assert started.state is ShipmentState.PICKING
    assert [p.slot for p in started.robot_picks] == [later_slot]
    assert disp.stock.slots[soon_slot or 0].reserved == 0
    moved = disp.journal.query(
        "SELECT after FROM audit WHERE action='shipment.reallocated' AND subject=?",
        (sh.shipment_id,))  # type: ignore[attr-defined]
    assert moved, "the move is in the audit trail"


def test_a_reservation_that_aged_out_holds_the_shipment_without_other_stock(
        disp: Dispensary, clock: FakeClock) -> None:
    soon = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=40)), batch="SOON")
    o = disp.submit(order_after(START, [(DRUG.drug_code, 1)]), API)
    (sh,) = formed(disp, clock)
    assert sh.state is ShipmentState.QUEUED  # type: ignore[attr-defined]
    age(clock, 15)
    started = disp.start_picking(sh.shipment_id)  # type: ignore[attr-defined]
    assert started.state is ShipmentState.HELD
    assert [h.code for h in started.holds] == ["stock_short"]
    assert started.robot_picks == []
    assert disp.get_order(o.order_id).state is OrderState.HELD
    assert disp.stock.slots[disp.get_pack(soon[0]).slot or 0].reserved == 0


def test_packs_owed_later_follow_the_rule(disp: Dispensary, clock: FakeClock) -> None:
    good = load(disp, DRUG, 2, expiry=yymmdd(START + timedelta(days=400)), batch="GOOD")
    second = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=400)), batch="SECOND")
    ending = load(disp, DRUG, 1, expiry=yymmdd(START + timedelta(days=45)), batch="ENDING")
    today = age(clock, 20)  # ENDING has 25 days left
    disp.submit(order_after(today, [(DRUG.drug_code, 3)]), API)
    (sh,) = formed(disp, clock)
    picks = {p.slot: p.count for p in sh.robot_picks}  # type: ignore[attr-defined]
    good_slot = disp.get_pack(good[0]).slot
    second_slot = disp.get_pack(second[0]).slot
    ending_slot = disp.get_pack(ending[0]).slot
    assert picks == {good_slot: 2, second_slot: 1}
    started = disp.start_picking(sh.shipment_id)  # type: ignore[attr-defined]
    assert started.state is ShipmentState.PICKING
    disp.record_pick(started.shipment_id, good_slot or 0, 1)  # one short: the slot is blocked
    after = disp.get_shipment(started.shipment_id)
    assert [(o.drug_code, o.count) for o in after.owed] == [(DRUG.drug_code, 1)]
    assert ending_slot not in {p.slot for p in after.robot_picks}
    assert disp.stock.slots[ending_slot or 0].reserved == 0


def test_partial_dispensing_sends_the_item_short_rather_than_short_dated(
        make: Factory, clock: FakeClock) -> None:
    d = make(policy=Policy(partial_dispensing=True))
    load(d, DRUG, 1, expiry=yymmdd(START + timedelta(days=48)), batch="SHORT")
    load(d, OTHER, 1)
    today = age(clock, 43)
    d.submit(order_after(today, [(DRUG.drug_code, 1), (OTHER.drug_code, 1)]), API)
    (sh,) = formed(d, clock)
    assert sh.state is ShipmentState.QUEUED  # type: ignore[attr-defined]
    assert [(s.drug_code, s.count) for s in sh.short] == [  # type: ignore[attr-defined]
        (DRUG.drug_code, 1)]
    assert [p.drug_code for p in sh.robot_picks] == [  # type: ignore[attr-defined]
        OTHER.drug_code]
