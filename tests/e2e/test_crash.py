"""dispenserd killed (SIGKILL) or stopped (SIGTERM) in the middle of a batch, restarted,
finishes the batch with the same result: every order completed with exactly its packs, no
pack picked twice or lost, the journal agreeing with the robot's ledger pack by pack."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from dispenser.api.client import ApiClient
from dispenser.testing import (
    Daemon,
    Sim,
    check_invariant,
    drugs,
    list_all,
    load_packs,
    order,
    pack,
    wait_for,
)

TODAY = date.today()


@pytest.fixture
def sim(workdir: Path) -> object:
    # Motions take time here, so the daemon dies with commands queued and in motion.
    s = Sim(workdir, instant=False, speed=40)
    s.start()
    yield s
    s.stop()


async def test_sigkill_mid_batch_then_restart_finishes_the_same(daemon: Daemon,
                                                                 sim: Sim) -> None:
    rng = random.Random(20261128)
    codes = [r["drug_code"] for r in drugs()["robot"][10:16]]
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    orders = []
    for i in range(30):
        items = [(c, rng.choice((1, 1, 2))) for c in rng.sample(codes, rng.choice((1, 2)))]
        orders.append(order(f"K{i:03d}", f"PK{i:03d}", items))
    need = Counter(code for o in orders for i in o["items"]
                   for code in [i["drug_code"]] * i["quantity"])
    # Enough for every order, in two batches per drug (the sooner-expiring one goes first).
    stock = [pack(code, f"B{n}{k}", TODAY + timedelta(days=100 + 50 * k), f"S{n}{k}{i:03d}")
             for n, code in enumerate(codes) for k in range(2)
             for i in range((need[code] + 1 + k) // 2 + 1)]
    await load_packs(sim, staff, stock)
    osys = await daemon.client("order_system")
    result = await osys.call("order.submit_batch", {"orders": orders})
    assert all("error" not in r for r in result["results"])
    await osys.close()
    await staff.close()

    # Kill it twice and stop it once, at different moments of the picking.
    for kill in range(3):
        staff = await daemon.client("staff")
        target = 4 + kill * 6

        async def progressed(t: int = target, c: ApiClient = staff) -> bool:
            shipments = await list_all(c, "shipment.list")
            return sum(s["state"] == "completed" for s in shipments) >= t
        await wait_for(progressed, 60, what=f"{target} shipments completed")
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        await staff.close()
        if kill == 1:
            # A clean stop in between: the motion in progress finishes, nothing is left
            # queued in the robot, every completion is recorded.
            assert daemon.stop() == 0
            status = await sim.call("sim.status")
            assert status["robot"]["queue_depth"] == 0
            assert "dispenserd stopped" in daemon.log_tail(5)
        else:
            daemon.kill()
        daemon.start()

    staff = await daemon.client("staff")
    try:
        async def all_done() -> bool:
            page = await staff.call("order.list", {"limit": 1000})
            return all(o["state"] == "completed" for o in page["items"])
        await wait_for(all_done, 90, what="every order completed")

        # Each order got exactly what it asked for.
        for o in orders:
            got = await staff.call("order.get", {"order_id": o["order_id"]})
            sh = await staff.call("shipment.get", {"shipment_id": got["shipment_id"]})
            mine = Counter(p["drug_code"] for p in sh["packs"] if p["order_id"] == o["order_id"])
            assert mine == Counter({i["drug_code"]: i["quantity"] for i in o["items"]}), \
                o["order_id"]
        await check_invariant(staff, sim, require_final=False)
        ledger = await sim.ledger()
        # Nothing fell or vanished, and every pack loaded is in a slot or a released tote.
        assert not ledger["dropped"] and not ledger["jammed"]
        in_totes = sum(len(t["packs"]) for t in ledger["totes"])
        in_slots = sum(len(v) for v in ledger["slots"].values())
        assert in_totes + in_slots == len(stock)
        assert all(not v["packs"] for v in ledger["outputs"].values())
        tech = await daemon.client("technician")
        assert (await tech.call("audit.verify"))["ok"] is True
        await tech.close()
    finally:
        await staff.close()
