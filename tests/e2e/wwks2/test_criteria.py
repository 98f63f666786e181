"""What an OutputRequest's Criteria select on the real machine: BatchNumber,
MinimumExpiryDate, SingleBatchNumber, PackId (exactly that pack, or nothing), and
SubItemQuantity (packs computed from the pack size)."""

from __future__ import annotations

import math
from datetime import date, timedelta

from dispenser.testing import Sim, drugs, load_packs, pack
from dispenser.testing.ims_client import ImsClient
from dispenser.testing.wwks2 import (
    Wwks2Daemon,
    check_totes_match_journal,
    criteria,
    output,
    packs_of,
    status_of,
)

TODAY = date.today()
ROWS = drugs()["robot"][44:46]
A, B = (r["drug_code"] for r in ROWS)
B_SIZE = int(ROWS[1]["pack_size"])


async def _dispense(ims: ImsClient, task_id: str, article: str, quantity: int,
                    **more: object) -> tuple[str | None, list[dict[str, str]]]:
    response = await output(ims, task_id, criteria(article, quantity, **more))
    assert status_of(response) == "Queued", response.raw
    done = await ims.expect("OutputMessage", task_id, timeout=30)
    return status_of(done), packs_of(done)


async def test_criteria_select_the_packs(daemon: Wwks2Daemon, sim: Sim) -> None:
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    early, late = TODAY + timedelta(days=100), TODAY + timedelta(days=300)
    await load_packs(sim, staff, [
        *(pack(A, "AE", early, f"AE{i}") for i in range(2)),
        *(pack(A, "AL", late, f"AL{i}") for i in range(4)),
        *(pack(B, "BB", late, f"BB{i}") for i in range(4))])
    ims = await daemon.ims()
    try:
        stock = await ims.request("StockInfoRequest")
        ids = {p.get("SerialNumber"): p.get("Id") for p in stock.lead.iter("Pack")}

        # One batch for all: the earlier batch has too few, so the later one serves.
        status, packs = await _dispense(ims, "C1", A, 3, SingleBatchNumber="True")
        assert status == "Completed" and {p["BatchNumber"] for p in packs} == {"AL"}
        status, packs = await _dispense(ims, "C2", A, 1, BatchNumber="AE")
        assert [p["SerialNumber"] for p in packs] == ["AE0"]
        status, packs = await _dispense(ims, "C3", A, 1,
                                        MinimumExpiryDate=str(TODAY + timedelta(days=200)))
        assert [p["SerialNumber"] for p in packs] == ["AL3"]  # not the earlier AE1
        # A PackId is that pack, when the robot can take it (the first of its slot) ...
        status, packs = await _dispense(ims, "C4", B, 1, PackId=ids["BB0"])
        assert (status, [p["Id"] for p in packs]) == ("Completed", [ids["BB0"]])
        # ... and nothing when packs stored before it are in the way.
        status, packs = await _dispense(ims, "C5", B, 1, PackId=ids["BB3"])
        assert (status, packs) == ("Incomplete", [])
        # SubItemQuantity: packs enough for that many units, Quantity ignored.
        status, packs = await _dispense(ims, "C6", B, 0, SubItemQuantity=B_SIZE + 1)
        assert status == "Completed" and len(packs) == math.ceil((B_SIZE + 1) / B_SIZE)
        # A criterion for the rest of A asking more than there is: what there is.
        status, packs = await _dispense(ims, "C7", A, 5)
        assert status == "Incomplete" and [p["SerialNumber"] for p in packs] == ["AE1"]
        await check_totes_match_journal(staff, sim)
    finally:
        await ims.close()
        await staff.close()
