"""Property: whatever robot call the daemon dies at (before the request left, or after the
robot acted but before the answer arrived), and however often, the restarted daemon picks
every ordered pack exactly once and the journal agrees with the simulator serial by serial.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.daemon.app import Daemon
from dispenser.testing.inprocess import (
    Crash,
    check_picks,
    close,
    config_for,
    picking_done,
    prepare,
    run_cycles,
)
from firmware_sim import Simulator, SimulatorOptions


def _die_at(daemon: Daemon, call: int, after: bool) -> None:
    """Make the ``call``-th robot transaction from now the daemon's last."""
    robot = daemon.robot.client  # type: ignore[attr-defined]
    real = robot._transact
    count = 0

    async def transact(*args: Any, **kwargs: Any) -> list[int]:
        nonlocal count
        count += 1
        if count == call and not after:
            raise Crash
        result = await real(*args, **kwargs)
        if count == call:
            raise Crash
        return result

    robot._transact = transact  # type: ignore[method-assign]


async def _scenario(crashes: list[tuple[int, bool]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sim = Simulator(SimulatorOptions(tcp_port=0, instant=True,
                                         printer_link=str(tmp_path / "printer")))
        await sim.start()
        try:
            daemon, orders = await prepare(tmp_path, sim)
            for call, after in crashes:
                _die_at(daemon, call, after)
                with contextlib.suppress(Crash):
                    await run_cycles(daemon, lambda d=daemon: picking_done(d))
                await close(daemon)
                daemon = Daemon(config_for(tmp_path, sim))
            await run_cycles(daemon, lambda: picking_done(daemon))
            check_picks(daemon, sim, orders)
            await close(daemon)
        finally:
            await sim.stop()


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(1, 120), st.booleans()), min_size=1, max_size=4))
def test_dying_at_any_robot_call_picks_every_pack_exactly_once(
        crashes: list[tuple[int, bool]]) -> None:
    asyncio.run(_scenario(crashes))
