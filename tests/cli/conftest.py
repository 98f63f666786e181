"""One dispenser-sim and one dispenserd process for the CLI tests, driven by running the
real ``dispenserctl`` as a subprocess (processes and sockets from tests/e2e/harness.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import TOKENS, Daemon, Sim

CTL = Path(sys.executable).parent / "dispenserctl"


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class Machine:
    """The running pair, and ``ctl`` to run dispenserctl against it."""

    sim: Sim
    daemon: Daemon

    def ctl(self, *args: str, role: str | None = "staff", stdin: str | None = None,
            env: dict[str, str] | None = None) -> Ran:
        environ = {"DISPENSER_SOCKET": str(self.daemon.socket)}
        if role is not None:
            environ["DISPENSER_TOKEN"] = TOKENS[role]
        return self.run_ctl(*args, stdin=stdin, env={**environ, **(env or {})})

    @staticmethod
    def run_ctl(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Ran:
        """dispenserctl as a user runs it, in a clean environment (no terminal: no colour)."""
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("DISPENSER_") and k != "COLUMNS"}
        environ.update(env or {})
        done = subprocess.run([str(CTL), *args], input=stdin, capture_output=True, text=True,
                              env=environ, timeout=60)
        return Ran(done.returncode, done.stdout, done.stderr)

    def sim_call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return asyncio.run(self.sim.call(method, params))


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
