"""A client that floods the API cannot stall the machine (issue 8).

The daemon and the simulator run as processes (``bench/stack.py``). One connection sends
20,000 pipelined requests at once while the machine dispenses; the checks are the ones
that need no clock: every request is answered, in order; other connections are answered
meanwhile; the robot's watchdog never expired (the simulator counts expiries, so a
late controller shows even after the daemon reset the robot); no fault; the journal still
matches the robot's ledger pack by pack. Latency figures come from ``bench/api_flood.py``.

The robot's watchdog is shortened to 600 ms (the daemon refreshes it every 150 ms) so that
a flood that holds the event loop shows quickly: before the fix, one connection's 20,000
pipelined ``machine.status`` held the loop for about 2 s on an empty journal and the
robot stopped waiting for the controller.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.stack import TOKENS, DaemonOptions, Stack, scan, wait_for
from dispenser.api.client import ApiClient
from tests.e2e.harness import drugs, order, pack

FLOOD = 20_000


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="flood", dir="/tmp"))
    s = Stack(workdir, instant=True, daemon=DaemonOptions(watchdog_ms=600))
    try:
        await s.start()
        yield s
    finally:
        await s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def pipeline(stack: Stack, role: str | None, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send every line at once on one connection (after a login), then read every reply."""
    reader, writer = await asyncio.open_unix_connection(str(stack.api_socket),
                                                        limit=64 * 1024 * 1024)
    try:
        if role is not None:
            login = {"jsonrpc": "2.0", "id": "login", "method": "auth.login",
                     "params": {"token": TOKENS[role]}}
            writer.write(json.dumps(login).encode() + b"\n")
            assert "result" in json.loads(await reader.readline())
        writer.write(b"".join(lines))
        replies: list[dict[str, Any]] = []

        async def read() -> None:
            while len(replies) < len(lines):
                line = await reader.readline()
                assert line, f"connection closed after {len(replies)} of {len(lines)} replies"
                message = json.loads(line)
                if "id" in message:  # not an event
                    replies.append(message)

        await asyncio.gather(writer.drain(), read())
        return replies
    finally:
        writer.close()


async def pinger(client: ApiClient, stop: asyncio.Event) -> int:
    pongs = 0
    while not stop.is_set():
        assert (await client.call("system.ping", timeout=120))["pong"] is True
        pongs += 1
        await asyncio.sleep(0.005)
    return pongs


async def test_pipelined_flood_answers_in_order_and_never_starves_the_robot(
        stack: Stack) -> None:
    staff = await stack.client("staff")
    orders_client = await stack.client("order_system")
    codes = [r["drug_code"] for r in drugs()["robot"][200:204]]
    expiry = date.today() + timedelta(days=400)
    packs = [pack(code, f"FL{k}", expiry, f"FLOOD{k}{i:03d}")
             for k, code in enumerate(codes) for i in range(6)]
    await stack.sim.put_input(packs)
    for p in packs:
        await staff.call("stock.load", {"scan": scan(p), "wait": True}, timeout=60)
    expiries_before = (await stack.sim.status())["robot"]["watchdog_expiries"]

    lines = [json.dumps({"jsonrpc": "2.0", "id": i, "method": "machine.status"}).encode()
             + b"\n" for i in range(FLOOD)]
    orders = [order(f"FLOOD-{k}", f"P-FL{k}", [(codes[k % len(codes)], 1)])
              for k in range(8)]
    stop = asyncio.Event()
    watcher = asyncio.create_task(pinger(await stack.client(None), stop))
    flood = asyncio.create_task(pipeline(stack, "order_system", lines))
    # The machine dispenses while the flood runs: orders arrive on another connection.
    for o in orders:
        await orders_client.call("order.submit", {"order": o}, timeout=120)
    replies = await flood
    stop.set()
    pongs = await watcher

    assert [r["id"] for r in replies] == list(range(FLOOD))
    assert all("result" in r and r["result"]["state"] for r in replies)
    assert pongs > 0

    async def dispensed() -> bool:
        page = await staff.call("order.list", {"state": "completed"})
        return len(page["items"]) == len(orders)
    await wait_for(dispensed, 60, what="the orders to be dispensed")

    status = await stack.sim.status()
    assert status["robot"]["watchdog_expiries"] == expiries_before, (
        "the robot's watchdog expired: the controller was held up")
    assert status["robot"]["state"] != "CONTROLLER_LOST"
    faults = (await staff.call("fault.list"))["items"]
    assert faults == [], faults
    assert "stopped waiting for the controller" not in stack.daemon_log.read_text()
    await stack.check_invariant()
