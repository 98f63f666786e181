"""Output tasks in the core: reserved from the same stock as shipments (FEFO, shelf life,
quarantine, never a pack the other holds), packs by id exactly, the lifecycle table, and
the same state after a restart."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import Conflict, InvalidState
from dispenser.core.lifecycles import TASK_LIFECYCLE
from dispenser.core.states import OrderState, PackState, ShipmentState, TaskState
from dispenser.core.tasks import TaskCriterion, TaskRequest
from dispenser.core.views import Actor
from dispenser.testing.core import (
    API,
    LOADER,
    Factory,
    FakeClock,
    fridge_drugs,
    load,
    make_order,
    robot_drugs,
)

A, B = (d.drug_code for d in robot_drugs()[:2])
IMS = Actor("wwks2:100@127.0.0.1", "wwks2")


def request(key: str, *criteria: TaskCriterion, output: int = 1, priority: str = "normal",
            purpose: str = "wwks2_output", fingerprint: str = "f1") -> TaskRequest:
    return TaskRequest(purpose, key, fingerprint, output, priority, criteria,
                       {"note": "kept"})


def drug(code: str, n: int, **kw: object) -> TaskCriterion:
    return TaskCriterion(ref=code, quantity=n, drug_code=code, **kw)  # type: ignore[arg-type]


def pick_all(d: Dispensary, task_id: str) -> None:
    for slot, count in d.get_task(task_id).picks:
        d.record_task_pick(task_id, slot, count)


def test_task_takes_fefo_and_is_dispensed_at_hand_on(disp: Dispensary) -> None:
    late = load(disp, A, 2, expiry="280630", batch="L1")
    early = load(disp, A, 2, expiry="270331", batch="E1")
    t = disp.create_task(request("100/1", drug(A, 3)), IMS)
    assert t.state is TaskState.QUEUED and t.meta == {"note": "kept"}
    assert sum(n for _, n in t.picks) == 3
    assert disp.stock_level(A) == 1
    disp.start_task(t.task_id)
    pick_all(disp, t.task_id)
    done = disp.finish_task(t.task_id)
    assert done.state is TaskState.COMPLETED
    got = [p.pack_id for p in done.packs]
    assert set(early) <= set(got) and len(set(got) & set(late)) == 1  # FEFO
    assert all(p.state is PackState.DISPENSED and p.task_id == t.task_id
               for p in done.packs)
    # Every recorded change of the task is a row of its table, with its trigger.
    rows = disp.journal.query("SELECT before, after FROM audit WHERE subject=? AND "
                              "before IS NOT NULL", (t.task_id,))
    seen = [(json.loads(b)["state"], json.loads(a)["trigger"], json.loads(a)["state"])
            for b, a in rows]
    assert seen == [("queued", "start", "in_process"),
                    ("in_process", "complete", "completed")]
    for before, trigger, after in seen:
        assert TASK_LIFECYCLE.next_state(TaskState(before), trigger).value == after
    actor = disp.journal.query_one("SELECT actor, role FROM audit WHERE subject=? AND "
                                   "action='task.created'", (t.task_id,))
    assert tuple(actor) == ("wwks2:100@127.0.0.1", "wwks2")


def test_shipments_and_tasks_never_take_each_others_packs(disp: Dispensary,
                                                          clock: FakeClock) -> None:
    load(disp, A, 3)
    o = disp.submit(make_order([(A, 2)], priority="urgent"), API)
    (sh,) = disp.form_shipments()
    assert sh.state is ShipmentState.QUEUED
    t = disp.create_task(request("100/2", drug(A, 2)), IMS)
    assert sum(n for _, n in t.picks) == 1 and t.lines[0].short == 1
    assert disp.stock_level(A) == 0
    # And the other way round: a task's reservation holds a later order back.
    o2 = disp.submit(make_order([(A, 1)], priority="urgent", patient="P2"), API)
    disp.form_shipments()
    assert disp.get_shipment(o2.shipment_id or "").state is ShipmentState.HELD
    # Cancelling the queued task gives its pack to the waiting shipment.
    gone = disp.cancel_task(t.task_id, IMS, "customer left")
    assert gone.state is TaskState.ABORTED
    assert disp.get_shipment(o2.shipment_id or "").state is ShipmentState.QUEUED
    assert disp.get_order(o.order_id).shipment_id == sh.shipment_id


def test_shelf_life_and_quarantine_rules(disp: Dispensary, clock: FakeClock) -> None:
    # Loaded with 40 days left; 15 days later it has 25, under min_shelf_life_days (30).
    soon = (clock.now.date() + timedelta(days=40)).strftime("%y%m%d")
    near = load(disp, A, 1, expiry=soon, batch="N1")
    far = load(disp, A, 1, expiry="281231", batch="F1")
    bad = load(disp, B, 2, batch="Q1")
    clock.advance(15 * 86400)
    t = disp.create_task(request("100/3", drug(A, 2)), IMS)
    assert t.lines[0].short == 1 and disp.get_pack(near[0]).state is PackState.IN_STOCK
    disp.start_task(t.task_id)
    pick_all(disp, t.task_id)
    assert [p.pack_id for p in disp.get_task(t.task_id).packs] == far
    # Nor does a shipment: its rule (docs/orders.md) asks for an expiry on or after the
    # dispense date + max(min_shelf_life_days, days_supply).
    later = (clock.now + timedelta(days=1)).isoformat()
    o = disp.submit(make_order([(A, 1)], priority="urgent", window_start=later), API)
    disp.form_shipments()
    held = disp.get_order(o.order_id)
    assert held.state is OrderState.HELD and [h.code for h in held.holds] == ["stock_short"]
    assert disp.get_pack(near[0]).state is PackState.IN_STOCK
    # A quarantined batch is never offered.
    disp.quarantine_batch(B, "Q1", LOADER, "recall")
    t2 = disp.create_task(request("100/4", drug(B, 1)), IMS)
    assert t2.state is TaskState.INCOMPLETE and t2.lines[0].short == 1
    assert all(disp.get_pack(p).state is PackState.QUARANTINED for p in bad)
    # A minimum expiry date and a batch narrow the choice.
    load(disp, B, 2, expiry="270601", batch="R1")
    load(disp, B, 2, expiry="290101", batch="R2")
    t3 = disp.create_task(request("100/5", drug(B, 1, min_expiry=date(2028, 1, 1)),
                                  drug(B, 1, batch="R1")), IMS)
    slots = {disp.stock.slots[s].batch for s, _ in t3.picks}
    assert slots == {"R1", "R2"}


def test_single_batch_takes_one_batch_that_has_them_all(disp: Dispensary) -> None:
    load(disp, A, 1, expiry="270101", batch="S1")
    load(disp, A, 3, expiry="280101", batch="S2")
    t = disp.create_task(request("100/6", drug(A, 3, single_batch=True)), IMS)
    assert {disp.stock.slots[s].batch for s, _ in t.picks} == {"S2"}
    assert t.lines[0].short == 0


def test_packs_by_id_are_exact_and_claim_their_slot(disp: Dispensary, clock: FakeClock
                                                    ) -> None:
    ids = load(disp, A, 3)  # one slot, stored in this order
    head = TaskCriterion(ref=A, quantity=1, pack_ids=(ids[0],))
    behind = TaskCriterion(ref=A, quantity=1, pack_ids=(ids[2],))
    t = disp.create_task(request("100/7", head, behind), IMS)
    assert [ln.short for ln in t.lines] == [0, 1]  # the robot cannot reach the third
    # The claimed slot serves no shipment until the task's pick is done.
    o = disp.submit(make_order([(A, 1)], priority="urgent"), API)
    disp.form_shipments()
    assert disp.get_shipment(o.shipment_id or "").state is ShipmentState.HELD
    disp.start_task(t.task_id)
    pick_all(disp, t.task_id)
    assert [p.pack_id for p in disp.get_task(t.task_id).packs] == [ids[0]]
    assert disp.get_shipment(o.shipment_id or "").state is ShipmentState.QUEUED
    assert disp.finish_task(t.task_id).state is TaskState.INCOMPLETE


def test_destruction_takes_expired_packs_by_id(disp: Dispensary, clock: FakeClock) -> None:
    soon = (clock.now.date() + timedelta(days=40)).strftime("%y%m%d")
    ids = load(disp, A, 2, expiry=soon)
    clock.advance(45 * 86400)  # expired now
    by_id = TaskCriterion(ref="sweep", quantity=2, pack_ids=tuple(ids))
    out = disp.create_task(request("x/1", by_id), IMS)
    assert out.state is TaskState.INCOMPLETE  # not fit to hand over
    t = disp.create_task(request("sweep/1", by_id, purpose="destruction"), IMS)
    assert t.lines[0].short == 0
    disp.start_task(t.task_id)
    pick_all(disp, t.task_id)
    assert disp.finish_task(t.task_id).state is TaskState.COMPLETED


def test_cancel_while_picking_aborts_with_the_packs_in_the_tote(disp: Dispensary) -> None:
    load(disp, A, 1)
    load(disp, B, 1)
    t = disp.create_task(request("100/8", drug(A, 1), drug(B, 1)), IMS)
    disp.start_task(t.task_id)
    slot_a = next(s for s, _ in t.picks if disp.stock.slots[s].drug_code == A)
    disp.record_task_pick(t.task_id, slot_a, 1)
    assert disp.cancel_task(t.task_id, IMS, "stop").state is TaskState.ABORTING
    with pytest.raises(InvalidState):
        disp.cancel_task(t.task_id, IMS, "again")
    done = disp.finish_task(t.task_id)
    assert done.state is TaskState.ABORTED
    assert [p.drug_code for p in done.packs] == [A]
    assert disp.stock_level(B) == 1  # the rest given back


def test_nothing_to_pick_is_incomplete_at_once_and_keys_are_unique(disp: Dispensary) -> None:
    t = disp.create_task(request("100/9", drug(A, 1)), IMS)
    assert t.state is TaskState.INCOMPLETE
    load(disp, A, 2)
    t1 = disp.create_task(request("100/10", drug(A, 1)), IMS)
    assert disp.create_task(request("100/10", drug(A, 1)), IMS).task_id == t1.task_id
    with pytest.raises(Conflict):
        disp.create_task(request("100/10", drug(A, 2), fingerprint="f2"), IMS)
    assert disp.find_task("wwks2_output", "100/10") == disp.get_task(t1.task_id)
    with pytest.raises(InvalidState, match="fridge"):
        disp.create_task(request("100/11", drug(fridge_drugs()[0].drug_code, 1)), IMS)


def test_short_pick_and_lost_pack_get_other_stock(disp: Dispensary) -> None:
    load(disp, A, 1, expiry="270101", batch="P1")
    load(disp, A, 2, expiry="280101", batch="P2")
    t = disp.create_task(request("100/12", drug(A, 2)), IMS)
    disp.start_task(t.task_id)
    first = next(s for s, _ in t.picks if disp.stock.slots[s].batch == "P1")
    disp.record_task_pick(t.task_id, first, 0)  # the slot was empty
    view = disp.get_task(t.task_id)
    assert sum(n for _, n in view.picks) == 2 and view.lines[0].short == 0
    pick_all(disp, t.task_id)
    packs = disp.get_task(t.task_id).packs
    disp.record_pack_lost(packs[0].pack_id, PackState.DROPPED)
    view = disp.get_task(t.task_id)
    assert len(view.packs) == 1 and view.lines[0].short == 1  # no stock left for it
    assert disp.finish_task(t.task_id).state is TaskState.INCOMPLETE


def test_restart_restores_tasks_reservations_and_claims(make: Factory) -> None:
    d = make()
    ids = load(d, A, 2)
    load(d, B, 2)
    t = d.create_task(request("100/13", drug(B, 1),
                              TaskCriterion(ref=A, quantity=1, pack_ids=(ids[0],))), IMS)
    d.start_task(t.task_id)
    before = (d.stock_level(A), d.stock_level(B), d.get_task(t.task_id))
    d.journal.close()
    again = make()
    assert (again.stock_level(A), again.stock_level(B), again.get_task(t.task_id)) == before
    claimed = [s for s in again.stock.slots.values() if s.claimed]
    assert [s.drug_code for s in claimed] == [A]
    pick_all(again, t.task_id)
    assert again.finish_task(t.task_id).state is TaskState.COMPLETED
