"""order.submit_batch goes a part at a time (in-process daemon, instant simulator): a
batch of 1,000 orders never holds the event loop for all of its checks and writes, and
when the journal fails half-way each order's answer says whether it was kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dispenser.api.auth import Identity
from dispenser.api.protocol import ErrorCode
from dispenser.api.registry import Caller
from dispenser.daemon.app import Daemon
from dispenser.daemon.methods.orders import SUBMIT_PART
from dispenser.testing import drugs, order
from dispenser.testing.inprocess import close, config_for
from firmware_sim import Simulator


def _caller() -> Caller:
    caller = Caller(7, "unix", None, lambda message: True)
    caller.authenticate(Identity("order_system", "order-system-1"))
    return caller


async def _submit_batch(daemon: Daemon, orders: list[dict[str, Any]]) -> Any:
    method = daemon.registry.get("order.submit_batch")
    assert method is not None
    return await method.handler({"orders": orders}, _caller())


def _orders(n: int, prefix: str) -> list[dict[str, Any]]:
    code = drugs()["robot"][0]["drug_code"]
    return [order(f"{prefix}{i}", f"P{prefix}{i}", [(code, 1)]) for i in range(n)]


async def test_a_large_batch_is_committed_a_part_at_a_time(
        tmp_path: Path, sim: Simulator) -> None:
    daemon = Daemon(config_for(tmp_path, sim))
    orders = _orders(1000, "LB")
    turns = 0

    async def other_work() -> None:  # what else the loop serves meanwhile
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    watcher = asyncio.create_task(other_work())
    before = daemon.commit.calls
    try:
        out = await _submit_batch(daemon, orders)
    finally:
        watcher.cancel()
    assert [r["order_id"] for r in out["results"]] == [o["order_id"] for o in orders]
    assert all("error" not in r for r in out["results"])
    assert daemon.commit.calls - before == 1000 // SUBMIT_PART
    assert turns >= 1000 // SUBMIT_PART - 1  # the loop turned between the parts
    n = daemon.journal.query_one("SELECT count(*) FROM orders")[0]
    assert n == 1000
    # One audit row for the call, as before.
    rows = daemon.journal.query_one(
        "SELECT count(*) FROM audit WHERE action = 'api.order.submit_batch'")[0]
    assert rows == 1
    await close(daemon)


async def test_the_journal_failing_half_way_keeps_what_was_answered_accepted(
        tmp_path: Path, sim: Simulator) -> None:
    daemon = Daemon(config_for(tmp_path, sim))
    j = daemon.journal
    j.retry_s = 3600.0
    orders = _orders(3 * SUBMIT_PART, "JF")
    parts = 0
    real_run = daemon.commit.run

    async def run(fn: Any) -> Any:  # the journal fills up after the first part
        nonlocal parts
        parts += 1
        if parts == 2:
            conn = j.conn
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return await real_run(fn)

    daemon.commit.run = run  # type: ignore[method-assign]
    out = (await _submit_batch(daemon, orders))["results"]
    kept = [r["order_id"] for r in out if "state" in r]
    refused = [r for r in out if "error" in r]
    assert kept == [o["order_id"] for o in orders[:SUBMIT_PART]]
    assert len(refused) == 2 * SUBMIT_PART
    assert {r["error"]["code"] for r in refused} == {int(ErrorCode.JOURNAL_UNAVAILABLE)}
    assert all("not kept" in r["error"]["retry"] for r in refused)
    j.conn.execute("PRAGMA max_page_count = 1073741823")
    stored = {oid for (oid,) in j.query("SELECT order_id FROM orders")}
    assert stored == set(kept)  # what was answered accepted is there, nothing else
    await close(daemon)
