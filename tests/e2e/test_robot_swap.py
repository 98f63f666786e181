"""A robot's controller board replaced in the middle of a day's work, handled as a
technician would: the daemon stops and changes nothing, the technician acknowledges the
fault and adopts the robot with ``dispenserctl robot adopt``, the slots are counted, the
work goes on, and the journal equals the simulator's ledger pack by pack at the end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dispenser.testing import BIN, TOKENS, Stack, list_all, wait_for
from dispenser.testing.campaigns.dayload import Loader, day_plan, pharmacist_review, stock_for

pytestmark = pytest.mark.slow


def _ctl(stack: Stack, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPENSER_SOCKET": str(stack.daemon.socket),
           "DISPENSER_TOKEN": TOKENS[role]}
    return subprocess.run([str(BIN / "dispenserctl"), *args], env=env, text=True,
                          capture_output=True, timeout=240, check=False)


async def _journal(staff: Any) -> list[tuple[Any, ...]]:
    packs = await list_all(staff, "stock.list", {"state": None}, "pack_id")
    ships = await list_all(staff, "shipment.list", {}, "shipment_id")
    return ([(p["pack_id"], p["state"], p["slot"], p["shipment_id"]) for p in packs]
            + [(s["shipment_id"], s["state"], s["picked"]) for s in ships])


@pytest.mark.timeout(300)
async def test_a_board_replaced_mid_work_is_adopted_and_nothing_is_lost(
        tmp_path: Path) -> None:
    plan = day_plan(40, 4242, fridge=0.0, merge_gap=(1, 3))
    stock = stock_for(plan, margin=1.5, extra=2)
    stack = Stack(tmp_path / "work", instant=True)
    try:
        await stack.start()
        loader = Loader(await stack.client("staff"), stack.sim)
        await loader.load(stock)
        await loader.wait_stored()
        await stack.restart_sim(instant=False, speed=30.0)  # motions take time now
        staff = await stack.client("staff")
        osys = await stack.client("order_system")
        for o in plan.orders:
            await osys.call("order.submit", {"order": o})

        async def picking() -> bool:
            st = await staff.call("machine.status")
            return bool(st["shipments"].get("picking", 0) >= 2
                        and st["robot"]["queue_depth"] > 0)
        await wait_for(picking, 60, what="picks in the robot's queue")
        await stack.sim.replace_board()

        async def mismatch() -> Any:
            page = await staff.call("fault.list", {"active": True})
            return [f for f in page["items"] if f["kind"] == "robot_mismatch"]
        [fault] = await wait_for(mismatch, 30, what="the robot_mismatch fault")
        before = await _journal(staff)
        await asyncio.sleep(1.0)
        assert await _journal(staff) == before  # stopped: nothing changes
        assert (await stack.sim.ledger())["robot"]["last_accepted_seq"] == 0

        # The acknowledgement leads to maintenance mode; resuming is refused until the
        # robot is adopted.
        acked = _ctl(stack, "staff", "ack", str(fault["fault_id"]), "--note", "board swapped")
        assert acked.returncode == 0, acked.stderr
        st = await staff.call("machine.status")
        assert st["state"] == "maintenance"
        assert st["robot_adoption"]["state"] == "waiting"
        resumed = _ctl(stack, "staff", "resume")
        assert resumed.returncode != 0 and "robot adopt" in resumed.stderr
        assert await _journal(staff) == before

        adopted = _ctl(stack, "technician", "robot", "adopt", "--note", "new board")
        assert adopted.returncode == 0, adopted.stderr
        assert "robot adopted" in adopted.stdout and "settled by the counts" in \
            adopted.stdout, adopted.stdout
        shown = json.loads(_ctl(stack, "technician", "status", "--json").stdout)
        assert shown["robot_adoption"] is None
        left = _ctl(stack, "technician", "maintenance", "off")
        assert left.returncode == 0, left.stderr

        async def settled() -> bool:
            st = await staff.call("machine.status")
            open_orders = sum(n for s, n in st["orders"].items()
                              if s not in ("completed", "rejected", "cancelled", "failed",
                                           "held"))
            return open_orders == 0 and not st["shipments"].get("picking") and not \
                st["shipments"].get("labelling") and not st["shipments"].get("queued")
        await wait_for(settled, 120, interval=0.2, what="every order picked")
        await pharmacist_review(staff)
        await wait_for(settled, 60, interval=0.2, what="every order final")
        await stack.check_invariant()
    finally:
        await stack.stop()
