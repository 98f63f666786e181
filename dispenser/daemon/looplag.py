"""How late the event loop runs a timer: the longest step it took meanwhile.

dispenserd is a real-time controller on one event loop: the robot's watchdog expires after
2 s of silence and every API caller waits behind whatever step runs. ``LoopLag`` sleeps
``PERIOD_S`` again and again and records how much later than asked it woke up: a wake-up
late by 40 ms means some step (a merge round, a batch of completions, a commit's fsync)
held the loop for about that long. The figures go to ``diag.stats`` (``loop``) and to the
metrics endpoint; a wake-up later than ``WARN_S`` is logged (at most once a minute), so a
stall in the field leaves a trace.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dispenser.logs import get_logger

__all__ = ["LoopLag"]

log = get_logger(__name__)

PERIOD_S = 0.02
# About the last minute of wake-ups (at one per PERIOD_S on an idle loop).
WINDOW = 3000
# The loop's steps are meant to stay under ~50 ms; later than this is counted.
LATE_S = 0.05
WARN_S = 0.5
WARN_EVERY_S = 60.0


class LoopLag:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 period_s: float = PERIOD_S) -> None:
        self.clock = clock
        self.period_s = period_s
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.samples = 0
        self.worst = 0.0
        self.late = 0  # wake-ups later than LATE_S since the start
        self._warned_at: float | None = None
        self.on_sample: Callable[[float], None] | None = None  # (metrics)

    def observe(self, lateness: float) -> None:
        lateness = max(0.0, lateness)
        self.recent.append(lateness)
        self.samples += 1
        self.worst = max(self.worst, lateness)
        if lateness > LATE_S:
            self.late += 1
        if lateness > WARN_S:
            now = self.clock()
            if self._warned_at is None or now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("the event loop was held", late_ms=round(lateness * 1000, 1),
                            late_since_start=self.late)
        if self.on_sample is not None:
            self.on_sample(lateness)

    async def run(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(self.period_s)
            self.observe(self.clock() - asked - self.period_s)

    def snapshot(self) -> dict[str, Any]:
        """Lateness of the wake-ups, ms: p50, p99 and max over about the last minute, the
        max since the start, and how many were later than 50 ms."""
        recent = sorted(self.recent)

        def at(q: float) -> float | None:
            if not recent:
                return None
            return round(recent[min(len(recent) - 1, int(q * len(recent)))] * 1000, 3)

        return {"period_ms": round(self.period_s * 1000, 3), "samples": self.samples,
                "recent": {"p50": at(0.5), "p99": at(0.99),
                           "max": round(recent[-1] * 1000, 3) if recent else None,
                           "samples": len(recent)},
                "max_ms": round(self.worst * 1000, 3),
                "late_over_50ms": self.late}
