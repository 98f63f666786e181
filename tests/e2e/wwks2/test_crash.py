"""dispenserd killed (SIGKILL) between OutputRequest and OutputMessage, twice, while mail
orders are picked too: every output task is dispensed exactly once and never forgotten.
After the restart TaskInfo answers from the journal, the reconnecting pharmacy software
gets every OutputMessage it missed, and the robot's ledger agrees with the journal pack
by pack."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from dispenser.testing import (
    Sim,
    drugs,
    list_all,
    load_packs,
    order,
    pack,
    wait_for,
)
from dispenser.testing.ims_client import E, ImsClient, Received
from dispenser.testing.wwks2 import (
    Wwks2Daemon,
    check_stock_matches_slots,
    check_totes_match_journal,
    criteria,
    output,
    packs_of,
    status_of,
)

TODAY = date.today()
CODES = [r["drug_code"] for r in drugs()["robot"][60:66]]


@pytest.fixture
def sim(workdir: Path) -> Iterator[Sim]:
    # Motions take time, so the daemon dies with picks queued, in motion and done.
    s = Sim(workdir, instant=False, speed=40)
    s.start()
    yield s
    s.stop()


def _outcomes(frames: list[Received]) -> dict[str, list[Received]]:
    found: dict[str, list[Received]] = {}
    for f in frames:
        if f.tag == "OutputMessage":
            found.setdefault(f.id or "", []).append(f)
    return found


async def _until_ready(ims: ImsClient) -> None:
    """As the pharmacy software does after it reconnects: StatusRequest until Ready (a
    restarted dispenserd rejects outputs until its robot link is up again)."""
    async def ready() -> bool:
        return (await ims.request("StatusRequest")).lead.get("State") == "Ready"
    await wait_for(ready, 60, interval=0.05, what="WWKS2 status Ready after the restart")


async def test_sigkill_between_output_and_output_message(daemon: Wwks2Daemon,
                                                         sim: Sim) -> None:
    rng = random.Random(20261203)
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    stock = [pack(code, f"K{n}{k}", TODAY + timedelta(days=120 + 60 * k), f"K{n}{k}{i:02d}")
             for n, code in enumerate(CODES) for k in range(2) for i in range(6)]
    await load_packs(sim, staff, stock)
    osys = await daemon.client("order_system")
    await osys.call("order.submit_batch", {"orders": [
        order(f"KM{i}", f"PKM{i}", [(rng.choice(CODES), 1)]) for i in range(10)]})
    await osys.close()
    await staff.close()

    asked: dict[str, int] = {}
    frames: list[Received] = []
    ims = await daemon.ims(100)
    for kill in range(2):
        for n in range(6):
            task_id = f"{kill}{n:02d}"
            count = rng.choice((1, 2, 3))
            asked[task_id] = count
            response = await output(ims, task_id, criteria(rng.choice(CODES), count),
                                    destination=rng.randint(1, 4),
                                    priority=rng.choice(("Normal", "High")))
            assert status_of(response) == "Queued"
        await asyncio.sleep(rng.uniform(0.2, 0.6) if kill else 0.0)
        open_tasks = [t for t in asked if t not in _outcomes(ims.frames)]
        assert open_tasks, "every task finished before the kill: nothing was tested"
        daemon.kill()
        frames += ims.frames
        await ims.close()
        daemon.start()
        ims = await daemon.ims(100)  # the reconnecting pharmacy software
        await _until_ready(ims)

    staff = await daemon.client("staff")
    try:
        def heard() -> dict[str, list[Received]]:
            return _outcomes(frames + ims.frames)

        async def all_heard() -> bool:
            return set(heard()) == set(asked)
        await wait_for(all_heard, 120, what="an OutputMessage for every task")

        # Never forgotten, never twice: one outcome per task (a repeat says the same).
        for task_id, messages in heard().items():
            first = messages[0]
            assert status_of(first) in ("Completed", "Incomplete"), first.raw
            assert all(packs_of(m) == packs_of(first) for m in messages), task_id
            assert len(packs_of(first)) <= asked[task_id]
            # TaskInfo answers from the journal, with the same packs.
            info = await ims.request("TaskInfoRequest", E("Task", Type="Output", Id=task_id),
                                     IncludeTaskDetails="True")
            task = info.lead.find("Task")
            assert task is not None and task.get("Status") == status_of(first)
            assert packs_of(info) == packs_of(first)

        async def mail_done() -> bool:
            return all(s["state"] == "completed" for s in await list_all(staff, "shipment.list"))
        await wait_for(mail_done, 120, what="every shipment completed")
        by_task = await check_totes_match_journal(staff, sim)
        serials = {task_id: sorted(p["SerialNumber"] for p in packs_of(m[0]))
                   for task_id, m in heard().items() if packs_of(m[0])}
        tasks = {t["key"].split("/", 1)[1]: t["task_id"] for t in
                 (await staff.call("task.list", {"limit": 1000}))["items"]}
        assert serials == {k: by_task[tasks[k]] for k in serials}
        await check_stock_matches_slots(staff, sim)
        ledger = await sim.ledger()
        assert not ledger["dropped"] and not ledger["jammed"]
        in_totes = sum(len(t["packs"]) for t in ledger["totes"])
        in_slots = sum(len(v) for v in ledger["slots"].values())
        assert in_totes + in_slots == len(stock)
        listed = (await staff.call("task.list", {"limit": 1000}))["items"]
        assert all(t["reported"] for t in listed)
        tech = await daemon.client("technician")
        assert (await tech.call("audit.verify"))["ok"] is True
        await tech.close()
    finally:
        await staff.close()
        await ims.close()
