"""Output tasks picked by the tote planner against the in-process simulator: they take
their output before shipments that come after them, their packs reach their tote exactly
once across crashes around the pick and the hand-on, and a cancel while picking hands on
what the tote holds."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.core.states import ShipmentState, TaskState
from dispenser.core.tasks import TaskCriterion, TaskRequest
from dispenser.core.views import Actor
from dispenser.daemon.app import Daemon
from dispenser.daemon.demo import scan_of
from dispenser.daemon.robot import Motion
from dispenser.testing import drugs, order
from dispenser.testing.inprocess import (
    OSYS,
    STAFF,
    Crash,
    close,
    config_for,
    restart,
    run_cycles,
)
from firmware_sim import Simulator

IMS = Actor("wwks2:100@127.0.0.1", "wwks2")
CODES = [r["drug_code"] for r in drugs()["robot"][50:53]]


def task(key: str, code: str, n: int, output: int, priority: str = "normal") -> TaskRequest:
    return TaskRequest("wwks2_output", key, "f", output, priority,
                       (TaskCriterion(code, n, drug_code=code),))


async def _stocked(tmp_path: Path, sim: Simulator) -> Daemon:
    daemon = Daemon(config_for(tmp_path, sim))
    exp = (date.today() + timedelta(days=300)).isoformat()
    packs = [{"gtin": c, "batch": f"T{n}", "expiry": exp, "serial": f"TT{n}{i:02d}"}
             for n, c in enumerate(CODES) for i in range(8)]
    sim.put_input(packs)
    loads = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await run_cycles(daemon, lambda: all(f.done() for f in loads))
    return daemon


def _tote_serials(sim: Simulator, output: int | None = None) -> list[str]:
    ledger = sim.ledger()
    return sorted(p["serial"] for t in ledger["totes"] for p in t["packs"]
                  if output is None or t["output"] == output)


def _a_tote_holds(sim: Simulator, output: int, serials: list[str]) -> bool:
    """One tote handed on at ``output`` held exactly these packs."""
    return any(t["output"] == output and sorted(p["serial"] for p in t["packs"])
               == sorted(serials) for t in sim.ledger()["totes"])


def _done(daemon: Daemon, task_id: str) -> bool:
    return daemon.dispensary.get_task(task_id).state in (
        TaskState.COMPLETED, TaskState.INCOMPLETE, TaskState.ABORTED)


async def test_a_high_task_goes_before_normal_mail_orders(tmp_path: Path,
                                                          sim: Simulator) -> None:
    daemon = await _stocked(tmp_path, sim)
    d = daemon.dispensary
    daemon.machine.fire("pause")
    for i in range(6):
        d.submit(order(f"HT{i}", f"PHT{i}", [(CODES[0], 1)]), OSYS)
    d.form_shipments()
    high = d.create_task(task("100/1", CODES[1], 2, output=2, priority="high"), IMS)
    low = d.create_task(task("100/2", CODES[2], 1, output=3, priority="low"), IMS)
    daemon.machine.fire("resume")
    await run_cycles(daemon, lambda: bool(daemon.scheduler.totes.busy_outputs()))
    assert d.get_task(high.task_id).state is TaskState.IN_PROCESS
    assert d.get_task(low.task_id).state is TaskState.QUEUED
    # Shipments took the other outputs, output 3 last (a task waits for it).
    outputs = daemon.scheduler.totes.outputs_in_use()
    assert sorted(outputs) == [1, 3, 4] and 2 not in outputs
    await run_cycles(daemon, lambda: _done(daemon, high.task_id) and _done(daemon, low.task_id))
    done = d.get_task(high.task_id)
    assert done.state is TaskState.COMPLETED and len(done.packs) == 2
    assert _a_tote_holds(sim, 2, [p.serial or "" for p in done.packs])
    assert d.get_task(low.task_id).state is TaskState.COMPLETED
    started = [r[0] for r in d.journal.query(
        "SELECT subject FROM audit WHERE action IN ('task.in_process', 'shipment.picking') "
        "ORDER BY id")]
    assert started.index(low.task_id) == len(started) - 1  # after every normal shipment
    await close(daemon)


def _crash_at(daemon: Daemon, motion: Motion) -> None:
    real = daemon.scheduler.ledger.log.complete

    def complete(seq: int, completion: int, result: int, detail: int, now: str) -> None:
        intent = daemon.scheduler.ledger.log.get(seq)
        if intent is not None and intent.motion is motion and intent.task_id:
            raise Crash
        real(seq, completion, result, detail, now)

    daemon.scheduler.ledger.log.complete = complete  # type: ignore[method-assign]


@pytest.mark.parametrize("motion", [Motion.PICK, Motion.HAND_ON])
async def test_crash_while_applying_a_task_completion(tmp_path: Path, sim: Simulator,
                                                      motion: Motion) -> None:
    daemon = await _stocked(tmp_path, sim)
    t = daemon.dispensary.create_task(task("100/3", CODES[0], 3, output=1), IMS)
    _crash_at(daemon, motion)
    with pytest.raises(Crash):
        await run_cycles(daemon, lambda: False)
    daemon = await restart(daemon, tmp_path, sim)
    await run_cycles(daemon, lambda: _done(daemon, t.task_id))
    done = daemon.dispensary.get_task(t.task_id)
    assert done.state is TaskState.COMPLETED
    journal = sorted(p.serial or "" for p in done.packs)
    assert journal == _tote_serials(sim) and len(journal) == 3
    assert all(p.state.value == "dispensed" for p in done.packs)
    await close(daemon)


async def test_cancel_while_picking_hands_on_what_the_tote_holds(tmp_path: Path,
                                                                 sim: Simulator) -> None:
    daemon = await _stocked(tmp_path, sim)
    d = daemon.dispensary
    t = d.create_task(TaskRequest("wwks2_output", "100/4", "f", 1, "normal", (
        TaskCriterion(CODES[0], 1, drug_code=CODES[0]),
        TaskCriterion(CODES[1], 1, drug_code=CODES[1]))), IMS)
    picked: list[Any] = []

    def one_pick_done() -> bool:
        view = d.get_task(t.task_id)
        picked[:] = view.packs
        return bool(view.packs)

    await run_cycles(daemon, one_pick_done)
    view = d.cancel_task(t.task_id, IMS, "the customer left")
    finished: list[Any] = []
    daemon.scheduler.totes.tasks.on_finished.append(finished.append)
    await run_cycles(daemon, lambda: _done(daemon, t.task_id))
    done = d.get_task(t.task_id)
    assert view.state is TaskState.ABORTING and done.state is TaskState.ABORTED
    assert [p.serial for p in done.packs] == _tote_serials(sim)
    assert [f.task_id for f in finished] == [t.task_id]
    # Nothing of the task is left on the shelves' books as reserved.
    assert d.stock_level(CODES[0]) + d.stock_level(CODES[1]) == 16 - len(done.packs)
    assert not [v for v in d.list_shipments(limit=10) if v.state is ShipmentState.PICKING]
    await close(daemon)
