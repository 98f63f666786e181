"""Loading through the input point when the robot does not store a pack.

A STORE that did not happen for a reason that passes (the robot refused the write because
it was not ready, an emergency stop cut it short) is sent again: the pack still lies at
the input point and must not be recorded as refused (every later load would then find it
there and be refused as ``input_mismatch``: the day's load of seed 20261203 and the fault
campaign of seed 66). A pack the robot really refused blocks the input point: staff see
it in ``machine.status`` and loading goes on once they took it off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.core.errors import LoadRefused
from dispenser.core.states import PackState
from dispenser.daemon.app import Daemon
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.demo import scan_of
from dispenser.daemon.robot import Motion
from dispenser.testing import drugs
from dispenser.testing.inprocess import STAFF, close, config_for, run_cycles
from firmware_sim import Simulator, SimulatorOptions


def _packs(n: int, tag: str, column: int = 0) -> list[dict[str, str]]:
    code = drugs()["robot"][60 + column]["drug_code"]
    exp = (date.today() + timedelta(days=300)).isoformat()
    return [{"gtin": code, "batch": f"R{tag}", "expiry": exp, "serial": f"{tag}{i:03d}"}
            for i in range(n)]


def _refused(daemon: Daemon) -> list[Any]:
    return daemon.dispensary.list_stock(state=PackState.REFUSED, limit=1000)


async def _ready(daemon: Daemon) -> None:
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.READY)


async def test_a_store_the_robot_refused_while_not_ready_is_sent_again(
        tmp_path: Path, sim: Simulator) -> None:
    """The robot's watchdog expired (the daemon was late on a loaded host): it refuses the
    STORE's write with exception 06. Reproduced in the day's load of seed 20261203."""
    daemon = Daemon(config_for(tmp_path, sim))
    await _ready(daemon)
    packs = _packs(3, "W")
    sim.put_input(packs)
    sim.robot._lose_controller()  # the watchdog expired: writes are refused (exception 06)
    loads = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await run_cycles(daemon, lambda: all(f.done() for f in loads))
    assert [f.exception() for f in loads] == [None, None, None]
    assert [f.result().state for f in loads] == [PackState.IN_STOCK] * 3
    assert _refused(daemon) == []
    assert sim.ledger()["input"] == []
    await close(daemon)


@pytest.fixture
async def slow_sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    s = Simulator(SimulatorOptions(tcp_port=0, speed=20.0,
                                   printer_link=str(tmp_path / "printer")))
    await s.start()
    yield s
    await s.stop()


async def test_a_store_an_emergency_stop_cut_short_is_sent_again(
        tmp_path: Path, slow_sim: Simulator) -> None:
    """An emergency stop aborts the STORE in motion and the queued ones: nothing moved,
    the packs still lie at the input point. Reproduced by the fault campaign, seed 66."""
    sim = slow_sim
    daemon = Daemon(config_for(tmp_path, sim))
    await _ready(daemon)
    packs = _packs(3, "E", column=1)
    sim.put_input(packs)
    loads = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]

    def storing() -> bool:
        ex = sim.robot.executing
        return ex is not None and ex.opcode == 2
    await run_cycles(daemon, storing)
    sim.inject("estop")
    await run_cycles(daemon, lambda: daemon.machine.state is ControllerState.ESTOP)
    sim.clear("estop")
    fault = daemon.scheduler.faults.log.page(active=True)[0]
    await daemon.scheduler.ack_fault(fault.fault_id, STAFF, "released")
    await run_cycles(daemon, lambda: all(f.done() for f in loads), limit=3000)
    assert [f.result().state for f in loads] == [PackState.IN_STOCK] * 3
    assert _refused(daemon) == []
    assert sim.ledger()["input"] == []
    await close(daemon)


async def test_a_refused_pack_blocks_the_input_point_until_taken_off(
        tmp_path: Path, sim: Simulator) -> None:
    daemon = Daemon(config_for(tmp_path, sim))
    await _ready(daemon)
    first, second = _packs(2, "B", column=2)
    sim.put_input([first, second])
    # Somebody filled the slot the daemon chose by hand with another drug: the robot
    # refuses the STORE (MIXED_SLOT) and the pack stays at the input point.
    stranger = {**_packs(1, "X", column=3)[0]}
    robot = daemon.scheduler.robot
    real = robot.queue
    filled: list[int] = []

    async def queue(commands: Any) -> None:
        for c in commands:
            if c.motion is Motion.STORE and not sim.robot.slots.get(c.slot):
                sim.put_slot(c.slot, [stranger])
                filled.append(c.slot)
        await real(commands)

    robot.queue = queue  # type: ignore[method-assign]
    load = daemon.scheduler.request_load(scan_of(first), STAFF, wait=True)
    await run_cycles(daemon, load.done)
    robot.queue = real  # type: ignore[method-assign]
    assert load.result().state is PackState.REFUSED
    status = await daemon.machine_status()
    blocked = status["input_blocked"]
    assert blocked["serial"] == first["serial"]
    assert "take the pack off the input point" in blocked["action"]

    # The next pack cannot be loaded while the refused one lies in front of it: the
    # refusal says so (not "input_mismatch").
    nxt = daemon.scheduler.request_load(scan_of(second), STAFF, wait=True)
    await run_cycles(daemon, nxt.done)
    with pytest.raises(LoadRefused) as refused:
        nxt.result()
    assert refused.value.reason_code == "refused_pack_at_input"

    sim.take_input(1)  # staff take it off (and a technician empties the slot)
    sim.inject("slot_empty", slot=filled[0])
    await run_cycles(daemon, lambda: daemon.scheduler.loading.input_blocked is None)
    assert (await daemon.machine_status())["input_blocked"] is None
    again = daemon.scheduler.request_load(scan_of(second), STAFF, wait=True)
    await run_cycles(daemon, again.done)
    assert again.result().state is PackState.IN_STOCK
    await asyncio.sleep(0)
    await close(daemon)
