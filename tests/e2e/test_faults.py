"""Each fault the simulator can inject, recovered as docs/api.md describes.

- a slot found short or empty: the pick records what came out, the slot is blocked as a
  discrepancy and the shipment gets its packs from other stock;
- jam, dropped pack, emergency stop, open door: the machine stops and stays stopped
  (latched) until staff acknowledge; the acknowledgement is refused while the cause is
  still there; afterwards the work goes on from the last confirmed pick;
- a short link outage is ridden out; a long one becomes a fault;
- paper out / head open: shipments wait in labelling and go on when the printer is back.
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
    wait_for,
)

TODAY = date.today()
CODES = [r["drug_code"] for r in drugs()["robot"][20:24]]


async def _start(daemon: Daemon, sim: Sim, batches: list[tuple[str, str, int, int]]) -> (
        tuple[ApiClient, ApiClient]):
    """Start, load ``(code, batch, days to expiry, packs)``; (staff, order_system) clients."""
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    stock = [pack(code, batch, TODAY + timedelta(days=days), f"{batch}-{i:03d}")
             for code, batch, days, n in batches for i in range(n)]
    await load_packs(sim, staff, stock)
    return staff, await daemon.client("order_system")


async def _state(client: ApiClient, order_id: str) -> str:
    return str((await client.call("order.get", {"order_id": order_id}))["state"])


async def _completed(client: ApiClient, *order_ids: str, timeout: float = 20) -> None:
    async def done() -> bool:
        return all([await _state(client, o) == "completed" for o in order_ids])
    await wait_for(done, timeout, what=f"{order_ids} completed")


async def _active_fault(client: ApiClient, kind: str) -> dict[str, Any]:
    async def raised() -> dict[str, Any] | None:
        page = await client.call("fault.list", {"active": True})
        return next((f for f in page["items"] if f["kind"] == kind), None)
    fault: dict[str, Any] = await wait_for(raised, 20, what=f"{kind} fault")
    return fault


async def _slot_of(client: ApiClient, code: str, batch: str) -> int:
    page = await client.call("stock.list", {"drug_code": code})
    return int(next(p["slot"] for p in page["items"] if p["batch"] == batch))


async def test_slot_empty_and_short_are_discrepancies_and_reallocated(daemon: Daemon,
                                                                      sim: Sim) -> None:
    z, y = CODES[0], CODES[1]
    staff, osys = await _start(daemon, sim, [(z, "Z1", 100, 3), (z, "Z2", 200, 3),
                                             (y, "Y1", 100, 4), (y, "Y2", 200, 3)])
    try:
        z1, y1 = await _slot_of(staff, z, "Z1"), await _slot_of(staff, y, "Y1")
        await sim.call("sim.inject", {"fault": "slot_empty", "slot": z1})
        await sim.call("sim.inject", {"fault": "slot_short", "slot": y1, "remove": 2})
        await osys.call("order.submit", {"order": order("E1", "PE1", [(z, 2)])})
        await osys.call("order.submit", {"order": order("E2", "PE2", [(y, 3)])})
        await _completed(staff, "E1", "E2")
        found = {(d["slot"], d["expected"], d["found"])
                 for d in (await staff.call("stock.discrepancies"))["items"]}
        assert (z1, 2, 0) in found and (y1, 3, 2) in found
        await check_invariant(staff, sim, require_final=False)
        packs = await dispensed(staff)
        batches = sorted(p[1] for v in packs.values() for p in v)
        assert batches == ["Y1", "Y1", "Y2", "Z2", "Z2"]
        assert (await staff.call("machine.status"))["state"] == "ready"
    finally:
        await staff.close()
        await osys.close()


@pytest.mark.parametrize("fault,lost_state", [("jam", "missing"), ("dropped", "dropped")])
async def test_pack_lost_in_a_fault_latches_until_ack(daemon: Daemon, sim: Sim, fault: str,
                                                       lost_state: str) -> None:
    x = CODES[2]
    staff, osys = await _start(daemon, sim, [(x, "X1", 100, 6)])
    try:
        inject: dict[str, Any] = {"fault": fault}
        if fault == "jam":
            inject["after_picks"] = 0
        await sim.call("sim.inject", inject)
        await osys.call("order.submit", {"order": order("J1", "PJ1", [(x, 2)])})
        f = await _active_fault(staff, fault)
        j1 = await staff.call("order.get", {"order_id": "J1"})
        # The context names the pick that faulted (not an aborted command after it).
        assert f["context"]["command"] == "pick"
        assert f["context"]["shipment_id"] == j1["shipment_id"]
        assert (await staff.call("machine.status"))["state"] == "fault"
        # Latched: nothing moves, and ack is refused while the cause is still there.
        with pytest.raises(ApiError) as err:
            await staff.call("fault.ack", {"fault_id": f["fault_id"]})
        assert err.value.code == ErrorCode.HARDWARE
        assert await _state(staff, "J1") == "picking"
        await sim.call("sim.clear", {"fault": fault})
        acked = await staff.call("fault.ack", {"fault_id": f["fault_id"], "note": "cleared"})
        assert acked["active"] is False and acked["acked_role"] == "staff"
        await _completed(staff, "J1")
        ledger = await sim.ledger()
        lost = ledger["jammed" if fault == "jam" else "dropped"]
        assert len(lost) == 1
        gone = (await staff.call("stock.list", {"state": lost_state}))["items"]
        assert [p["serial"] for p in gone] == [lost[0]["serial"]]
        await check_invariant(staff, sim, require_final=False)
    finally:
        await staff.close()
        await osys.close()


@pytest.mark.parametrize("fault,kind", [("estop", "estop"), ("door_open", "door_open")])
async def test_estop_and_door_stop_the_machine_until_ack(daemon: Daemon, sim: Sim,
                                                          fault: str, kind: str) -> None:
    x = CODES[3]
    staff, osys = await _start(daemon, sim, [(x, "X1", 100, 4)])
    try:
        await sim.call("sim.inject", {"fault": fault})
        f = await _active_fault(staff, kind)
        await osys.call("order.submit", {"order": order("S1", "PS1", [(x, 1)])})
        with pytest.raises(ApiError) as err:
            await staff.call("fault.ack", {"fault_id": f["fault_id"]})
        assert err.value.code == ErrorCode.HARDWARE
        status = await staff.call("machine.status")
        assert status["state"] == kind if kind == "estop" else "fault"
        assert await _state(staff, "S1") != "completed"
        await sim.call("sim.clear", {"fault": fault})
        await staff.call("fault.ack", {"fault_id": f["fault_id"]})
        await _completed(staff, "S1")
        assert (await staff.call("machine.status"))["state"] == "ready"
        await check_invariant(staff, sim, require_final=False)
    finally:
        await staff.close()
        await osys.close()


async def test_link_outages(daemon: Daemon, sim: Sim) -> None:
    x = CODES[0]
    staff, osys = await _start(daemon, sim, [(x, "L1", 100, 6)])
    try:
        # Shorter than link_fault_after_s (2 s): ridden out, no fault.
        await sim.call("sim.inject", {"fault": "link_down", "seconds": 0.5})
        await osys.call("order.submit", {"order": order("L1", "PL1", [(x, 1)])})
        await _completed(staff, "L1")
        assert (await staff.call("fault.list", {"active": True}))["items"] == []
        # Longer: a fault a person must acknowledge; then the work goes on.
        await sim.call("sim.inject", {"fault": "link_down", "seconds": 3.0})
        await osys.call("order.submit", {"order": order("L2", "PL2", [(x, 2)])})
        f = await _active_fault(staff, "link_down")

        async def link_up() -> bool:
            return bool((await staff.call("machine.status"))["robot"]["link"] == "up")
        await wait_for(link_up, 10, what="link up")
        assert (await staff.call("machine.status"))["state"] == "fault"
        await staff.call("fault.ack", {"fault_id": f["fault_id"]})
        await _completed(staff, "L2")
        await check_invariant(staff, sim, require_final=False)
    finally:
        await staff.close()
        await osys.close()


@pytest.mark.parametrize("fault", ["paper_out", "head_open"])
async def test_printer_not_ready_shipments_wait_in_labelling(daemon: Daemon, sim: Sim,
                                                              fault: str) -> None:
    x = CODES[1]
    staff, osys = await _start(daemon, sim, [(x, "P1", 100, 4)])
    try:
        await sim.call("sim.inject", {"fault": fault})
        result = await osys.call("order.submit", {"order": order("P1", "PP1", [(x, 1)])})

        async def waiting() -> bool:
            st = await staff.call("machine.status")
            return bool(st["printer"]["waiting"] and fault in st["printer"]["reasons"])
        await wait_for(waiting, 20, what="shipment waiting for the printer")
        assert await _state(staff, "P1") == "labelling"
        sid = (await staff.call("order.get", {"order_id": result["order_id"]}))["shipment_id"]
        with pytest.raises(ApiError) as err:
            await staff.call("label.reprint", {"shipment_id": sid})
        assert err.value.code == ErrorCode.HARDWARE and fault in err.value.data["reasons"]
        await sim.call("sim.clear", {"fault": fault})
        await _completed(staff, "P1")
        assert (await staff.call("label.reprint", {"shipment_id": sid,
                                                   "what": "label"}))["printed"] is True
        ledger = await sim.ledger()
        printed = [lb for lb in ledger["labels"] if lb.get("printed")]
        assert len(printed) == 3  # label, packing slip, the reprinted label
        await check_invariant(staff, sim, require_final=False)
    finally:
        await staff.close()
        await osys.close()


async def test_a_latched_fault_survives_a_restart(daemon: Daemon, sim: Sim) -> None:
    x = CODES[2]
    staff, osys = await _start(daemon, sim, [(x, "R1", 100, 5)])
    await sim.call("sim.inject", {"fault": "jam", "after_picks": 0})
    await osys.call("order.submit", {"order": order("R1", "PR1", [(x, 2)])})
    f = await _active_fault(staff, "jam")
    await staff.close()
    await osys.close()
    daemon.kill()
    daemon.start()
    staff = await daemon.client("staff")
    try:
        async def latched() -> bool:
            return bool((await staff.call("machine.status"))["state"] == "fault")
        await wait_for(latched, 10, what="fault latched after the restart")
        active = (await staff.call("fault.list", {"active": True}))["items"]
        assert [a["fault_id"] for a in active] == [f["fault_id"]]  # no second record
        await sim.call("sim.clear", {"fault": "jam"})
        await staff.call("fault.ack", {"fault_id": f["fault_id"]})
        await _completed(staff, "R1")
        await check_invariant(staff, sim, require_final=False)
    finally:
        await staff.close()
