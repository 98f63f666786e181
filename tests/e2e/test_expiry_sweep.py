"""The expiry sweep end to end (issue 8), real processes: packs loaded, then the daemon
restarted with a longer ``min_shelf_life_days`` so that some of them are near expiry
(loading refuses short-dated packs, so they are aged this way), the sweep run through
``dispenserctl sweep``, its tote handed on; the ledger invariant holds with every swept
pack ``disposed`` in the one destruction tote and the journal agreeing; an order for the
swept drug is then held ``stock_short``. And a SIGKILL in the middle of a sweep: after the
restart nothing is picked twice or lost."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError, ErrorCode
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
from dispenser.testing.cli import Machine

TODAY = date.today()
ROBOT = [r["drug_code"] for r in drugs()["robot"]]


async def _task_packs(client: ApiClient, task_id: str) -> list[dict[str, Any]]:
    task = await client.call("task.get", {"task_id": task_id})
    return [p for ln in task["lines"] for p in ln["packs"]]


async def _wait_finished(client: ApiClient, task_ids: list[str], timeout: float = 120) -> None:
    async def finished() -> bool:
        states = [(await client.call("task.get", {"task_id": t}))["state"] for t in task_ids]
        return all(s in ("completed", "incomplete", "aborted") for s in states)
    await wait_for(finished, timeout, what=f"sweep tasks {task_ids} finished")


async def _check_destruction_totes(client: ApiClient, sim: Sim, swept: set[str],
                                   task_ids: list[str]) -> None:
    """Each task's packs are disposed and in exactly one handed-on tote, that tote holds
    exactly them; no swept serial is anywhere else."""
    ledger = await sim.ledger()
    totes = {t["tote"]: {p["serial"] for p in t["packs"]} for t in ledger["totes"]}
    seen: set[str] = set()
    for task_id in task_ids:
        packs = await _task_packs(client, task_id)
        assert packs and {p["state"] for p in packs} == {"disposed"}, packs
        serials = {p["serial"] for p in packs}
        holding = [tote for tote, held in totes.items() if held & serials]
        assert len(holding) == 1 and totes[holding[0]] == serials, (task_id, holding)
        seen |= serials
    assert seen == swept
    for s, ps in ledger["slots"].items():
        assert not swept & {p["serial"] for p in ps}, f"slot {s} still holds swept packs"
    for o, t in ledger["outputs"].items():
        assert not swept & {p["serial"] for p in t["packs"]}, f"output {o} holds swept packs"


async def test_sweep_through_the_cli_disposes_near_expiry_stock(daemon: Daemon, sim: Sim,
                                                                 workdir: Path) -> None:
    drug, other = ROBOT[20], ROBOT[21]
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    soon = [pack(drug, "SW-SOON", TODAY + timedelta(days=60), f"SWS{i}") for i in range(3)]
    other_soon = [pack(other, "SW-OTHER", TODAY + timedelta(days=75), f"SWO{i}")
                  for i in range(2)]
    lasting = [pack(other, "SW-LONG", TODAY + timedelta(days=400), f"SWL{i}")
               for i in range(2)]
    await load_packs(sim, staff, soon + other_soon + lasting)
    near = (await staff.call("stock.list", {"near_expiry": True}))["items"]
    assert near == []  # 30 days of shelf life: all fit
    await staff.close()

    # Ninety days of shelf life from now on: SOON and OTHER serve no order any more.
    assert daemon.stop() == 0
    daemon.min_shelf_life_days = 90
    daemon.start()
    staff = await daemon.client("staff")
    try:
        await daemon.wait_ready(staff)
        near = (await staff.call("stock.list", {"near_expiry": True}))["items"]
        swept = {p["serial"] for p in soon + other_soon}
        assert {p["serial"] for p in near} == swept

        # Paused, so that the second sweep surely meets the first one under way.
        await staff.call("machine.pause", {"reason": "expiry sweep"})
        machine = Machine(sim, daemon)
        ran = machine.ctl("sweep", "--output", "2", "--json")
        assert ran.code == 0, ran
        result = json.loads(ran.out)
        assert result["swept"] == 5 and result["left"] == []
        assert {p["serial"] for p in result["packs"]} == swept
        task_ids = [t["task_id"] for t in result["tasks"]]
        assert len(task_ids) == 1 and result["tasks"][0]["purpose"] == "destruction"
        assert result["tasks"][0]["output"] == 2

        with pytest.raises(ApiError) as refused:
            await staff.call("stock.sweep", {"output": 1})
        assert refused.value.code == ErrorCode.WRONG_STATE
        assert refused.value.data["task_ids"] == task_ids
        shown = machine.ctl("sweep", "--output", "1")
        assert shown.code == 1 and "under way" in shown.err, shown

        await staff.call("machine.resume")
        await _wait_finished(staff, task_ids)
        task = await staff.call("task.get", {"task_id": task_ids[0]})
        assert task["state"] == "completed"
        report = await check_invariant(staff, sim)
        assert report.packs_disposed == 5 and report.packs_dispensed == 0
        await _check_destruction_totes(staff, sim, swept, task_ids)
        disposed = await list_all(staff, "stock.list", {"state": "disposed"}, "pack_id")
        assert {p["serial"] for p in disposed} == swept
        assert all(p["task_id"] == task_ids[0] and p["shipment_id"] is None for p in disposed)
        status = await staff.call("machine.status")
        assert status["stock"]["near_expiry"] == 0 and status["stock"]["in_stock"] == 2

        # Nothing left to sweep: a clear answer, no task.
        again = machine.ctl("sweep", "--output", "2")
        assert again.code == 0 and "nothing to sweep" in again.out, again
        assert len(await list_all(staff, "task.list", {"purpose": "destruction"},
                                  "task_id")) == 1

        # The swept drug is short now; the other is served from the lasting batch.
        osys = await daemon.client("order_system")
        await osys.call("order.submit", {"order": order("SW-1", "PSW1", [(drug, 1)])})
        await osys.call("order.submit", {"order": order("SW-2", "PSW2", [(other, 1)])})
        await osys.close()

        async def decided() -> bool:
            one = await staff.call("order.get", {"order_id": "SW-1"})
            two = await staff.call("order.get", {"order_id": "SW-2"})
            return one["state"] == "held" and two["state"] == "completed"
        await wait_for(decided, 60, what="SW-1 held, SW-2 completed")
        held = await staff.call("order.get", {"order_id": "SW-1"})
        assert [h["code"] for h in held["hold_reasons"]] == ["stock_short"]
        served = await staff.call("shipment.get", {
            "shipment_id": (await staff.call("order.get", {"order_id": "SW-2"}))["shipment_id"]})
        assert [p["batch"] for p in served["packs"]] == ["SW-LONG"]
        await staff.call("order.cancel", {"order_id": "SW-1", "reason": "test over"})
        await check_invariant(staff, sim)

        tech = await daemon.client("technician")
        assert (await tech.call("audit.verify"))["ok"] is True
        await tech.close()
    finally:
        await staff.close()


@pytest.fixture
def slow_sim(workdir: Path) -> Any:
    # Motions take time here, so the daemon dies with picks queued, in motion and done.
    s = Sim(workdir, instant=False, speed=40)
    s.start()
    yield s
    s.stop()


async def test_sigkill_mid_sweep_picks_nothing_twice(workdir: Path, slow_sim: Sim) -> None:
    sim = slow_sim
    daemon = Daemon(workdir, sim)
    codes = ROBOT[30:34]
    stock = [pack(code, f"K{n}", TODAY + timedelta(days=60 + n), f"K{n}{i:02d}")
             for n, code in enumerate(codes) for i in range(5)]
    keep = [pack(code, f"L{n}", TODAY + timedelta(days=300), f"L{n}{i:02d}")
            for n, code in enumerate(codes[:2]) for i in range(2)]
    try:
        daemon.start()
        staff = await daemon.client("staff")
        await daemon.wait_ready(staff)
        await load_packs(sim, staff, stock + keep)
        await staff.close()
        assert daemon.stop() == 0
        daemon.min_shelf_life_days = 90
        daemon.start()
        staff = await daemon.client("staff")
        await daemon.wait_ready(staff)
        result = await staff.call("stock.sweep", {"output": 3})
        task_ids = [t["task_id"] for t in result["tasks"]]
        swept = {p["serial"] for p in result["packs"]}
        assert swept == {p["serial"] for p in stock}

        async def some_picked() -> bool:
            task = await staff.call("task.get", {"task_id": task_ids[0]})
            return bool(task["picked"])
        await wait_for(some_picked, 60, what="the sweep's first picks")
        task = await staff.call("task.get", {"task_id": task_ids[0]})
        assert task["state"] == "in_process" and task["to_pick"], task
        await staff.close()
        daemon.kill()

        daemon.start()
        staff = await daemon.client("staff")
        # Taken up again: the same sweep, not a new one.
        with pytest.raises(ApiError) as refused:
            await staff.call("stock.sweep", {"output": 3})
        assert refused.value.code == ErrorCode.WRONG_STATE
        await asyncio.sleep(0.3)
        daemon.kill()  # and once more, wherever it got to

        daemon.start()
        staff = await daemon.client("staff")
        await _wait_finished(staff, task_ids)
        assert [(await staff.call("task.get", {"task_id": t}))["state"]
                for t in task_ids] == ["completed"]
        report = await check_invariant(staff, sim)
        assert report.packs_disposed == len(stock)
        await _check_destruction_totes(staff, sim, swept, task_ids)
        ledger = await sim.ledger()
        assert not ledger["dropped"] and not ledger["jammed"]
        in_slots = {p["serial"] for ps in ledger["slots"].values() for p in ps}
        assert in_slots == {p["serial"] for p in keep}
        handed_on = [p["serial"] for t in ledger["totes"] for p in t["packs"]]
        assert sorted(handed_on) == sorted(swept)  # each exactly once
        tech = await daemon.client("technician")
        assert (await tech.call("audit.verify"))["ok"] is True
        await tech.close()
        await staff.close()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log_tail()
