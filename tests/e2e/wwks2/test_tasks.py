"""Output tasks waiting for their output among mail-order shipments (real dispenserd and
dispenser-sim): TaskInfo while queued, TaskCancel (Cancelled, then OutputMessage Aborted;
CancelError once finished; Unknown), the reservations a queued task and queued shipments
hold (NotAvailable in StockInfo), and the order
in which tasks and shipments get outputs (a High counter request before normal mail
orders, a Low one after them)."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

from dispenser.testing import Sim, drugs, list_all, load_packs, order, pack, wait_for
from dispenser.testing.ims_client import E, ImsClient
from dispenser.testing.wwks2 import (
    Wwks2Daemon,
    check_totes_match_journal,
    criteria,
    output,
    packs_of,
    status_of,
)

TODAY = date.today()
D, T = (r["drug_code"] for r in drugs()["robot"][30:32])


async def _task_status(ims: ImsClient, task_id: str) -> str | None:
    info = await ims.request("TaskInfoRequest", E("Task", Type="Output", Id=task_id))
    task = info.lead.find("Task")
    return None if task is None else task.get("Status")


async def test_queued_tasks_cancel_and_take_turns_with_shipments(daemon: Wwks2Daemon,
                                                                 sim: Sim) -> None:
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    exp = TODAY + timedelta(days=200)
    await load_packs(sim, staff, [pack(D, "D1", exp, f"D{i:02d}") for i in range(12)]
                     + [pack(T, "T1", exp, f"T{i:02d}") for i in range(6)])
    events: list[dict[str, Any]] = []
    watcher = await daemon.client("staff")

    async def watch() -> None:
        async for event in watcher.subscribe(["shipment", "task"]):
            events.append(event)

    watching = asyncio.create_task(watch())
    osys = await daemon.client("order_system")
    ims = await daemon.ims(100)
    try:
        # No paper: four urgent shipments are picked and wait for their labels at all
        # four outputs, so outputs stay busy.
        await sim.call("sim.inject", {"fault": "paper_out"})
        for i in range(4):
            await osys.call("order.submit", {"order": order(f"U{i}", f"PU{i}", [(D, 1)],
                                                            priority="urgent")})

        async def outputs_busy() -> bool:
            st = await staff.call("machine.status")
            return all(o["shipment_id"] for o in st["outputs"])
        await wait_for(outputs_busy, 30, what="four totes waiting for labels")

        # A task waits for its output: Queued in TaskInfo, its pack reserved.
        assert status_of(await output(ims, "700", criteria(T, 1), destination=1)) == "Queued"
        assert await _task_status(ims, "700") == "Queued"
        stock = await ims.request("StockInfoRequest", E("Criteria", ArticleId=T))
        states = [p.get("State") for p in stock.lead.iter("Pack")]
        assert sorted(states) == ["Available"] * 5 + ["NotAvailable"]
        # Cancelled, then OutputMessage Aborted with no pack (after the response).
        cancel = await ims.request("TaskCancelRequest", E("Task", Type="Output", Id="700"),
                                   E("Task", Type="Output", Id="nope"))
        assert [t.get("Status") for t in cancel.lead.findall("Task")] == [
            "Cancelled", "Unknown"]
        aborted = await ims.expect("OutputMessage", "700")
        assert status_of(aborted) == "Aborted" and packs_of(aborted) == []
        assert ims.frames.index(cancel) < ims.frames.index(aborted)
        assert await _task_status(ims, "700") == "Aborted"
        again = await ims.request("TaskCancelRequest", E("Task", Type="Output", Id="700"))
        assert again.lead.find("Task").get("Status") == "CancelError"  # type: ignore[union-attr]
        stock = await ims.request("StockInfoRequest", E("Criteria", ArticleId=T))
        assert {p.get("State") for p in stock.lead.iter("Pack")} == {"Available"}

        # Turns: normal mail orders, a High request for output 2, a Low one for output 3.
        for i in range(4):
            await osys.call("order.submit", {"order": order(f"N{i}", f"PN{i}", [(D, 1)])})

        async def queued() -> bool:
            return sum(s["state"] == "queued" for s in await list_all(staff, "shipment.list")) == 4
        await wait_for(queued, 30, what="four normal shipments queued")
        # Packs reserved for those shipments are not offered to the pharmacy software.
        stock = await ims.request("StockInfoRequest", E("Criteria", ArticleId=D))
        states = [p.get("State") for p in stock.lead.iter("Pack")]
        assert sorted(states) == ["Available"] * 4 + ["NotAvailable"] * 4
        assert status_of(await output(ims, "701", criteria(T, 2), destination=2,
                                      priority="High")) == "Queued"
        assert status_of(await output(ims, "702", criteria(T, 1), destination=3,
                                      priority="Low")) == "Queued"
        await sim.call("sim.clear", {"fault": "paper_out"})
        high = await ims.expect("OutputMessage", "701", timeout=60)
        low = await ims.expect("OutputMessage", "702", timeout=60)
        assert status_of(high) == status_of(low) == "Completed"
        assert {p["OutputDestination"] for p in packs_of(high)} == {"2"}

        async def all_done() -> bool:
            return all(s["state"] == "completed" for s in await list_all(staff, "shipment.list"))
        await wait_for(all_done, 60, what="every shipment completed")
        started = [e.get("task_id") or e["shipment_id"] for e in events
                   if e.get("state") in ("picking", "in_process")]
        normal = [s["shipment_id"] for s in await list_all(staff, "shipment.list")
                  if s["order_ids"][0].startswith("N")]
        tasks = {t["key"]: t["task_id"] for t in
                 (await staff.call("task.list"))["items"]}
        at = {k: started.index(v) for k, v in (("701", tasks["100/701"]),
                                              ("702", tasks["100/702"]))}
        last_normal = max(started.index(s) for s in normal)
        first_normal = min(started.index(s) for s in normal)
        assert at["701"] < last_normal, started  # before normal mail orders waiting
        assert at["702"] > last_normal, started  # after every one of them
        assert first_normal < at["702"]
        await check_totes_match_journal(staff, sim)
    finally:
        watching.cancel()
        for c in (watcher, osys, staff):
            await c.close()
        await ims.close()
