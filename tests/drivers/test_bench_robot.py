"""The robot benchmark still runs end to end (a short run; the speed figures are not
checked, the number of transactions per batch is: it does not depend on the machine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("firmware_sim.simulator", reason="simulator not available")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_bench_robot_short_run() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_robot.py"),
            "--picks",
            "300",
            "--reads",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "picks through RobotClient" in result.stdout
    assert "bare pymodbus" in result.stdout
    # One FC16 and one status read per batch of 15, and completions read in whole ring
    # runs: 5 reads per 64 completions, so 3.17 transactions per batch (plus the drain).
    per_batch = re.search(r"\(([0-9.]+) per batch of 15\)", result.stdout)
    assert per_batch is not None, result.stdout
    assert float(per_batch.group(1)) <= 3.25
