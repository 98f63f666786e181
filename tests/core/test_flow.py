"""Merging, scheduling, FEFO reservation, picking, manual items, completion."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import InvalidState, LoadRefused
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState, PackState, ShipmentState
from dispenser.testing.core import (
    API,
    LOADER,
    PHARMACIST,
    Factory,
    FakeClock,
    fridge_drugs,
    load,
    make_order,
    robot_drugs,
    scan,
)

A, B, C = (d.drug_code for d in robot_drugs()[:3])


def form(d: Dispensary, clock: FakeClock, wait: float = 301) -> list[object]:
    clock.advance(wait)
    return d.form_shipments()  # type: ignore[return-value]


def test_orders_of_one_patient_and_address_merge(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, robot_drugs()[0], 2)
    load(disp, robot_drugs()[1], 2)
    o1 = disp.submit(make_order([(A, 1)]), API)
    clock.advance(100)
    o2 = disp.submit(make_order([(B, 1)], address=" no. 1 ANSHAN road,  Heping District, "
                                                  "Tianjin"), API)
    o3 = disp.submit(make_order([(B, 1)], patient="P2"), API)
    o4 = disp.submit(make_order([(A, 1)], patient="P3", address="elsewhere"), API)
    assert o1.shipment_id == o2.shipment_id
    assert len({o1.shipment_id, o3.shipment_id, o4.shipment_id}) == 3
    assert disp.form_shipments() == []  # window not over yet
    formed = disp.form_shipments() or form(disp, clock, 201)
    by_id = {s.shipment_id: s for s in formed}  # type: ignore[attr-defined]
    merged = by_id[o1.shipment_id]
    assert merged.order_ids == [o1.order_id, o2.order_id]
    assert merged.state is ShipmentState.QUEUED
    assert disp.get_order(o1.order_id).state is OrderState.QUEUED
    # a later order from the same patient starts a new shipment
    o5 = disp.submit(make_order([(A, 1)], rx="RX-late", days_supply=1), API)
    assert o5.shipment_id not in by_id


def test_cancel_takes_an_order_out_before_picking(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, robot_drugs()[0], 2)
    load(disp, robot_drugs()[1], 1)
    o1 = disp.submit(make_order([(A, 2)]), API)
    o2 = disp.submit(make_order([(B, 1)]), API)
    (sh,) = form(disp, clock)
    assert disp.stock_level(A) == 0
    disp.cancel(o1.order_id, API, "patient asked")
    view = disp.get_shipment(sh.shipment_id)  # type: ignore[attr-defined]
    assert view.order_ids == [o2.order_id]
    assert [p.drug_code for p in view.robot_picks] == [B]
    assert disp.stock_level(A) == 2  # reservation given back
    disp.start_picking(view.shipment_id)
    with pytest.raises(InvalidState, match="picking has started"):
        disp.cancel(o2.order_id, API, "too late")


def test_cancelling_the_last_order_cancels_the_shipment(disp: Dispensary) -> None:
    o = disp.submit(make_order(), API)
    disp.cancel(o.order_id, API, "dup")
    assert disp.get_shipment(o.shipment_id or "").state is ShipmentState.CANCELLED
    assert disp.form_shipments() == []


def test_urgent_does_not_wait_and_schedule_order(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, robot_drugs()[0], 5)
    urgent = disp.submit(make_order([(A, 1)], patient="U", priority="urgent"), API)
    (sh,) = disp.form_shipments()
    assert sh.order_ids == [urgent.order_id]
    late = disp.submit(make_order([(A, 1)], patient="L", window_start="2026-11-24T15:00:00+08:00"),
                       API)
    low = disp.submit(make_order([(A, 1)], patient="W", priority="low"), API)
    high = disp.submit(make_order([(A, 1)], patient="H", priority="high"), API)
    normal = disp.submit(make_order([(A, 1)], patient="N"), API)
    form(disp, clock)
    order = [s.order_ids[0] for s in disp.next_shipments(10)]
    assert order == [urgent.order_id, high.order_id, normal.order_id, low.order_id,
                     late.order_id]


def test_fefo_and_stock_short_hold_then_release_on_arrival(disp: Dispensary,
                                                             clock: FakeClock) -> None:
    late = load(disp, robot_drugs()[0], 1, expiry="291231", batch="LATE")
    early = load(disp, robot_drugs()[0], 1, expiry="271231", batch="EARLY")
    o1 = disp.submit(make_order([(A, 1)]), API)
    o2 = disp.submit(make_order([(A, 2)], patient="P2"), API)
    s1, s2 = form(disp, clock)
    assert s1.robot_picks[0].slot == disp.get_pack(early[0]).slot  # type: ignore[attr-defined]
    assert s2.state is ShipmentState.HELD  # type: ignore[attr-defined]
    assert [h.code for h in s2.holds] == ["stock_short"]  # type: ignore[attr-defined]
    held = disp.get_order(o2.order_id)
    assert held.state is OrderState.HELD and held.holds[0].code == "stock_short"
    with pytest.raises(InvalidState, match="released automatically"):
        disp.release(o2.order_id, PHARMACIST, "go")
    load(disp, robot_drugs()[0], 1, expiry="281231", batch="MID")
    s2v = disp.get_shipment(s2.shipment_id)  # type: ignore[attr-defined]
    assert s2v.state is ShipmentState.QUEUED
    assert sum(p.count for p in s2v.robot_picks) == 2
    assert disp.get_order(o2.order_id).state is OrderState.QUEUED
    assert disp.get_pack(late[0]).state is PackState.IN_STOCK
    assert disp.get_order(o1.order_id).state is OrderState.QUEUED


def test_partial_dispensing_when_configured(make: Factory, clock: FakeClock) -> None:
    d = make(policy=Policy(partial_dispensing=True))
    load(d, robot_drugs()[0], 1)
    d.submit(make_order([(A, 3)]), API)
    (s,) = form(d, clock)
    assert s.state is ShipmentState.QUEUED  # type: ignore[attr-defined]
    assert [(x.drug_code, x.count) for x in s.short] == [(A, 2)]  # type: ignore[attr-defined]
    assert s.billing[0].quantity == 1  # type: ignore[attr-defined]


def test_full_flow_with_fridge_item_and_billing(disp: Dispensary, clock: FakeClock) -> None:
    fridge = fridge_drugs()[0]
    drug = robot_drugs()[0]
    load(disp, drug, 3)
    o = disp.submit(make_order([(A, 2), (fridge.drug_code, 1)]), API)
    (sh,) = form(disp, clock)
    assert sh.fridge  # type: ignore[attr-defined]
    assert [(m.drug_code, m.quantity) for m in sh.manual_picks] == [  # type: ignore[attr-defined]
        (fridge.drug_code, 1)]
    line = sh.billing[0]  # type: ignore[attr-defined]
    assert line.amount == drug.price * 2
    assert line.covered == (line.amount * drug.reimbursement_rate).quantize(Decimal("0.01"))
    assert line.self_pay == line.amount - line.covered
    sid = sh.shipment_id  # type: ignore[attr-defined]
    disp.start_picking(sid)
    (pick,) = sh.robot_picks  # type: ignore[attr-defined]
    packs = disp.record_pick(sid, pick.slot, 2)
    assert [p.pack_id for p in packs] == [1, 2]  # first stored, first picked
    with pytest.raises(LoadRefused) as info:
        disp.confirm_manual(sid, scan(drug), LOADER)
    assert info.value.reason_code == "not_on_pick_list"
    disp.start_labelling(sid)
    with pytest.raises(InvalidState, match="confirm by scan"):
        disp.complete_shipment(sid)
    manual = disp.confirm_manual(sid, scan(fridge, batch="F9", serial="FR1"), LOADER)
    assert manual.state is PackState.PICKED and manual.batch == "F9"
    with pytest.raises(LoadRefused) as info:
        disp.confirm_manual(sid, scan(fridge, serial="FR2"), LOADER)
    assert info.value.reason_code == "not_on_pick_list"
    done = disp.complete_shipment(sid)
    assert done.state is ShipmentState.COMPLETED
    assert disp.get_order(o.order_id).state is OrderState.COMPLETED
    assert {p.state for p in done.picked} == {PackState.DISPENSED}
    history = disp.journal.query("SELECT drug_code, quantity, supply_end FROM history")
    assert sorted(history) == sorted([(A, 2, "2026-12-23"), (fridge.drug_code, 1, "2026-12-23")])
    trace = disp.journal.query("SELECT order_id, shipment_id, batch, serial FROM packs WHERE "
                               "pack_id=?", (manual.pack_id,))
    assert trace == [(o.order_id, sid, "F9", "FR1")]
    assert disp.audit_verify().ok


def test_short_pick_quarantines_slot_and_reallocates(disp: Dispensary,
                                                       clock: FakeClock) -> None:
    first = load(disp, robot_drugs()[0], 2, expiry="271231", batch="E1")
    load(disp, robot_drugs()[0], 2, expiry="281231", batch="E2")
    disp.submit(make_order([(A, 2)]), API)
    (sh,) = form(disp, clock)
    sid = sh.shipment_id  # type: ignore[attr-defined]
    disp.start_picking(sid)
    slot = disp.get_pack(first[0]).slot
    assert sh.robot_picks[0].slot == slot  # type: ignore[attr-defined]
    got = disp.record_pick(sid, slot or 0, 1)
    assert len(got) == 1
    assert disp.get_pack(first[1]).state is PackState.QUARANTINED
    (disc,) = disp.list_discrepancies()
    assert (disc.slot, disc.expected, disc.counted, disc.kind) == (slot, 2, 1, "short_pick")
    view = disp.get_shipment(sid)
    assert [(p.count, p.slot != slot) for p in view.robot_picks] == [(1, True)]
    disp.record_pick(sid, view.robot_picks[0].slot, 1)
    disp.start_labelling(sid)
    assert disp.complete_shipment(sid).state is ShipmentState.COMPLETED


def test_quarantine_batch_moves_reservations_and_pulls_totes(disp: Dispensary,
                                                              clock: FakeClock) -> None:
    bad = load(disp, robot_drugs()[0], 2, expiry="271231", batch="BAD")
    load(disp, robot_drugs()[0], 3, expiry="291231", batch="OK")
    disp.submit(make_order([(A, 1)]), API)
    disp.submit(make_order([(A, 1)], patient="P2"), API)
    s1, s2 = form(disp, clock)
    disp.start_picking(s1.shipment_id)  # type: ignore[attr-defined]
    disp.record_pick(s1.shipment_id, s1.robot_picks[0].slot, 1)  # type: ignore[attr-defined]
    n = disp.quarantine_batch(A, "BAD", PHARMACIST, "manufacturer recall")
    assert n == 2  # one in the slot, one in the tote
    assert {disp.get_pack(p).state for p in bad} == {PackState.QUARANTINED}
    v1 = disp.get_shipment(s1.shipment_id)  # type: ignore[attr-defined]
    v2 = disp.get_shipment(s2.shipment_id)  # type: ignore[attr-defined]
    ok_slot = disp.list_stock(drug_code=A)[0].slot
    assert [p.slot for p in v1.robot_picks] == [ok_slot] and v1.picked == []
    assert [p.slot for p in v2.robot_picks] == [ok_slot]
    assert disp.stock_level(A) == 1


def test_slot_count_and_lost_packs(disp: Dispensary, clock: FakeClock) -> None:
    ids = load(disp, robot_drugs()[0], 3)
    other = load(disp, robot_drugs()[0], 2, batch="B2", expiry="291231")
    slot = disp.get_pack(ids[0]).slot or 0
    assert disp.record_slot_count(slot, 3, LOADER) is None
    disp.submit(make_order([(A, 3)]), API)
    (sh,) = form(disp, clock)
    disp.record_pack_lost(ids[0], PackState.MISSING, LOADER)
    view = disp.get_shipment(sh.shipment_id)  # type: ignore[attr-defined]
    assert view.state is ShipmentState.QUEUED
    assert sorted((p.slot, p.count) for p in view.robot_picks) == sorted(
        [(slot, 2), (disp.get_pack(other[0]).slot, 1)])
    disc = disp.record_slot_count(slot, 5, LOADER)
    assert disc is not None and (disc.expected, disc.counted) == (2, 5)
    view = disp.get_shipment(sh.shipment_id)  # type: ignore[attr-defined]
    assert view.state is ShipmentState.HELD  # only 2 good packs left for 3
    with pytest.raises(InvalidState):
        disp.record_pack_lost(ids[0], PackState.DROPPED)


def test_dropped_pack_in_tote_is_picked_again(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, robot_drugs()[0], 3)
    disp.submit(make_order([(A, 1)]), API)
    (sh,) = form(disp, clock)
    sid = sh.shipment_id  # type: ignore[attr-defined]
    disp.start_picking(sid)
    (pack,) = disp.record_pick(sid, sh.robot_picks[0].slot, 1)  # type: ignore[attr-defined]
    disp.record_pack_lost(pack.pack_id, PackState.DROPPED)
    view = disp.get_shipment(sid)
    assert view.picked == [] and sum(p.count for p in view.robot_picks) == 1
    with pytest.raises(InvalidState, match="robot picks open"):
        disp.start_labelling(sid)


def test_fail_shipment_frees_stock_and_quarantines_tote(disp: Dispensary,
                                                         clock: FakeClock) -> None:
    load(disp, robot_drugs()[0], 3)
    o = disp.submit(make_order([(A, 1)]), API)
    (sh,) = form(disp, clock)
    sid = sh.shipment_id  # type: ignore[attr-defined]
    disp.start_picking(sid)
    (p,) = disp.record_pick(sid, sh.robot_picks[0].slot, 1)  # type: ignore[attr-defined]
    disp.fail_shipment(sid, PHARMACIST, "tote jammed")
    assert disp.get_order(o.order_id).state is OrderState.FAILED
    assert disp.get_pack(p.pack_id).state is PackState.QUARANTINED
    assert disp.stock_level(A) == 2


def test_restart_restores_the_same_state(make: Factory, clock: FakeClock) -> None:
    d = make()
    load(d, robot_drugs()[0], 4, expiry="271231", batch="E1")
    load(d, robot_drugs()[1], 1)
    d.submit(make_order([(A, 2), (B, 2)]), API)
    d.submit(make_order([(A, 1)], patient="P2"), API)
    d.submit(make_order([(A, 1)], patient="P3", diagnoses=["I10"]), API)
    d.begin_load(scan(robot_drugs()[2]), LOADER)
    form(d, clock)
    d2 = Dispensary(d.journal, d.formulary, d.policy, d.geometry, clock)
    for part, attr in (("orders", "live"), ("shipments", "live"), ("shipments", "forming"),
                       ("packs", "live"), ("packs", "serials")):
        assert getattr(getattr(d2, part), attr) == getattr(getattr(d, part), attr), attr
    assert {k: (s.reserved, s.packs, s.incoming, s.blocked) for k, s in d2.stock.slots.items()} \
        == {k: (s.reserved, s.packs, s.incoming, s.blocked) for k, s in d.stock.slots.items()}
    assert {k: v for k, v in d2.allocator.waiting.items() if v} == {
        k: v for k, v in d.allocator.waiting.items() if v}
