"""The expiry sweep in the core (issue 8): which packs it takes (near expiry and expired,
not quarantined, not on a slot someone else holds a reservation on), that it claims them
at once, its totes (one destruction task per tote, at most ``tote_capacity`` packs), a
second sweep refused while one is under way, nothing to sweep, the packs' end state
(``disposed``, never ``dispensed``) and the audit rows.

Packs are loaded on 2026-11-23 (default policy: 30 days of shelf life) and the clock is
moved on so that they age in the machine.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import InvalidState
from dispenser.core.states import PackState, ShipmentState, TaskState
from dispenser.core.sweep import SweepRunning
from dispenser.core.tasks import TaskCriterion, TaskRequest
from dispenser.core.views import Actor
from dispenser.testing.core import (
    API,
    LOADER,
    Factory,
    FakeClock,
    load,
    make_order,
    robot_drugs,
)

DRUG, OTHER, THIRD, FOURTH = robot_drugs()[:4]
START = date(2026, 11, 23)
TECH = Actor("zhao.tech", "technician")


def on_day(days: int) -> str:
    return (START + timedelta(days=days)).strftime("%y%m%d")


def age(clock: FakeClock, days: int) -> None:
    clock.advance(days * 86400)


def work(d: Dispensary, task_id: str) -> None:
    """What the tote planner and the robot do: start, pick every reservation, hand on."""
    d.start_task(task_id)
    for slot, count in d.get_task(task_id).picks:
        d.record_task_pick(task_id, slot, count)
    d.finish_task(task_id)


def audit(d: Dispensary, action: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [(r[0], r[1], r[2], json.loads(r[3])) for r in d.journal.query(
        "SELECT actor, role, subject, after FROM audit WHERE action=? ORDER BY id",
        (action,))]


def test_sweep_takes_near_expiry_and_expired_packs_only(disp: Dispensary,
                                                        clock: FakeClock) -> None:
    gone = load(disp, DRUG, 2, expiry=on_day(40), batch="GONE")
    near = load(disp, OTHER, 3, expiry=on_day(70), batch="NEAR")
    fine = load(disp, OTHER, 2, expiry=on_day(400), batch="FINE")
    recalled = load(disp, THIRD, 2, expiry=on_day(45), batch="RECALL")
    disp.quarantine_batch(THIRD.drug_code, "RECALL", LOADER, "recall R-17")
    age(clock, 50)  # the line is day 80: GONE expired, NEAR near expiry, FINE fit

    swept = disp.sweep_stock(output=2, tote_capacity=40, actor=TECH)

    assert swept.sweep_id is not None and swept.output == 2
    assert sorted(p.pack_id for p in swept.packs) == sorted(gone + near)
    assert not swept.left
    (task,) = swept.tasks
    assert (task.purpose, task.state, task.output, task.priority, task.actor) == (
        "destruction", TaskState.QUEUED, 2, "high", "zhao.tech")
    assert task.meta == {"sweep": swept.sweep_id, "tote": 1, "totes": 1}
    assert sorted(pid for ln in task.lines for pid in ln.pack_ids) == sorted(gone + near)
    assert all(ln.short == 0 for ln in task.lines)
    # Claimed at once: nothing else can reserve those slots meanwhile.
    for pid in gone + near:
        slot = disp.get_pack(pid).slot
        assert slot is not None and disp.stock.slots[slot].claimed
        assert disp.stock.slots[slot].available == 0
    assert disp.stock_level(OTHER.drug_code) == 2  # FINE untouched

    work(disp, task.task_id)
    done = disp.get_task(task.task_id)
    assert done.state is TaskState.COMPLETED
    for pid in gone + near:
        view = disp.get_pack(pid)
        assert view.state is PackState.DISPOSED and view.task_id == task.task_id
        assert view.shipment_id is None and view.order_id is None
    assert {disp.get_pack(p).state for p in fine} == {PackState.IN_STOCK}
    assert {disp.get_pack(p).state for p in recalled} == {PackState.QUARANTINED}
    counts = disp.stock_counts()
    assert (counts.in_stock, counts.near_expiry, counts.quarantined) == (2, 0, 2)
    assert disp.list_stock(state=PackState.DISPENSED) == []
    assert disp.packs_to_sweep() == []


def test_sweep_leaves_a_slot_a_shipment_holds(disp: Dispensary, clock: FakeClock) -> None:
    soon = load(disp, DRUG, 3, expiry=on_day(40), batch="SOON")
    other = load(disp, OTHER, 2, expiry=on_day(35), batch="LATER")
    disp.submit(make_order([(DRUG.drug_code, 1)]), API)  # reserves one SOON pack today
    clock.advance(301)
    (sh,) = disp.form_shipments()
    assert sh.state is ShipmentState.QUEUED
    age(clock, 15)  # both batches near expiry now; the shipment still holds its pack

    swept = disp.sweep_stock(output=1, tote_capacity=40, actor=TECH)

    assert [p.pack_id for p in swept.packs] == other
    assert sorted(p.pack_id for p in swept.left) == soon[1:]  # the slot less its reserved
    soon_slot = disp.get_pack(soon[0]).slot
    assert soon_slot is not None and not disp.stock.slots[soon_slot].claimed
    assert disp.get_shipment(sh.shipment_id).robot_picks[0].slot == soon_slot
    left = audit(disp, "stock.swept")[0][3]["left"]
    assert sorted(left) == soon[1:]


def test_more_packs_than_a_tote_make_totes_in_turn(disp: Dispensary, clock: FakeClock) -> None:
    a = load(disp, DRUG, 2, expiry=on_day(40), batch="A")
    b = load(disp, OTHER, 2, expiry=on_day(41), batch="B")
    c = load(disp, THIRD, 3, expiry=on_day(42), batch="C")
    age(clock, 50)

    swept = disp.sweep_stock(output=3, tote_capacity=2, actor=TECH)

    # One slot's packs stay in one tote; C has more than a tote holds: its first two go.
    assert [len(t.packs) + sum(n for _, n in t.picks) for t in swept.tasks] == [2, 2, 2]
    totes = [sorted(pid for ln in t.lines for pid in ln.pack_ids) for t in swept.tasks]
    assert sorted(totes) == [a, b, c[:2]]  # totes in slot order
    assert [p.pack_id for p in swept.left] == c[2:]
    assert [t.meta["tote"] for t in swept.tasks] == [1, 2, 3]
    assert {t.meta["totes"] for t in swept.tasks} == {3}
    # In turn: the output is given to the first tote's task, then the next.
    ids = [t.task_id for t in swept.tasks]
    for i, task_id in enumerate(ids):
        assert [t.task_id for t in disp.next_tasks(outputs=[3])] == [task_id]
        with pytest.raises(SweepRunning) as refused:
            disp.sweep_stock(output=3, tote_capacity=2, actor=TECH)
        assert refused.value.task_ids == ids[i:]
        work(disp, task_id)
    assert disp.sweep_under_way() is None
    assert {disp.get_pack(p).state for p in a + b + c[:2]} == {PackState.DISPOSED}

    # The pack left behind goes with the next sweep.
    again = disp.sweep_stock(output=3, tote_capacity=2, actor=TECH)
    assert [p.pack_id for p in again.packs] == c[2:]


def test_sweep_packs_fit_in_totes_first_fit(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, DRUG, 2, expiry=on_day(40), batch="A")
    load(disp, OTHER, 2, expiry=on_day(41), batch="B")
    load(disp, THIRD, 2, expiry=on_day(42), batch="C")
    age(clock, 50)
    swept = disp.sweep_stock(output=1, tote_capacity=4, actor=TECH)
    assert [sum(ln.quantity for ln in t.lines) for t in swept.tasks] == [4, 2]


def test_a_second_sweep_is_refused_while_one_is_under_way(disp: Dispensary,
                                                          clock: FakeClock) -> None:
    load(disp, DRUG, 2, expiry=on_day(40), batch="GONE")
    age(clock, 50)
    first = disp.sweep_stock(output=1, tote_capacity=40, actor=TECH)
    (task,) = first.tasks
    before = disp.journal.query_one("SELECT count(*) FROM audit")[0]
    with pytest.raises(SweepRunning, match=rf"under way \({first.sweep_id}: {task.task_id}\)"):
        disp.sweep_stock(output=2, tote_capacity=40, actor=LOADER)
    assert disp.journal.query_one("SELECT count(*) FROM audit")[0] == before
    assert [t.task_id for t in disp.live_tasks()] == [task.task_id]
    disp.start_task(task.task_id)
    with pytest.raises(SweepRunning):  # picking: still under way
        disp.sweep_stock(output=1, tote_capacity=40, actor=TECH)
    for slot, count in disp.get_task(task.task_id).picks:
        disp.record_task_pick(task.task_id, slot, count)
    disp.finish_task(task.task_id)
    assert disp.sweep_under_way() is None
    nothing = disp.sweep_stock(output=1, tote_capacity=40, actor=TECH)
    assert nothing.sweep_id is None


def test_nothing_to_sweep_makes_no_task(disp: Dispensary, clock: FakeClock) -> None:
    load(disp, DRUG, 2, expiry=on_day(400))
    age(clock, 50)
    swept = disp.sweep_stock(output=1, tote_capacity=40, actor=TECH)
    assert (swept.sweep_id, swept.tasks, swept.packs, swept.left) == (None, (), (), ())
    assert disp.list_tasks() == []
    assert audit(disp, "stock.swept") == []
    with pytest.raises(InvalidState, match="outputs count from 1"):
        disp.sweep_stock(output=0, tote_capacity=40, actor=TECH)


def test_sweep_audit_rows(disp: Dispensary, clock: FakeClock) -> None:
    gone = load(disp, DRUG, 1, expiry=on_day(40), batch="GONE")
    near = load(disp, OTHER, 2, expiry=on_day(70), batch="NEAR")
    age(clock, 50)
    swept = disp.sweep_stock(output=4, tote_capacity=40, actor=TECH)
    (task,) = swept.tasks
    ((actor, role, subject, after),) = audit(disp, "stock.swept")
    assert (actor, role, subject) == ("zhao.tech", "technician", swept.sweep_id)
    assert after["output"] == 4 and after["packs"] == 3 and after["totes"] == 1
    assert after["tasks"] == [task.task_id] and after["expired"] == 1
    assert sorted(after["pack_ids"]) == sorted(gone + near)
    assert after["near_expiry_before"] == (START + timedelta(days=80)).isoformat()
    created = audit(disp, "task.created")
    assert created[0][:3] == ("zhao.tech", "technician", task.task_id)
    assert created[0][3]["purpose"] == "destruction"

    work(disp, task.task_id)
    picked = {int(s.split(":")[1]): a for _, _, s, a in audit(disp, "pack.picked")}
    disposed = {int(s.split(":")[1]): a for _, _, s, a in audit(disp, "pack.disposed")}
    assert set(picked) == set(disposed) == set(gone + near)
    assert all(a["task_id"] == task.task_id and a["shipment_id"] is None
               for a in [*picked.values(), *disposed.values()])
    assert audit(disp, "pack.dispensed") == []
    ((_, _, _, finished),) = audit(disp, "task.completed")
    assert sorted(p for packs in finished["packs"].values() for p in packs) == sorted(
        gone + near)


def test_an_order_after_the_sweep_is_held_stock_short(disp: Dispensary,
                                                      clock: FakeClock) -> None:
    load(disp, DRUG, 2, expiry=on_day(40), batch="GONE")
    age(clock, 50)
    (task,) = disp.sweep_stock(output=1, tote_capacity=40, actor=TECH).tasks
    tomorrow = clock.now.date() + timedelta(days=1)
    o = disp.submit(make_order([(DRUG.drug_code, 1)],
                               window_start=f"{tomorrow}T09:00:00+08:00"), API)
    clock.advance(301)
    (sh,) = disp.form_shipments()
    assert sh.state is ShipmentState.HELD
    assert [h.code for h in disp.get_order(o.order_id).holds] == ["stock_short"]
    work(disp, task.task_id)
    assert disp.get_shipment(sh.shipment_id).state is ShipmentState.HELD


def test_a_sweep_survives_a_restart(make: Factory, clock: FakeClock) -> None:
    d = make()
    ids = load(d, DRUG, 2, expiry=on_day(40), batch="GONE")
    load(d, OTHER, 1, expiry=on_day(400))
    age(clock, 50)
    swept = d.sweep_stock(output=1, tote_capacity=40, actor=TECH)
    d.start_task(swept.tasks[0].task_id)
    slot, count = d.get_task(swept.tasks[0].task_id).picks[0]
    d.journal.close()

    again = make()
    assert again.sweep_under_way() == (swept.sweep_id, [swept.tasks[0].task_id])
    assert again.stock.slots[slot].claimed
    with pytest.raises(SweepRunning):
        again.sweep_stock(output=1, tote_capacity=40, actor=TECH)
    again.record_task_pick(swept.tasks[0].task_id, slot, count)
    assert again.finish_task(swept.tasks[0].task_id).state is TaskState.COMPLETED
    assert {again.get_pack(p).state for p in ids} == {PackState.DISPOSED}


def test_a_recall_while_in_the_destruction_tote_quarantines_the_pack(
        disp: Dispensary, clock: FakeClock) -> None:
    ids = load(disp, DRUG, 2, expiry=on_day(40), batch="GONE")
    age(clock, 50)
    (task,) = disp.sweep_stock(output=1, tote_capacity=40, actor=TECH).tasks
    disp.start_task(task.task_id)
    for slot, count in disp.get_task(task.task_id).picks:
        disp.record_task_pick(task.task_id, slot, count)
    disp.quarantine_batch(DRUG.drug_code, "GONE", LOADER, "recall")
    done = disp.finish_task(task.task_id)
    assert done.state is TaskState.INCOMPLETE  # the packs left its tote for quarantine
    assert {disp.get_pack(p).state for p in ids} == {PackState.QUARANTINED}


def test_wwks2_output_packs_are_still_dispensed(disp: Dispensary) -> None:
    (pid,) = load(disp, DRUG, 1)
    t = disp.create_task(TaskRequest("wwks2_output", "100/1", "f", 1, "normal", (
        TaskCriterion(DRUG.drug_code, 1, drug_code=DRUG.drug_code),), {}), API)
    work(disp, t.task_id)
    assert disp.get_pack(pid).state is PackState.DISPENSED
    assert disp.sweep_under_way() is None


def test_a_disposed_serial_is_refused_when_scanned_again(make: Factory,
                                                         clock: FakeClock) -> None:
    # Orders of at least 60 days' supply: a pack with 45 days left serves none of them
    # (near expiry) though loading (30 days) would still take it.
    from dispenser.core.errors import LoadRefused
    from dispenser.core.policy import Policy
    from dispenser.testing.core import scan
    d = make(Policy(min_days_supply=60))
    p = d.begin_load(scan(DRUG, on_day(75), "OLD", "SW-1"), LOADER)
    d.confirm_stored(p.pack_id)
    age(clock, 30)
    (task,) = d.sweep_stock(output=1, tote_capacity=40, actor=TECH).tasks
    work(d, task.task_id)
    assert d.get_pack(p.pack_id).state is PackState.DISPOSED
    with pytest.raises(LoadRefused) as err:
        d.begin_load(scan(DRUG, on_day(75), "OLD", "SW-1"), LOADER)
    assert err.value.reason_code == "serial_disposed"
    assert "destruction" in str(err.value)
