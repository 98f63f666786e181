"""The in-process simulator (instant motions) for daemon tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware_sim import Simulator, SimulatorOptions


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    s = Simulator(SimulatorOptions(tcp_port=0, instant=True,
                                   printer_link=str(tmp_path / "printer")))
    await s.start()
    yield s
    await s.stop()
