"""Staff and technician operations end to end: pause and resume, maintenance mode with the
self-test, diagnostics, an order of fridge items only, a stock load checked against the
robot's own input scanner."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.testing import Daemon, Sim, drugs, load_packs, order, pack, scan, wait_for

TODAY = date.today()


async def test_pause_maintenance_selftest_diagnostics(daemon: Daemon, sim: Sim) -> None:
    code = drugs()["robot"][50]["drug_code"]
    fridge = drugs()["fridge"][1]["drug_code"]
    daemon.start()
    staff = await daemon.client("staff")
    tech = await daemon.client("technician")
    osys = await daemon.client("order_system")
    try:
        await daemon.wait_ready(staff)
        loaded = await load_packs(sim, staff, [pack(code, "D1", TODAY + timedelta(days=99),
                                                    f"D1-{i}") for i in range(3)])
        slot = loaded[0]["slot"]

        # The pack on the input point must be the one scanned.
        await sim.call("sim.put_input", {"packs": [pack(code, "D2", TODAY + timedelta(
            days=120), "D2-1")]})
        with pytest.raises(ApiError) as err:
            await staff.call("stock.load", {"scan": scan(pack(code, "D2", TODAY + timedelta(
                days=120), "OTHER")), "wait": True})
        assert err.value.code == ErrorCode.LOAD_REFUSED
        assert err.value.data["reason"] == "input_mismatch"

        # Paused: orders wait; resumed: they go.
        await staff.call("machine.pause", {"reason": "tote change"})
        await osys.call("order.submit", {"order": order("Q1", "PQ1", [(code, 1)])})
        with pytest.raises(ApiError) as err:
            await staff.call("machine.pause")
        assert err.value.code == ErrorCode.WRONG_STATE
        assert (await staff.call("order.get", {"order_id": "Q1"}))["state"] in (
            "received", "queued")
        await staff.call("machine.resume")

        async def q1_done() -> bool:
            return bool((await staff.call("order.get", {"order_id": "Q1"}))["state"]
                        == "completed")
        await wait_for(q1_done, 20, what="Q1 completed")

        # Fridge items only: no tote, label printed, completes when scanned.
        await osys.call("order.submit", {"order": order("Q2", "PQ2", [(fridge, 2)])})

        async def q2_labelling() -> str | None:
            o = await staff.call("order.get", {"order_id": "Q2"})
            return o["shipment_id"] if o["state"] == "labelling" else None
        sid = await wait_for(q2_labelling, 20, what="Q2 labelling")
        for serial in ("FQ-1", "FQ-2"):
            sh = await staff.call("shipment.confirm_manual", {
                "shipment_id": sid, "scan": scan(pack(fridge, "FQ", TODAY + timedelta(days=60),
                                                      serial))})
        assert sh["output"] is None and sh["manual_picks"][0]["confirmed"] == 2

        async def q2_done() -> bool:
            return bool((await staff.call("order.get", {"order_id": "Q2"}))["state"]
                        == "completed")
        await wait_for(q2_done, 20, what="Q2 completed")  # once its label is printed too

        # Maintenance: the self-test moves the robot only here.
        with pytest.raises(ApiError) as err:
            await tech.call("diag.selftest", {"slot": slot})
        assert err.value.code == ErrorCode.WRONG_STATE
        assert (await tech.call("machine.maintenance", {"on": True}))["state"] == "maintenance"
        result = await tech.call("diag.selftest", {"slot": slot}, timeout=60)
        assert result["ok"] is True, result
        assert result["steps"][1]["detail"] == "2 packs"
        assert (await tech.call("machine.maintenance", {"on": False}))["state"] == "ready"

        regs = await tech.call("diag.registers", {"address": 0, "count": 4})
        assert regs["values"][0] == 1  # protocol version
        with pytest.raises(ApiError) as err:
            await tech.call("diag.registers", {"address": 50, "count": 2})
        assert err.value.code == ErrorCode.HARDWARE and err.value.data["exception"] == 2
        assert (await tech.call("diag.printer"))["ready"] is True
        stats = await tech.call("diag.stats")
        assert stats["transactions"] > 0 and stats["latency_ms"]["p99"] is not None
        assert stats["errors"].get("exception_02") == 1
        assert (await tech.call("audit.verify"))["ok"] is True
        with pytest.raises(ApiError) as err:
            await staff.call("order.get", {"order_id": "NOPE"})
        assert err.value.code == ErrorCode.NOT_FOUND
    finally:
        for c in (staff, tech, osys):
            await c.close()
