"""Exactly once across a crash at every point of a command's life.

The daemon is driven cycle by cycle against the in-process simulator (instant motions). A
crash is an exception that escapes the cycle at a chosen point; the "restarted" daemon is a
new ``Daemon`` on the same journal file. After the restart every ordered pack is picked
exactly once: the packs in the totes (the simulator's truth) are exactly the packs the
journal records for each shipment, serial by serial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispenser.daemon.app import Daemon
from dispenser.daemon.robot import Motion
from dispenser.testing.inprocess import (
    Crash,
    check_picks,
    close,
    picking_done,
    prepare,
    restart,
    run_cycles,
)
from firmware_sim import Simulator


def _crash_on_pick_queue(daemon: Daemon, send_first: bool) -> None:
    robot = daemon.scheduler.robot
    real = robot.queue

    async def queue(commands: Any) -> None:
        if any(c.motion is Motion.PICK for c in commands):
            if send_first:
                await real(commands)
            raise Crash
        await real(commands)

    robot.queue = queue  # type: ignore[method-assign]


@pytest.mark.parametrize("send_first", [False, True],
                         ids=["journaled-not-sent", "sent-reply-lost"])
async def test_crash_around_the_write(tmp_path: Path, sim: Simulator, send_first: bool) -> None:
    daemon, orders = await prepare(tmp_path, sim)
    _crash_on_pick_queue(daemon, send_first)
    with pytest.raises(Crash):
        await run_cycles(daemon, lambda: False)
    planned = daemon.scheduler.ledger.log.planned()
    assert planned and all(i.motion is Motion.PICK for i in planned)
    daemon = await restart(daemon, tmp_path, sim)
    await run_cycles(daemon, lambda: picking_done(daemon))
    states = {i.state for i in (daemon.scheduler.ledger.log.get(p.seq) for p in planned) if i}
    assert states == ({"void"} if not send_first else {"done"})
    check_picks(daemon, sim, orders)
    await close(daemon)


@pytest.mark.parametrize("where", ["after-read", "mid-apply"])
async def test_crash_around_the_completions(tmp_path: Path, sim: Simulator, where: str) -> None:
    daemon, orders = await prepare(tmp_path, sim)
    sched = daemon.scheduler
    picks_seen = 0
    if where == "after-read":
        real_read = sched.robot.read_completions

        async def read(after: int, count: int) -> Any:
            got = await real_read(after, count)
            pending = sched.ledger.outstanding
            if any(c.seq in pending and pending[c.seq].motion is Motion.PICK for c in got):
                raise Crash
            return got

        sched.robot.read_completions = read  # type: ignore[method-assign]
    else:
        real_complete = daemon.scheduler.ledger.log.complete

        def complete(seq: int, completion: int, result: int, detail: int, now: str) -> None:
            nonlocal picks_seen
            intent = daemon.scheduler.ledger.log.get(seq)
            if intent is not None and intent.motion is Motion.PICK:
                picks_seen += 1
                if picks_seen == 2:  # the first pick's effect is in the same commit
                    raise Crash
            real_complete(seq, completion, result, detail, now)

        daemon.scheduler.ledger.log.complete = complete  # type: ignore[method-assign]
    cursor_before = daemon.scheduler.ledger.log.applied_completion()
    with pytest.raises(Crash):
        await run_cycles(daemon, lambda: False)
    # Nothing of the crashed cycle's completions reached the journal.
    assert daemon.scheduler.ledger.log.applied_completion() == cursor_before
    daemon = await restart(daemon, tmp_path, sim)
    await run_cycles(daemon, lambda: picking_done(daemon))
    check_picks(daemon, sim, orders)
    await close(daemon)


async def test_crash_while_completing_a_handed_on_shipment(tmp_path: Path,
                                                           sim: Simulator) -> None:
    """Handing the tote on and completing the shipment are one transaction: a crash in
    between undoes both, and the restart applies the RELEASE_TOTE completion again."""
    daemon, orders = await prepare(tmp_path, sim)
    real = daemon.scheduler.totes.maybe_complete

    def complete(shipment_id: str) -> bool:
        record = daemon.scheduler.totes.log.get(shipment_id)
        if record is not None and record.handed_on:  # right after the hand-on, same tx
            raise Crash
        return real(shipment_id)

    daemon.scheduler.totes.maybe_complete = complete  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await run_cycles(daemon, lambda: False)
    daemon = await restart(daemon, tmp_path, sim)

    def all_completed() -> bool:
        return all(daemon.dispensary.get_order(o["order_id"]).state.value == "completed"
                   for o in orders)
    await run_cycles(daemon, all_completed)
    check_picks(daemon, sim, orders)
    await close(daemon)
