"""How long the robot was busy: the time between status reads that found it in motion.

The scheduler reads the robot's status every cycle (20 ms while working); each read that
finds the robot busy counts the time since the previous read as busy time. Its rate over
a window is the robot's utilization (``dispenser_robot_busy_seconds_total``).
"""

from __future__ import annotations

__all__ = ["BusyClock"]

# A gap longer than this between two reads (a lost link, a stop) is not counted: nobody
# knows what the robot did meanwhile.
MAX_GAP_S = 2.0


class BusyClock:
    def __init__(self) -> None:
        self._busy_s = 0.0
        self._last: float | None = None
        self._was_busy = False

    def observe(self, busy: bool, now: float) -> None:
        """A status read at monotonic time ``now`` found the robot ``busy`` or not."""
        if self._last is not None and self._was_busy and now - self._last <= MAX_GAP_S:
            self._busy_s += now - self._last
        self._last, self._was_busy = now, busy

    def seconds(self, now: float) -> float:
        """Busy seconds so far, the time since the last read included if it was busy."""
        extra = 0.0
        if self._last is not None and self._was_busy:
            extra = min(max(0.0, now - self._last), MAX_GAP_S)
        return self._busy_s + extra
