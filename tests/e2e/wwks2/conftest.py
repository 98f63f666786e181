"""dispenserd serving WWKS2 beside dispenser-sim, per test (``tests/e2e/conftest.py``
gives the working directory and the simulator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing import Sim
from dispenser.testing.wwks2 import Wwks2Daemon


@pytest.fixture
def daemon(workdir: Path, sim: Sim) -> Iterator[Wwks2Daemon]:
    """Like the harness's ``daemon`` fixture, serving WWKS2; stopped cleanly at the end."""
    d = Wwks2Daemon(workdir, sim)
    yield d
    code = d.stop()
    assert code == 0, "dispenserd did not stop cleanly:\n" + d.log_tail()
