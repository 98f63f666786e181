"""Fixtures: an in-process simulator on real transports (TCP loopback, ptys, Unix socket)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dispenser.testing.modbus_client import TcpClient
from dispenser.testing.simulator import assert_no_leaks, options
from firmware_sim import Simulator


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: Unix socket paths must stay under ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def sim(short_dir: Path) -> AsyncIterator[Simulator]:
    s = Simulator(options(short_dir))
    await s.start()
    yield s
    await s.stop()
    assert_no_leaks(short_dir)


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[TcpClient]:
    assert sim.tcp_port is not None
    c = await TcpClient().connect(sim.tcp_port)
    yield c
    await c.close()


