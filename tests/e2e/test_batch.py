"""A mixed batch, end to end, checked against the simulator's ledger pack by pack.

The pharmacist's checklist:

- orders of one patient to one address merge into one shipment (one tote, one label);
- stock leaves first-expiry-first-out, across batches;
- a batch that expired while in stock never leaves; a recalled batch never leaves;
- an order failing a check is held; a held order released is dispensed, one rejected is not;
- an order cancelled before picking is not dispensed;
- a fridge item is added by hand and scanned; the shipment completes only then;
- the packs in the totes are exactly those the journal records, and the packs left in the
  robot's slots are exactly those the journal has in stock.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.testing import (
    Daemon,
    Sim,
    check_invariant,
    dispensed,
    drugs,
    load_packs,
    order,
    pack,
    scan,
    wait_for,
)

TODAY = date.today()


def _serials(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


async def _order_states(client: ApiClient, ids: list[str]) -> dict[str, str]:
    return {oid: (await client.call("order.get", {"order_id": oid}))["state"] for oid in ids}


async def test_mixed_batch(daemon: Daemon, sim: Sim) -> None:
    d = drugs()
    x, y, z, w = (r["drug_code"] for r in d["robot"][:4])
    f = d["fridge"][0]["drug_code"]

    # 1. Sixty days ago a batch of X was loaded that has expired since.
    daemon.env = {"DISPENSERD_CLOCK_OFFSET_DAYS": "-60"}
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    expired = [pack(x, "EXP", TODAY - timedelta(days=5), s) for s in _serials("E", 2)]
    loaded = await load_packs(sim, staff, expired)
    assert [p["state"] for p in loaded] == ["in_stock"] * 2
    await staff.close()
    assert daemon.stop() == 0

    # 2. Today: more stock, a recall, then the orders.
    daemon.env = {}
    daemon.start()
    staff = await daemon.client("staff")
    osys = await daemon.client("order_system")
    try:
        await daemon.wait_ready(staff)
        stock = ([pack(x, "X1", TODAY + timedelta(days=100), s) for s in _serials("XA", 3)]
                 + [pack(x, "X2", TODAY + timedelta(days=300), s) for s in _serials("XB", 3)]
                 + [pack(y, "Y1", TODAY + timedelta(days=200), s) for s in _serials("YA", 4)]
                 + [pack(y, "RC", TODAY + timedelta(days=150), s) for s in _serials("YR", 4)]
                 + [pack(z, "Z1", TODAY + timedelta(days=250), s) for s in _serials("ZA", 5)]
                 + [pack(w, "W1", TODAY + timedelta(days=250), s) for s in _serials("WA", 3)])
        loaded = await load_packs(sim, staff, stock)
        assert all(p["state"] == "in_stock" for p in loaded)
        # A pack that expired is refused at loading, and never reaches the robot.
        with pytest.raises(ApiError) as err:
            await staff.call("stock.load", {"scan": scan(pack(x, "OLD", TODAY - timedelta(
                days=1), "OLD1"))})
        assert err.value.code == ErrorCode.LOAD_REFUSED and err.value.data["reason"] == "expired"
        assert (await staff.call("stock.quarantine", {"drug_code": y, "batch": "RC",
                                                      "reason": "recall R-1"}))[
            "quarantined"] == 4

        orders = [
            order("A1", "P1", [(x, 2)]),
            order("A2", "P1", [(z, 1)]),                       # merges with A1
            order("B1", "P2", [(y, 2)]),                       # Y1, never the recalled RC
            order("C1", "P3", [(x, 2)]),                       # rest of X1, then X2
            order("H1", "P4", [(w, 1)], diagnoses=("I10",)),   # held, then released
            order("H2", "P5", [(w, 1)], diagnoses=("I10",)),   # held, then rejected
            order("K1", "P6", [(z, 1)]),                       # cancelled at once
            order("F1", "P7", [(z, 1), (f, 1)]),               # fridge item by hand
            order("D1", "P2", [(y, 1)], prescription="RX-B1"),  # duplicate: stays held
        ]
        batch = await osys.call("order.submit_batch", {"orders": orders})
        states = {r["order_id"]: r["state"] for r in batch["results"]}
        assert states["H1"] == states["H2"] == "held"
        assert states["A1"] == "received"
        await osys.call("order.cancel", {"order_id": "K1", "reason": "patient request"})
        # Submitting A1 again is a safe retry; other content under its id is a conflict.
        again = await osys.call("order.submit", {"order": orders[0]})
        assert again["order_id"] == "A1"
        with pytest.raises(ApiError) as err:
            await osys.call("order.submit", {"order": {**orders[0], "priority": "high"}})
        assert err.value.code == ErrorCode.CONFLICT
        await staff.call("order.release", {"order_id": "H1", "reason": "checked"})
        await staff.call("order.reject", {"order_id": "H2", "reason": "not eligible"})

        # The fridge item is scanned once its shipment is waiting for it.
        async def f1_labelling() -> dict[str, Any] | None:
            o = await staff.call("order.get", {"order_id": "F1"})
            return o if o["state"] == "labelling" else None
        f1 = await wait_for(f1_labelling, 30, what="F1 labelling")
        fridge_pack = pack(f, "FR1", TODAY + timedelta(days=90), "FRIDGE01")
        sh = await staff.call("shipment.confirm_manual", {"shipment_id": f1["shipment_id"],
                                                          "scan": scan(fridge_pack)})
        assert sh["manual_picks"][0]["confirmed"] == 1

        done = ["A1", "A2", "B1", "C1", "H1", "F1"]

        async def finished() -> bool:
            s = await _order_states(staff, done)
            return all(v == "completed" for v in s.values())
        await wait_for(finished, 30, what="orders completed")

        final = await _order_states(staff, [o["order_id"] for o in orders])
        assert final == {"A1": "completed", "A2": "completed", "B1": "completed",
                         "C1": "completed", "H1": "completed", "H2": "rejected",
                         "K1": "cancelled", "F1": "completed", "D1": "held"}
        a1 = await staff.call("order.get", {"order_id": "A1"})
        a2 = await staff.call("order.get", {"order_id": "A2"})
        assert a1["shipment_id"] == a2["shipment_id"], "A1 and A2 were not merged"

        await check_invariant(staff, sim, require_final=False)
        by_shipment = await dispensed(staff)
        sent = [p for packs in by_shipment.values() for p in packs]
        batches = sorted(p[1] for p in sent if p[0] == x)
        assert batches == ["X1", "X1", "X1", "X2"], "X did not leave first-expiry-first-out"
        assert sorted(p[1] for p in sent if p[0] == y) == ["Y1", "Y1"]
        assert not any(p[1] in ("EXP", "RC") for p in sent)
        # The fridge pack went into the box by hand: recorded, not in the robot's tote.
        f1_sh = await staff.call("shipment.get", {"shipment_id": f1["shipment_id"]})
        assert [p["serial"] for p in f1_sh["manual_packs"]] == ["FRIDGE01"]

        ledger = await sim.ledger()
        labels = [lb for lb in ledger["labels"] if lb.get("printed")]
        completed = {s for s in by_shipment} | {f1["shipment_id"]}
        assert len(labels) >= 2 * len(completed), "a label or packing slip is missing"
        tech = await daemon.client("technician")
        assert (await tech.call("audit.verify"))["ok"] is True
        await tech.close()
        logged = daemon.log_path.read_text()
        for secret in ("Test Patient", "Test Street", "5550000"):
            assert secret not in logged, f"patient data in the log: {secret}"
    finally:
        await staff.close()
        await osys.close()
