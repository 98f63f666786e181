"""``dispenser-sim`` as a process, read and written by an independent Modbus peer (mbpoll)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing.tools import require_tool


def sim_command() -> list[str]:
    """The installed console script next to this interpreter (as pyproject declares it)."""
    script = Path(sys.executable).parent / "dispenser-sim"
    return [str(script)] if script.exists() else [sys.executable, "-m", "firmware_sim.main"]


class SimProcess:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*sim_command(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "dispenser-sim: ready":
                return
        self.stop()
        raise AssertionError(f"simulator did not start: {self.lines}")

    @property
    def tcp_port(self) -> int:
        for line in self.lines:
            m = re.match(r"dispenser-sim: modbus-tcp [\d.]+:(\d+)$", line)
            if m:
                return int(m.group(1))
        raise AssertionError(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


@pytest.fixture
def process(short_dir: Path) -> Iterator[SimProcess]:
    p = SimProcess(
        "--tcp", "127.0.0.1:0", "--instant",
        "--rtu-link", str(short_dir / "rtu"),
        "--printer-link", str(short_dir / "printer"),
        "--control", str(short_dir / "ctl"),
        "--state", str(short_dir / "state.json"),
    )  # fmt: skip
    yield p
    p.stop()


def mbpoll(*args: str) -> dict[int, int]:
    tool = require_tool("mbpoll")
    out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    return {int(a): int(b) for a, b in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", out.stdout, re.M)}


def tcp(port: int, *args: str) -> list[str]:
    return ["-m", "tcp", "-p", str(port), "-a", "1", "-0", *args]


def test_startup_prints_one_line_per_listener(process: SimProcess, short_dir: Path) -> None:
    kinds = [line.split()[1] for line in process.lines[:-1]]
    assert kinds == ["modbus-tcp", "modbus-rtu", "printer", "control"]
    assert os.path.realpath(short_dir / "rtu").startswith("/dev/pts/")


def test_mbpoll_reads_the_status_block_and_queues_a_command(process: SimProcess) -> None:
    port = process.tcp_port
    regs = mbpoll(*tcp(port, "-r", "0", "-c", "32", "-t", "4", "-1", "127.0.0.1"))
    assert len(regs) == 32
    assert (regs[0], regs[1], regs[6], regs[9]) == (1, 256, 32, 4)
    assert (regs[21], regs[22], regs[23], regs[24], regs[25]) == (2, 25, 200, 10, 40)
    assert regs[2] == 6  # NOT_HOMED
    # FC16 of 8 values at 1000: seq 7, HOME.
    mbpoll(*tcp(port, "-r", "1000", "-t", "4", "127.0.0.1", "0", "7", "1", "0", "0", "0", "0", "0"))
    deadline = time.monotonic() + 5
    while True:
        regs = mbpoll(*tcp(port, "-r", "12", "-c", "6", "-t", "4", "-1", "127.0.0.1"))
        if regs[15] == 7 or time.monotonic() > deadline:
            break
    assert (regs[12], regs[13]) == (0, 7)  # last_accepted_seq
    assert (regs[16], regs[17]) == (0, 1)  # completion_count
    ring = mbpoll(*tcp(port, "-r", "2000", "-c", "8", "-t", "4", "-1", "127.0.0.1"))
    assert [ring[2000 + i] for i in range(8)] == [0, 7, 1, 0, 0, 0, 0, 0]


def test_mbpoll_over_rtu_on_the_pty(process: SimProcess, short_dir: Path) -> None:
    rtu = ["-m", "rtu", "-b", "115200", "-P", "none", "-a", "1", "-0", "-t", "4"]
    regs = mbpoll(*rtu, "-r", "0", "-c", "32", "-1", str(short_dir / "rtu"))
    assert (regs[0], regs[6], regs[22]) == (1, 32, 25)
    mbpoll(*rtu, "-r", "1000", str(short_dir / "rtu"), "0", "3", "1", "0", "0", "0", "0", "0")
    time.sleep(0.1)
    regs = mbpoll(*rtu, "-r", "12", "-c", "6", "-1", str(short_dir / "rtu"))
    assert (regs[13], regs[15], regs[17]) == (3, 3, 1)


def test_sigterm_saves_the_state(process: SimProcess, short_dir: Path) -> None:
    port = process.tcp_port
    mbpoll(*tcp(port, "-r", "1000", "-t", "4", "127.0.0.1", "0", "9", "1", "0", "0", "0", "0", "0"))
    time.sleep(0.1)
    assert process.stop() == 0
    assert not (short_dir / "ctl").exists()
    state = json.loads((short_dir / "state.json").read_text())
    assert state["robot"]["last_accepted_seq"] == 9


def test_bad_options_are_refused() -> None:
    out = subprocess.run(
        [*sim_command(), "--speed", "0"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 2 and "--speed" in out.stderr
