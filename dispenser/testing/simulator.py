"""The simulator in-process, for its own tests: options on real transports in a short
directory, homing it over Modbus, and checking it left nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dispenser.testing.modbus_client import TcpClient
from firmware_sim import SimulatorOptions

__all__ = ["assert_no_leaks", "homed", "options"]


def options(short_dir: Path, **kw: object) -> SimulatorOptions:
    o = SimulatorOptions(
        tcp_port=0,
        rtu_link=str(short_dir / "rtu"),
        printer_link=str(short_dir / "printer"),
        control_path=str(short_dir / "control.sock"),
        instant=True,
    )
    for key, value in kw.items():
        setattr(o, key, value)
    return o


async def homed(client: TcpClient, seq: int = 1) -> int:
    """HOME the robot; returns the next free sequence number."""
    await client.queue([seq >> 16, seq & 0xFFFF, 1, 0, 0, 0, 0, 0])
    await client.wait_completed(seq)
    return seq + 1


def assert_no_leaks(short_dir: Path) -> None:
    """After stop(): no task of the simulator left running, no pty link left behind."""
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running after stop(): {left}"
    assert not (short_dir / "rtu").exists() and not (short_dir / "printer").exists()
    assert not (short_dir / "control.sock").exists()
