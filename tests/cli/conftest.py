"""One dispenser-sim and one dispenserd process for the CLI tests, driven by running the
real ``dispenserctl`` as a subprocess (``dispenser.testing.cli``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing import Daemon, Sim, wait_until
from dispenser.testing.cli import Machine


@pytest.fixture(scope="package")
def machine() -> Iterator[Machine]:
    workdir = Path(tempfile.mkdtemp(prefix="dctl", dir="/tmp"))  # short socket paths
    sim = Sim(workdir, instant=True)
    sim.start()
    daemon = Daemon(workdir, sim)
    try:
        daemon.start()
        running = Machine(sim, daemon)
        wait_until(lambda: json.loads(running.ctl("status", "--json").out)["state"] == "ready",
                   "machine ready")
        yield running
    finally:
        try:
            code = daemon.stop()
        finally:
            sim.stop()
        log = daemon.log_tail()
        shutil.rmtree(workdir, ignore_errors=True)
    assert code == 0, "dispenserd did not stop cleanly:\n" + log
