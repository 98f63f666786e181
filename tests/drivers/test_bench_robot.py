"""The robot benchmark still runs end to end (a short run; the figures are not checked)."""

from __future__ import annotations

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
