"""Scheduler guards: a robot that does not match the journal or the configuration is not
sent anything until a person has looked."""

from __future__ import annotations

from pathlib import Path

from dispenser.daemon.app import Daemon
from dispenser.daemon.controller import ControllerState
from dispenser.testing.inprocess import close, config_for, picking_done, prepare, run_cycles
from firmware_sim import Simulator, SimulatorOptions


async def test_robot_with_cleared_memory_latches_a_fault(tmp_path: Path,
                                                          sim: Simulator) -> None:
    daemon, _ = await prepare(tmp_path, sim)
    await run_cycles(daemon, lambda: picking_done(daemon))
    await close(daemon)
    fresh = Simulator(SimulatorOptions(tcp_port=0, instant=True,
                                       printer_link=str(tmp_path / "printer2")))
    await fresh.start()
    try:
        other = Daemon(config_for(tmp_path, fresh))
        await run_cycles(other, lambda: other.machine.state is ControllerState.FAULT)
        for _ in range(5):
            await other.scheduler.cycle()
        faults = other.scheduler.faults.log.page(active=True)
        assert [f.kind for f in faults] == ["robot_mismatch"]
        assert fresh.ledger()["robot"]["last_accepted_seq"] == 0  # nothing was sent
        await close(other)
    finally:
        await fresh.stop()


async def test_geometry_mismatch_is_a_fault(tmp_path: Path, sim: Simulator) -> None:
    config = config_for(tmp_path, sim)
    config = config.model_copy(update={"stock": config.stock.model_copy(
        update={"slot_capacity": 20})})
    daemon = Daemon(config)
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    assert [f.kind for f in daemon.scheduler.faults.log.page(active=True)] == ["geometry"]
    await close(daemon)


async def test_geometry_fault_clears_only_when_robot_and_configuration_agree(
        tmp_path: Path, sim: Simulator) -> None:
    """Acknowledging a geometry fault once let the daemon pick against storage the robot
    does not have; the acknowledgement now checks again."""
    import pytest

    from dispenser.daemon.loading import HardwareError
    from dispenser.testing.inprocess import STAFF

    good = config_for(tmp_path, sim)
    bad = good.model_copy(update={"stock": good.stock.model_copy(
        update={"slot_capacity": 20})})
    daemon = Daemon(bad)
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    [fault] = sched.faults.log.page(active=True)
    with pytest.raises(HardwareError, match="still differs"):
        await sched.ack_fault(fault.fault_id, STAFF, "looked")
    for _ in range(5):
        await sched.cycle()
    assert daemon.machine.state is ControllerState.FAULT
    assert [f.fault_id for f in sched.faults.log.page(active=True)] == [fault.fault_id]
    accepted = sim.ledger()["robot"]["last_accepted_seq"]
    await close(daemon)

    # The configuration corrected and the daemon restarted: the fault is still latched
    # until acknowledged, and now the acknowledgement clears it.
    daemon = Daemon(good)
    sched = daemon.scheduler
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    assert sim.ledger()["robot"]["last_accepted_seq"] == accepted  # nothing was sent
    await sched.ack_fault(fault.fault_id, STAFF, "configuration corrected")
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.READY)
    assert sched.faults.log.page(active=True) == []
    await close(daemon)


async def test_a_shipment_larger_than_a_tote_is_refused_before_any_pick(
        tmp_path: Path, sim: Simulator) -> None:
    from datetime import date, timedelta

    from dispenser.core.states import OrderState
    from dispenser.daemon.demo import scan_of
    from dispenser.testing import drugs, order
    from dispenser.testing.inprocess import OSYS, STAFF

    daemon = Daemon(config_for(tmp_path, sim))
    codes = [r["drug_code"] for r in drugs()["robot"][80:84]]
    exp = (date.today() + timedelta(days=300)).isoformat()
    packs = [{"gtin": c, "batch": f"T{n}", "expiry": exp, "serial": f"T{n}-{i:02d}"}
             for n, c in enumerate(codes) for i in range(12)]
    sim.put_input(packs)
    loads = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await run_cycles(daemon, lambda: all(f.done() for f in loads))
    daemon.machine.fire("pause")
    d = daemon.dispensary
    d.submit(order("BIG1", "PBIG", [(codes[0], 12), (codes[1], 12)]), OSYS)
    d.submit(order("BIG2", "PBIG", [(codes[2], 12), (codes[3], 6)]), OSYS)  # merges: 42
    d.submit(order("SMALL", "PSMALL", [(codes[3], 2)]), OSYS)
    daemon.machine.fire("resume")
    await run_cycles(daemon, lambda: d.get_order("SMALL").state is OrderState.LABELLING)
    assert d.get_order("BIG1").state is OrderState.FAILED
    assert d.get_order("BIG2").state is OrderState.FAILED
    ledger = sim.ledger()
    in_totes = [p for t in ledger["outputs"].values() for p in t["packs"]]
    assert len(in_totes) == 2  # only SMALL's packs moved
    await close(daemon)


async def test_a_burst_of_orders_is_formed_a_slice_per_cycle(
        tmp_path: Path, sim: Simulator) -> None:
    """250 orders whose merge windows are over: one cycle forms at most FORM_PER_CYCLE
    shipments (the first in schedule order), the next cycles the rest, so that no cycle
    holds the event loop for the whole round."""
    from dispenser.daemon.scheduler import FORM_PER_CYCLE
    from dispenser.testing import drugs, order
    from dispenser.testing.inprocess import OSYS

    daemon = Daemon(config_for(tmp_path, sim))
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.READY)
    code = drugs()["robot"][0]["drug_code"]
    d = daemon.dispensary
    d.submit_many([order(f"FB{i:03d}", f"PFB{i:03d}", [(code, 1)]) for i in range(250)],
                  OSYS)
    forming = d.shipments.forming
    assert len(forming) == 250
    expected = sorted((d.shipments.live[s] for s in forming.values()),
                      key=lambda sh: sh.schedule_key())
    await daemon.scheduler.cycle()
    assert len(forming) == 250 - FORM_PER_CYCLE
    formed_first = {sh.shipment_id for sh in expected[:FORM_PER_CYCLE]}
    assert formed_first.isdisjoint(forming.values())  # the first in schedule order
    await run_cycles(daemon, lambda: not forming, limit=5)
    await close(daemon)
