"""dispenserd in the test's own event loop, driven cycle by cycle against the in-process
simulator (instant motions): for tests that crash it at a chosen point of a command's life
and "restart" it as a new ``Daemon`` on the same journal file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dispenser.config import Config, parse_config
from dispenser.core.states import ShipmentState
from dispenser.core.views import Actor
from dispenser.daemon.app import Daemon
from dispenser.daemon.demo import scan_of
from dispenser.testing.data import FORMULARY, drugs, order
from firmware_sim import Simulator

__all__ = ["OSYS", "STAFF", "Crash", "check_picks", "close", "config_for", "picking_done",
           "prepare", "restart", "run_cycles"]

STAFF = Actor("test-staff", "staff")
OSYS = Actor("test-order-system", "order_system")


class Crash(BaseException):
    """The daemon dies here (not an Exception: the working loop must not catch it)."""


def config_for(tmp_path: Path, sim: Simulator) -> Config:
    return parse_config({
        "journal": {"path": str(tmp_path / "journal.sqlite")},
        "api": {"socket": str(tmp_path / "api.sock")},
        "robot": {"port": sim.tcp_port, "timeout_s": 0.5, "watchdog_ms": 60000},
        "printer": {"url": sim.printer_device, "timeout_s": 0.5},
        "formulary": {"path": str(FORMULARY)},
        "stock": {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10},
        "policy": {"merge_window_s": 0.0},
    })


async def run_cycles(daemon: Daemon, until: Callable[[], bool], limit: int = 1000) -> None:
    if not hasattr(daemon, "_desk_task"):
        daemon._desk_task = asyncio.create_task(daemon.desk.run())  # type: ignore[attr-defined]
    for _ in range(limit):
        await daemon.scheduler.cycle()
        if until():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the daemon did not get there")


async def prepare(tmp_path: Path, sim: Simulator) -> tuple[Daemon, list[dict[str, Any]]]:
    daemon = Daemon(config_for(tmp_path, sim))
    codes = [r["drug_code"] for r in drugs()["robot"][40:44]]
    packs = [{"gtin": c, "batch": f"L{n}", "expiry": (date.today() + timedelta(days=200))
              .isoformat(), "serial": f"EO{n}{i:02d}"} for n, c in enumerate(codes)
             for i in range(6)]
    sim.put_input(packs)
    futures = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await run_cycles(daemon, lambda: all(f.done() for f in futures))
    assert all(f.result().state.value == "in_stock" for f in futures)
    orders = [order(f"EO{i}", f"PEO{i}", [(codes[i % 4], 2), (codes[(i + 1) % 4], 1)])
              for i in range(6)]
    for o in orders:
        daemon.dispensary.submit(o, OSYS)
    return daemon, orders


def picking_done(daemon: Daemon) -> bool:
    d = daemon.dispensary
    views = d.list_shipments(limit=1000)
    return bool(views) and all(v.state in (ShipmentState.LABELLING, ShipmentState.COMPLETED)
                               for v in views)


def check_picks(daemon: Daemon, sim: Simulator, orders: list[dict[str, Any]]) -> None:
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


async def close(daemon: Daemon) -> None:
    daemon.desk.stop()
    task = getattr(daemon, "_desk_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await daemon.robot.close()
    await daemon.printer.close()
    daemon.journal.close()


async def restart(old: Daemon, tmp_path: Path, sim: Simulator) -> Daemon:
    await close(old)
    return Daemon(config_for(tmp_path, sim))
