"""Chaos: while a batch is picked at speed, the robot jams, drops packs, is stopped, its
door opened, its link cut, the printer runs out of paper, and dispenserd is SIGKILLed; a
simulated person clears each fault and acknowledges it. Every order still completes with
exactly its packs and the journal agrees with the robot's ledger."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.api.protocol import ApiError
from dispenser.testing import (
    Daemon,
    Sim,
    check_invariant,
    drugs,
    load_packs,
    order,
    pack,
    wait_for,
)


@pytest.fixture
def sim(workdir: Path) -> object:
    s = Sim(workdir, instant=False, speed=60)
    s.start()
    yield s
    s.stop()


async def _person(daemon: Daemon, sim: Sim, stop: asyncio.Event) -> None:
    """Clears whatever stopped the machine, then acknowledges the fault."""
    while not stop.is_set():
        await asyncio.sleep(0.3)
        with contextlib.suppress(OSError, ConnectionError, ApiError, TimeoutError):
            client = await daemon.client("staff")
            try:
                for f in (await client.call("fault.list", {"active": True}))["items"]:
                    await sim.call("sim.clear")
                    with contextlib.suppress(ApiError):
                        await client.call("fault.ack", {"fault_id": f["fault_id"]})
            finally:
                await client.close()


@pytest.mark.slow
async def test_chaos(daemon: Daemon, sim: Sim) -> None:
    rng = random.Random(4)
    daemon.link_fault_after_s = 1.0
    codes = [r["drug_code"] for r in drugs()["robot"][110:116]]
    orders = []
    for i in range(40):
        items = [(c, rng.choice((1, 1, 2))) for c in rng.sample(codes, rng.choice((1, 2)))]
        orders.append(order(f"X{i:03d}", f"PX{i:03d}", items))
    need = Counter(c for o in orders for i in o["items"] for c in [i["drug_code"]] * i["quantity"])
    stock = [pack(code, f"B{n}{k}", date.today() + timedelta(days=100 + 50 * k), f"X{n}{k}{i:03d}")
             for n, code in enumerate(codes) for k in range(2)
             for i in range((need[code] + 1 + k) // 2 + 3)]
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    await load_packs(sim, staff, stock)
    await staff.call("order.submit_batch", {"orders": orders})
    await staff.close()
    stop = asyncio.Event()
    person = asyncio.create_task(_person(daemon, sim, stop))
    happened: list[str] = []
    try:
        for event in ("jam", "kill", "dropped", "link_down", "estop", "paper_out", "kill",
                      "door_open", "jam"):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            happened.append(event)
            if event == "kill":
                daemon.kill()
                daemon.start()
                continue
            params: dict[str, Any] = {"fault": event}
            if event == "jam":
                params["after_picks"] = 0
            if event == "link_down":
                params["seconds"] = 1.5
            await sim.call("sim.inject", params)
            if event == "paper_out":
                await asyncio.sleep(0.5)
                await sim.call("sim.clear", {"fault": "paper_out"})
        staff = await daemon.client("staff")

        async def all_done() -> bool:
            page = await staff.call("order.list", {"limit": 1000})
            return all(o["state"] == "completed" for o in page["items"])
        await wait_for(all_done, 90, what="every order completed")
        stop.set()
        await person
        for o in orders:
            got = await staff.call("order.get", {"order_id": o["order_id"]})
            sh = await staff.call("shipment.get", {"shipment_id": got["shipment_id"]})
            mine = Counter(p["drug_code"] for p in sh["packs"] if p["order_id"] == o["order_id"])
            assert mine == Counter({i["drug_code"]: i["quantity"] for i in o["items"]})
        await check_invariant(staff, sim, require_final=False)
        ledger = await sim.ledger()
        lost = {p["serial"] for p in ledger["jammed"] + ledger["dropped"]}
        recorded = set()
        for state in ("missing", "dropped"):
            page = await staff.call("stock.list", {"state": state, "limit": 1000})
            recorded |= {p["serial"] for p in page["items"]}
        assert lost == recorded, "a pack lost in a fault is not recorded as lost"
        faults = (await staff.call("fault.list", {"limit": 1000}))["items"]
        assert faults and all(not f["active"] for f in faults)
        await staff.close()
    finally:
        stop.set()
        person.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await person
