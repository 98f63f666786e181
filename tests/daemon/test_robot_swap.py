"""Another robot answers (its controller board was replaced): the daemon changes nothing
in the journal until a technician adopts the robot; the adoption counts the slots the old
robot may have changed and settles every command it never confirmed, so that no pack is
picked twice or lost.

The robot is swapped in the middle of work: the old board has done PICKs and a STORE whose
completions the daemon has not read yet (``sim.replace_board``: packs stay where they are,
the protocol memory is empty).
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.core.states import PackState, ShipmentState
from dispenser.core.views import Actor
from dispenser.daemon.app import Daemon
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.demo import scan_of
from dispenser.daemon.robot import Motion
from dispenser.testing.inprocess import (
    STAFF,
    close,
    picking_done,
    prepare,
    restart,
    run_cycles,
)
from firmware_sim import Simulator

TECH = Actor("test-technician", "technician")
TABLES = ("robot_intents", "robot_cursor", "packs", "shipments", "orders", "totes",
          "blocked_slots", "discrepancies")


def _snapshot(daemon: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    return {t: [tuple(r) for r in daemon.journal.query(f"SELECT * FROM {t} ORDER BY 1")]
            for t in TABLES}


async def _desk_idle(daemon: Daemon) -> None:
    """Labels of shipments picked before go on printing (the printer is not the robot):
    let the desk finish before taking the journal's picture."""
    for _ in range(500):
        if not daemon.desk.pending and not daemon.desk.busy:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the print desk did not finish")


def _stock_matches(daemon: Daemon, sim: Simulator) -> None:
    """Every pack the journal holds in a slot is there, and nothing else is."""
    ledger = sim.ledger()
    physical = {int(s): sorted(p["serial"] for p in ps) for s, ps in ledger["slots"].items()}
    journal: dict[int, list[str]] = {}
    for state in (PackState.IN_STOCK, PackState.QUARANTINED):
        for p in daemon.dispensary.list_stock(state=state, limit=100000):
            if p.slot is not None and p.shipment_id is None:
                journal.setdefault(p.slot, []).append(p.serial or "")
    assert {s: sorted(v) for s, v in journal.items()} == physical


def _totes_match(daemon: Daemon, sim: Simulator) -> None:
    """The packs in the totes are exactly the packs the journal records as picked or
    dispensed, each once."""
    ledger = sim.ledger()
    in_totes = [p["serial"] for t in ledger["outputs"].values() for p in t["packs"]]
    in_totes += [p["serial"] for t in ledger["totes"] for p in t["packs"]]
    journal = [p.serial for v in daemon.dispensary.list_shipments(limit=1000)
               for p in v.picked]
    assert sorted(journal) == sorted(in_totes)
    assert len(set(journal)) == len(journal), "a pack picked twice"


async def _swap_mid_work(tmp_path: Path, sim: Simulator) -> tuple[Daemon, dict[str, Any]]:
    """PICKs and a STORE done by the old board, not yet read; then a new board."""
    daemon, orders = await prepare(tmp_path, sim)
    extra = {"gtin": orders[0]["items"][0]["drug_code"], "batch": "LSWAP",
             "expiry": (date.today() + timedelta(days=300)).isoformat(), "serial": "SWAP01"}
    sim.put_input([extra])
    # Shipments formed now: the cycle that starts picking them also stores the pack.
    assert daemon.dispensary.form_shipments()
    load = daemon.scheduler.request_load(scan_of(extra), STAFF, wait=True)
    ledger = daemon.scheduler.ledger

    def both_out() -> bool:
        motions = {i.motion for i in ledger.outstanding.values()}
        return Motion.PICK in motions and Motion.STORE in motions
    for _ in range(500):
        await daemon.scheduler.cycle()
        if both_out():
            break
        await asyncio.sleep(0.001)
    assert both_out()
    for _ in range(50):  # the old board does them
        await asyncio.sleep(0.01)
        if not sim.robot.queue:
            break
    assert sim.ledger()["input"] == []  # the old board stored the pack
    await sim.replace_board()
    return daemon, {"orders": orders, "load": load, "extra": extra}


@pytest.mark.parametrize("seen", ["while running", "at a restart"])
async def test_a_new_board_changes_nothing_until_adopted(tmp_path: Path, sim: Simulator,
                                                         seen: str) -> None:
    """At a restart the reconcile once voided the old robot's commands before it noticed
    (a STORE it had done became refused, its PICKs were planned again); while running
    the new board was not noticed at all. And each acknowledgement raised the fault
    again, for ever."""
    daemon, _ = await _swap_mid_work(tmp_path, sim)
    await _desk_idle(daemon)
    before = _snapshot(daemon)
    if seen == "at a restart":
        daemon = await restart(daemon, tmp_path, sim)
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    for _ in range(5):
        await sched.cycle()
    faults = sched.faults.log.page(active=True)
    assert [f.kind for f in faults] == ["robot_mismatch"]
    assert _snapshot(daemon) == before, "the journal changed before anyone looked"
    assert sim.ledger()["robot"]["last_accepted_seq"] == 0  # nothing was sent

    # Acknowledging does not make the robot the journal's: the machine waits in
    # maintenance mode for the technician, and the fault is not raised again.
    await sched.ack_fault(faults[0].fault_id, STAFF, "looked at it")
    for _ in range(10):
        await sched.cycle()
        await asyncio.sleep(0.005)
    assert daemon.machine.state is ControllerState.MAINTENANCE
    assert sched.faults.log.page(active=True) == []
    assert _snapshot(daemon) == before
    assert sim.ledger()["robot"]["last_accepted_seq"] == 0
    await close(daemon)


