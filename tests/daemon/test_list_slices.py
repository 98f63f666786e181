"""A list page of up to 1,000 orders, shipments or tasks is read a slice at a time (in-process
daemon): the same items as one read, the loop given back between the slices."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dispenser.api.auth import Identity
from dispenser.api.registry import Caller
from dispenser.daemon.app import Daemon
from dispenser.daemon.methods.base import LIST_SLICE
from dispenser.testing import drugs, order
from dispenser.testing.inprocess import OSYS, close, config_for
from firmware_sim import Simulator


async def _call(daemon: Daemon, name: str, params: dict[str, Any]) -> Any:
    method = daemon.registry.get(name)
    assert method is not None
    caller = Caller(7, "unix", None, lambda message: True)
    caller.authenticate(Identity("staff", "desk-1"))
    return await method.handler(params, caller)


async def test_lists_are_read_in_slices_with_the_same_items(
        tmp_path: Path, sim: Simulator) -> None:
    daemon = Daemon(config_for(tmp_path, sim))
    d = daemon.dispensary
    code = drugs()["robot"][0]["drug_code"]
    n = 2 * LIST_SLICE + 50
    d.submit_many([order(f"LS{i:04d}", f"PLS{i:04d}", [(code, 1)]) for i in range(n)], OSYS)
    d.form_shipments()
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    watcher = asyncio.create_task(other_work())
    try:
        orders = await _call(daemon, "order.list", {"limit": 1000})
        turns_orders = turns
        shipments = await _call(daemon, "shipment.list", {"limit": 1000})
        part = await _call(daemon, "order.list", {"limit": LIST_SLICE + 10,
                                                  "after": "LS0005"})
    finally:
        watcher.cancel()
    assert [o["order_id"] for o in orders["items"]] == [
        v.order_id for v in d.list_orders(limit=1000)]
    assert len(orders["items"]) == n and orders["next"] is None
    assert turns_orders >= 1  # three slices: the loop turned between them (0 in one read)
    assert [s["shipment_id"] for s in shipments["items"]] == [
        v.shipment_id for v in d.list_shipments(limit=1000)]
    assert len(shipments["items"]) == n
    assert [o["order_id"] for o in part["items"]] == [
        f"LS{i:04d}" for i in range(6, 6 + LIST_SLICE + 10)]
    assert part["next"] == part["items"][-1]["order_id"]
    await close(daemon)
