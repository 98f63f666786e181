"""Fixtures: an in-process simulator on real transports (TCP loopback, ptys, Unix socket)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from firmware_sim import Simulator, SimulatorOptions
from tests.firmware_sim.client import TcpClient


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: Unix socket paths must stay under ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


@pytest.fixture
async def sim(short_dir: Path) -> AsyncIterator[Simulator]:
    s = Simulator(options(short_dir))
    await s.start()
    yield s
    await s.stop()
    assert_no_leaks(short_dir)


def assert_no_leaks(short_dir: Path) -> None:
    """After stop(): no task of the simulator left running, no pty link left behind."""
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running after stop(): {left}"
    assert not (short_dir / "rtu").exists() and not (short_dir / "printer").exists()
    assert not (short_dir / "control.sock").exists()


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[TcpClient]:
    assert sim.tcp_port is not None
    c = await TcpClient().connect(sim.tcp_port)
    yield c
    await c.close()


async def homed(client: TcpClient, seq: int = 1) -> int:
    """HOME the robot; returns the next free sequence number."""
    await client.queue([seq >> 16, seq & 0xFFFF, 1, 0, 0, 0, 0, 0])
    await client.wait_completed(seq)
    return seq + 1
