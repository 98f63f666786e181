"""The loop-lag probe sees a step that holds the event loop, counts the late wake-ups and
logs a long one once a minute at most."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from dispenser.daemon.looplag import LoopLag


async def test_a_step_that_holds_the_loop_is_seen() -> None:
    lag = LoopLag()
    probe = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.1)  # a few quiet wake-ups
        time.sleep(0.15)          # a step holding the loop for 150 ms
        await asyncio.sleep(0.1)
    finally:
        probe.cancel()
    snap = lag.snapshot()
    # The probe slept 20 ms; the loop ran it at least 130 ms late.
    assert snap["max_ms"] >= 130 and snap["recent"]["max"] >= 130
    assert snap["late_over_50ms"] >= 1
    assert snap["samples"] >= 3 and snap["recent"]["samples"] == snap["samples"]
    assert snap["recent"]["p50"] is not None and snap["recent"]["p50"] <= snap["max_ms"]


def test_a_long_hold_is_logged_once_a_minute_at_most() -> None:
    now = [1000.0]
    lag = LoopLag(clock=lambda: now[0])
    seen: list[float] = []
    lag.on_sample = seen.append
    with capture_logs() as logs:
        lag.observe(0.6)
        now[0] += 10
        lag.observe(0.7)
        now[0] += 60
        lag.observe(0.8)
        lag.observe(0.01)
        lag.observe(-0.001)  # (a timer run a hair early counts as on time)
    held = [e for e in logs if e["event"] == "the event loop was held"]
    assert [e["late_ms"] for e in held] == [600.0, 800.0]
    assert lag.late == 3 and lag.worst == 0.8 and seen[-1] == 0.0
    assert LoopLag().snapshot()["recent"] == {"p50": None, "p99": None, "max": None,
                                              "samples": 0}
