"""Exactly once across a crash at every point of a command's life.

The daemon is driven cycle by cycle against the in-process simulator (instant motions). A
crash is an exception that escapes the cycle at a chosen point; the "restarted" daemon is a
new ``Daemon`` on the same journal file. After the restart every ordered pack is picked
exactly once: the packs in the totes (the simulator's truth) are exactly the packs the
journal records for each shipment, serial by serial.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.config import Config, parse_config
from dispenser.core.states import ShipmentState
from dispenser.core.views import Actor
from dispenser.daemon.app import Daemon
from dispenser.daemon.demo import scan_of
from dispenser.daemon.robot import Motion
from firmware_sim import Simulator
from tests.e2e.harness import FORMULARY, drugs, order

STAFF = Actor("test-staff", "staff")
OSYS = Actor("test-order-system", "order_system")


class Crash(BaseException):
    """The daemon dies here (not an Exception: the working loop must not catch it)."""


def _config(tmp_path: Path, sim: Simulator) -> Config:
    return parse_config({
        "journal": {"path": str(tmp_path / "journal.sqlite")},
        "api": {"socket": str(tmp_path / "api.sock")},
        "robot": {"port": sim.tcp_port, "timeout_s": 0.5, "watchdog_ms": 60000},
        "printer": {"url": sim.printer_device, "timeout_s": 0.5},
        "formulary": {"path": str(FORMULARY)},
        "stock": {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10},
        "policy": {"merge_window_s": 0.0},
    })


async def _cycles(daemon: Daemon, until: Callable[[], bool], limit: int = 1000) -> None:
    if not hasattr(daemon, "_desk_task"):
        daemon._desk_task = asyncio.create_task(daemon.desk.run())  # type: ignore[attr-defined]
    for _ in range(limit):
        await daemon.scheduler.cycle()
        if until():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the daemon did not get there")


async def _prepare(tmp_path: Path, sim: Simulator) -> tuple[Daemon, list[dict[str, Any]]]:
    daemon = Daemon(_config(tmp_path, sim))
    codes = [r["drug_code"] for r in drugs()["robot"][40:44]]
    packs = [{"gtin": c, "batch": f"L{n}", "expiry": (date.today() + timedelta(days=200))
              .isoformat(), "serial": f"EO{n}{i:02d}"} for n, c in enumerate(codes)
             for i in range(6)]
    sim.put_input(packs)
    futures = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await _cycles(daemon, lambda: all(f.done() for f in futures))
    assert all(f.result().state.value == "in_stock" for f in futures)
    orders = [order(f"EO{i}", f"PEO{i}", [(codes[i % 4], 2), (codes[(i + 1) % 4], 1)])
              for i in range(6)]
    for o in orders:
        daemon.dispensary.submit(o, OSYS)
    return daemon, orders


def _picking_done(daemon: Daemon) -> bool:
    d = daemon.dispensary
    views = d.list_shipments(limit=1000)
    return bool(views) and all(v.state in (ShipmentState.LABELLING, ShipmentState.COMPLETED)
                               for v in views)


def _check(daemon: Daemon, sim: Simulator, orders: list[dict[str, Any]]) -> None:
    ledger = sim.ledger()
    in_totes = sorted(p["serial"] for t in ledger["outputs"].values() for p in t["packs"])
    in_totes += sorted(p["serial"] for t in ledger["totes"] for p in t["packs"])
    journal: list[str] = []
    for v in daemon.dispensary.list_shipments(limit=1000):
        journal += [p.serial or "" for p in v.picked]
        want = sum(i["quantity"] for o in orders if o["order_id"] in v.order_ids
                   for i in o["items"])
        assert len(v.picked) == want, v.shipment_id
    assert sorted(journal) == sorted(in_totes)
    assert len(set(journal)) == len(journal), "a pack picked twice"
    assert not ledger["dropped"] and not ledger["jammed"]


async def _close(daemon: Daemon) -> None:
    daemon.desk.stop()
    task = getattr(daemon, "_desk_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await daemon.robot.close()
    await daemon.printer.close()
    daemon.journal.close()


async def _restart(old: Daemon, tmp_path: Path, sim: Simulator) -> Daemon:
    await _close(old)
    return Daemon(_config(tmp_path, sim))


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
    daemon, orders = await _prepare(tmp_path, sim)
    _crash_on_pick_queue(daemon, send_first)
    with pytest.raises(Crash):
        await _cycles(daemon, lambda: False)
    planned = daemon.scheduler.ledger.log.planned()
    assert planned and all(i.motion is Motion.PICK for i in planned)
    daemon = await _restart(daemon, tmp_path, sim)
    await _cycles(daemon, lambda: _picking_done(daemon))
    states = {i.state for i in (daemon.scheduler.ledger.log.get(p.seq) for p in planned) if i}
    assert states == ({"void"} if not send_first else {"done"})
    _check(daemon, sim, orders)
    await _close(daemon)


@pytest.mark.parametrize("where", ["after-read", "mid-apply"])
async def test_crash_around_the_completions(tmp_path: Path, sim: Simulator, where: str) -> None:
    daemon, orders = await _prepare(tmp_path, sim)
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
        await _cycles(daemon, lambda: False)
    # Nothing of the crashed cycle's completions reached the journal.
    assert daemon.scheduler.ledger.log.applied_completion() == cursor_before
    daemon = await _restart(daemon, tmp_path, sim)
    await _cycles(daemon, lambda: _picking_done(daemon))
    _check(daemon, sim, orders)
    await _close(daemon)


async def test_crash_while_completing_a_handed_on_shipment(tmp_path: Path,
                                                           sim: Simulator) -> None:
    """Handing the tote on and completing the shipment are one transaction: a crash in
    between undoes both, and the restart applies the RELEASE_TOTE completion again."""
    daemon, orders = await _prepare(tmp_path, sim)
    real = daemon.scheduler.totes.maybe_complete

    def complete(shipment_id: str) -> bool:
        record = daemon.scheduler.totes.log.get(shipment_id)
        if record is not None and record.handed_on:  # right after the hand-on, same tx
            raise Crash
        return real(shipment_id)

    daemon.scheduler.totes.maybe_complete = complete  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await _cycles(daemon, lambda: False)
    daemon = await _restart(daemon, tmp_path, sim)

    def all_completed() -> bool:
        return all(daemon.dispensary.get_order(o["order_id"]).state.value == "completed"
                   for o in orders)
    await _cycles(daemon, all_completed)
    _check(daemon, sim, orders)
    await _close(daemon)
