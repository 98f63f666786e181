"""Pause and maintenance mode are a person's decision: a restart (a clean stop or a kill)
does not end them; only resume, or leaving maintenance, does. Who paused and why are kept
with them."""

from __future__ import annotations

import asyncio

import pytest

from dispenser.testing import Daemon, wait_for


async def _settled_state(daemon: Daemon) -> str:
    """The machine's state once it left startup and homing after a start."""
    c = await daemon.client("staff")
    try:
        async def settled() -> str | None:
            st = await c.call("machine.status")
            return None if st["state"] in ("startup", "homing") else str(st["state"])
        await wait_for(settled, 30, what="the machine out of homing")
        await asyncio.sleep(0.3)  # and it stays there
        return str((await c.call("machine.status"))["state"])
    finally:
        await c.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_pause_survives_a_restart(daemon: Daemon, how: str) -> None:
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    await staff.call("machine.pause", {"reason": "tote change at output 2"})
    await staff.close()
    if how == "stop":
        assert daemon.stop() == 0
    else:
        daemon.kill()
    daemon.start()
    assert await _settled_state(daemon) == "paused"
    staff = await daemon.client("staff")
    try:
        st = await staff.call("machine.status")
        assert st["pause"]["reason"] == "tote change at output 2"
        assert st["pause"]["by"] == "staff-test" and st["pause"]["at"]
        await staff.call("machine.resume")
        assert (await staff.call("machine.status"))["state"] == "ready"
    finally:
        await staff.close()
    # Resumed is resumed: the next start goes to ready.
    assert daemon.stop() == 0
    daemon.start()
    assert await _settled_state(daemon) == "ready"


async def test_maintenance_mode_survives_a_restart(daemon: Daemon) -> None:
    daemon.start()
    tech = await daemon.client("technician")
    await daemon.wait_ready(tech)
    await tech.call("machine.maintenance", {"on": True})
    await tech.close()
    daemon.kill()
    daemon.start()
    assert await _settled_state(daemon) == "maintenance"
    tech = await daemon.client("technician")
    try:
        await tech.call("machine.maintenance", {"on": False})
        assert (await tech.call("machine.status"))["state"] == "ready"
    finally:
        await tech.close()
