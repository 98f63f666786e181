"""A reservation made before its pack aged out is checked again when the tote planner
starts picking (issue 8): the robot never picks from the aged slot, and a shipment held by
that check gets no output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispenser.core.states import OrderState, ShipmentState
from dispenser.daemon.app import Daemon
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.demo import scan_of
from dispenser.testing import drugs, order
from dispenser.testing.inprocess import OSYS, STAFF, close, config_for, run_cycles
from firmware_sim import Simulator


class Clock:
    """The daemon's clock, moved on by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def _load(daemon: Daemon, sim: Simulator, pack: dict[str, str]) -> None:
    sim.put_input([pack])
    done = daemon.scheduler.request_load(scan_of(pack), STAFF, wait=True)
    await run_cycles(daemon, done.done)
    assert done.result().state.value == "in_stock"


async def test_a_pack_that_aged_out_after_its_reservation_is_never_picked(
        tmp_path: Path, sim: Simulator) -> None:
    clock = Clock()
    daemon = Daemon(config_for(tmp_path, sim), clock=clock)
    d = daemon.dispensary
    code = drugs()["robot"][60]["drug_code"]
    today = clock().date()
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.READY)
    await _load(daemon, sim, {"gtin": code, "batch": "SOON", "serial": "AGE-SOON",
                              "expiry": (today + timedelta(days=40)).isoformat()})
    daemon.machine.fire("pause")
    d.submit(order("AGE-1", "P-AGE1", [(code, 1)]), OSYS)  # 30 days' supply
    (formed,) = d.form_shipments()
    assert formed.state is ShipmentState.QUEUED  # reserved on SOON: 40 days left today

    clock.now += timedelta(days=15)  # SOON has 25 days left: not enough any more
    daemon.machine.fire("resume")
    await run_cycles(daemon, lambda: d.get_order("AGE-1").state is OrderState.HELD)
    for _ in range(20):
        await daemon.scheduler.cycle()
    assert daemon.scheduler.totes.outputs_in_use() == {}
    assert daemon.scheduler.totes.output_of(formed.shipment_id) is None
    ledger = sim.ledger()
    assert not [p for t in ledger["outputs"].values() for p in t["packs"]]
    assert [h.code for h in d.get_shipment(formed.shipment_id).holds] == ["stock_short"]

    # Stock that lasts the supply arrives: the shipment goes on, from it.
    await _load(daemon, sim, {"gtin": code, "batch": "LATER", "serial": "AGE-LATER",
                              "expiry": (today + timedelta(days=400)).isoformat()})
    await run_cycles(daemon, lambda: d.get_order("AGE-1").state is OrderState.LABELLING)
    ledger = sim.ledger()
    assert [p["serial"] for t in ledger["outputs"].values() for p in t["packs"]] == [
        "AGE-LATER"]
    await close(daemon)
