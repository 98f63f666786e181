"""The journal stops taking writes while the robot picks (in-process daemon, instant
simulator, the journal capped with ``max_page_count`` on the daemon's own connection).

The daemon latches a ``journal`` fault (held in memory: it cannot be journaled either),
sends nothing more, and leaves the completions it cannot record in the robot's ring; when
the journal takes writes again it records the fault, applies those completions once each,
and after the acknowledgement finishes the work: every ordered pack picked exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispenser.api.auth import Identity
from dispenser.api.registry import Caller, Outcome
from dispenser.core.views import Actor
from dispenser.daemon.app import Daemon
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.robot import Motion
from dispenser.journal import JournalUnavailable
from dispenser.testing.inprocess import (
    check_picks,
    close,
    config_for,
    picking_done,
    prepare,
    run_cycles,
)
from firmware_sim import Simulator

STAFF = Actor("test-staff", "staff")


def _cap(daemon: Daemon) -> None:
    conn = daemon.journal.conn
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    conn.execute(f"PRAGMA max_page_count = {pages}")


def _uncap(daemon: Daemon) -> None:
    daemon.journal.conn.execute("PRAGMA max_page_count = 1073741823")


async def test_completions_wait_in_the_ring_while_the_journal_is_full(
        tmp_path: Path, sim: Simulator) -> None:
    daemon, orders = await prepare(tmp_path, sim)  # stock loaded at once (instant)
    sim.robot.instant, sim.robot.speed = False, 20.0  # picks take time from here on
    daemon.journal.retry_s = 0.05
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: sum(i.motion is Motion.PICK
                                      for i in sched.ledger.outstanding.values()) >= 6)
    _cap(daemon)
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    (fault,) = daemon.scheduler.faults.log.page(active=True)
    assert fault.kind == "journal" and not fault.journaled, fault
    assert "could not grow" in fault.message and fault.message.endswith(
        "then acknowledge this fault")
    # Given nothing new, the robot finishes what it had; the completions wait in its ring.
    accepted = sim.ledger()["robot"]["last_accepted_seq"]

    def robot_idle() -> bool:
        st = sched.status
        return st is not None and st.queue_depth == 0 and st.executing_seq == 0
    await run_cycles(daemon, robot_idle)
    assert sched.status is not None
    waiting = sched.status.completion_count - sched.ledger.log.applied_completion()
    assert waiting > 0, "no completion was left for later: the outage came too late"
    assert sim.ledger()["robot"]["last_accepted_seq"] == accepted, "sent while parked"
    assert daemon.machine.state is ControllerState.FAULT

    _uncap(daemon)
    await run_cycles(daemon, lambda: not daemon.scheduler.faults.log.held)
    (fault,) = daemon.scheduler.faults.log.page(active=True)
    assert fault.journaled and fault.kind == "journal"
    await run_cycles(daemon, lambda: sched.ledger.log.applied_completion()
                  == (sched.status.completion_count if sched.status else -1))
    await sched.ack_fault(fault.fault_id, STAFF, "freed space")
    await run_cycles(daemon, lambda: picking_done(daemon))
    check_picks(daemon, sim, orders)  # every pack once: none lost, none applied twice
    result = daemon.journal.verify()
    assert result.ok, result
    await close(daemon)


async def test_an_answered_call_whose_audit_row_meets_a_full_journal_keeps_the_row(
        tmp_path: Path, sim: Simulator) -> None:
    """The call was answered before its audit row was written (a pause changes no journal
    row); the journal failed in between: the row waits in memory, then is written."""
    daemon = Daemon(config_for(tmp_path, sim))
    j = daemon.journal
    j.retry_s = 3600.0
    _cap(daemon)
    with pytest.raises(JournalUnavailable), j.transaction():
        j.audit("t", "test", "technician", "test.fill", "x", None, {"blob": "x" * 100_000})
    caller = Caller(7, "unix", None, lambda message: True)
    caller.authenticate(Identity("staff", "packing-desk-1"))
    await daemon._audit_hook(caller, "machine.pause", {"reason": "lunch"}, Outcome(ok=True))
    assert daemon.journal_status()["held_audit_rows"] == 1
    _uncap(daemon)
    j.retry_s = 0.0
    assert j.check_available() is None
    await asyncio.sleep(0.01)  # the row is written on the loop, right after the probe
    assert daemon.journal_status()["held_audit_rows"] == 0
    row = j.query_one("SELECT actor, role, action FROM audit WHERE action = 'api.machine.pause'")
    assert tuple(row) == ("packing-desk-1", "staff", "api.machine.pause")
    assert j.verify().ok
    await close(daemon)


def _fail_once(daemon: Daemon) -> None:
    """Fill the capped journal with one write too many: from now on the journal refuses
    writes until a probe passes (not before ``retry_s``)."""
    j = daemon.journal
    with pytest.raises(JournalUnavailable), j.transaction():
        j.audit("t", "test", "technician", "test.fill", "x", None, {"blob": "x" * 100_000})


async def test_a_label_printed_while_the_journal_is_full_is_recorded_later_not_reprinted(
        tmp_path: Path, sim: Simulator) -> None:
    daemon, orders = await prepare(tmp_path, sim)
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: bool(daemon.desk.pending))
    daemon.journal.retry_s = 3600.0
    _cap(daemon)
    _fail_once(daemon)
    await run_cycles(daemon, lambda: bool(sched._held_prints))
    for _ in range(50):  # the desk would print it again and again if it were told it failed
        await sched.cycle()
        await asyncio.sleep(0.005)
    printed = [label["zpl"] for label in sim.ledger()["labels"] if label["printed"]]
    assert printed and len(printed) == len(set(printed)), "printed again during the outage"
    _uncap(daemon)
    daemon.journal.retry_s = 0.0
    await run_cycles(daemon, lambda: not sched._held_prints and not sched.faults.log.held)
    (fault,) = daemon.scheduler.faults.log.page(active=True)
    await sched.ack_fault(fault.fault_id, STAFF, "freed space")

    def all_completed() -> bool:
        return all(daemon.dispensary.get_order(o["order_id"]).state.value == "completed"
                   for o in orders)
    await run_cycles(daemon, all_completed)
    check_picks(daemon, sim, orders)
    labels = [label["zpl"] for label in sim.ledger()["labels"] if label["printed"]]
    assert len(labels) == len(set(labels)) == 2 * len(orders), "a label printed twice"
    await close(daemon)