async def test_adopting_the_new_robot_settles_what_the_old_one_did(
        tmp_path: Path, sim: Simulator) -> None:
    daemon, ctx = await _swap_mid_work(tmp_path, sim)
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    unknown = [i.seq for i in sched.ledger.log.planned()]
    assert unknown
    fault = sched.faults.log.page(active=True)[0]
    await sched.ack_fault(fault.fault_id, TECH, "new board fitted")
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.MAINTENANCE)

    adopt = asyncio.create_task(sched.adopt(TECH, "controller board replaced"))
    await run_cycles(daemon, adopt.done)
    result = adopt.result()
    assert result["unknown_intents"] == len(unknown)
    assert result["settlement"]["counts"], result
    assert result["settlement"]["settled"] is True, result
    marks = ",".join("?" * len(unknown))
    assert {r[0] for r in daemon.journal.query(
        f"SELECT state FROM robot_intents WHERE seq IN ({marks})", unknown)} <= {"done",
                                                                                  "void"}
    # The adoption and its counts are in the journal and the audit trail.
    assert daemon.journal.query_one("SELECT count(*) FROM robot_adoptions")[0] == 1
    actions = {r[0] for r in daemon.journal.query("SELECT action FROM audit")}
    assert {"robot.adopted", "slot.counted"} <= actions
    # The pack the old board stored is in stock, not refused.
    view = await asyncio.wait_for(ctx["load"], 1)
    assert daemon.dispensary.get_pack(view.pack_id).state is PackState.IN_STOCK
    _stock_matches(daemon, sim)
    _totes_match(daemon, sim)

    daemon.machine.fire("leave_maintenance")
    await run_cycles(daemon, lambda: picking_done(daemon))
    for v in daemon.dispensary.list_shipments(limit=1000):
        want = sum(i["quantity"] for o in ctx["orders"] if o["order_id"] in v.order_ids
                   for i in o["items"])
        assert len(v.picked) == want, v.shipment_id
        assert v.state in (ShipmentState.LABELLING, ShipmentState.COMPLETED)
    _stock_matches(daemon, sim)
    _totes_match(daemon, sim)
    await close(daemon)


async def test_the_journals_robot_is_not_adopted(tmp_path: Path, sim: Simulator) -> None:
    """Adopting is for another robot only: with the journal's own robot it is refused and
    changes nothing."""
    daemon, _ = await prepare(tmp_path, sim)
    await run_cycles(daemon, lambda: picking_done(daemon))
    daemon.machine.fire("maintenance")
    await _desk_idle(daemon)
    before = _snapshot(daemon)
    with pytest.raises(ValueError, match="nothing to adopt"):
        await daemon.scheduler.adopt(TECH, None)
    assert _snapshot(daemon) == before
    await close(daemon)


async def test_counts_that_fit_no_order_of_events_leave_the_commands_unknown(
        tmp_path: Path, sim: Simulator) -> None:
    """Somebody put a pack into a slot by hand while the board was changed: no order of
    the old robot's commands explains the count. The journal says only what it knows: the
    commands stay unknown, the shipments they picked for fail (their totes go to a
    person), the slot whose count differs is blocked."""
    daemon, _ = await _swap_mid_work(tmp_path, sim)
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    picks = [i for i in sched.ledger.log.planned() if i.motion is Motion.PICK]
    slot = picks[0].slot
    [p] = [p for p in daemon.dispensary.list_stock(limit=100000) if p.slot == slot][:1]
    sim.put_slot(slot, [{"gtin": p.drug_code, "batch": p.batch, "expiry": p.expiry.isoformat(),
                         "serial": "BYHAND1"}])
    fault = sched.faults.log.page(active=True)[0]
    await sched.ack_fault(fault.fault_id, TECH, "new board fitted")
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.MAINTENANCE)
    adopt = asyncio.create_task(sched.adopt(TECH, "controller board replaced"))
    await run_cycles(daemon, adopt.done)
    settlement = adopt.result()["settlement"]
    assert settlement["settled"] is False
    assert slot in settlement["discrepancies"]
    seqs = ",".join(str(i.seq) for i in picks)
    states = {r[0] for r in daemon.journal.query(
        f"SELECT state FROM robot_intents WHERE seq IN ({seqs})")}
    assert states == {"unknown"}
    for sid in {i.shipment_id for i in picks}:
        assert sid is not None
        assert daemon.dispensary.get_shipment(sid).state is ShipmentState.FAILED
    assert slot in {d.slot for d in daemon.dispensary.list_discrepancies()}
    await close(daemon)
