"""Scheduler guards: a robot that does not match the journal or the configuration is not
sent anything until a person has looked."""

from __future__ import annotations

from pathlib import Path

from dispenser.daemon.app import Daemon
from dispenser.lifecycle import ControllerState
from firmware_sim import Simulator, SimulatorOptions
from tests.daemon.test_exactly_once import _close, _config, _cycles, _picking_done, _prepare


async def test_robot_with_cleared_memory_latches_a_fault(tmp_path: Path,
                                                          sim: Simulator) -> None:
    daemon, _ = await _prepare(tmp_path, sim)
    await _cycles(daemon, lambda: _picking_done(daemon))
    await _close(daemon)
    fresh = Simulator(SimulatorOptions(tcp_port=0, instant=True,
                                       printer_link=str(tmp_path / "printer2")))
    await fresh.start()
    try:
        other = Daemon(_config(tmp_path, fresh))
        await _cycles(other, lambda: other.machine.state is ControllerState.FAULT)
        for _ in range(5):
            await other.scheduler.cycle()
        faults = other.robotlog.faults(active=True)
        assert [f.kind for f in faults] == ["robot_mismatch"]
        assert fresh.ledger()["robot"]["last_accepted_seq"] == 0  # nothing was sent
        await _close(other)
    finally:
        await fresh.stop()


async def test_geometry_mismatch_is_a_fault(tmp_path: Path, sim: Simulator) -> None:
    config = _config(tmp_path, sim)
    config = config.model_copy(update={"stock": config.stock.model_copy(
        update={"slot_capacity": 20})})
    daemon = Daemon(config)
    await _cycles(daemon, lambda: daemon.machine.state is ControllerState.FAULT)
    assert [f.kind for f in daemon.robotlog.faults(active=True)] == ["geometry"]
    await _close(daemon)
