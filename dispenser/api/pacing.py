"""Shares the event loop between API requests and everything else the daemon does.

The daemon is one asyncio loop: the scheduler's cycle and the robot's watchdog refresh
need one loop iteration for each step (send a Modbus request, take its reply ...). asyncio
runs everything that is ready in an iteration before it looks at sockets again, so a
hundred connections with a request each would make one iteration a hundred requests long.

A :class:`Pacer` bounds that: a request may **start** only while the current loop
iteration is younger than ``budget_s``; a request that comes later waits for a following
iteration. Waiting requests start first come, first served, before any newcomer, so no
connection is starved by others. What a caller may rely on:

- in any loop iteration, requests start only during the first ``budget_s`` seconds; the
  iteration is therefore at most ``budget_s`` plus the time of the last request started
  longer, however many connections send however many requests;
- a request waits at most until the requests queued before it have started;
- when nothing waits, a request starts at once (no cost for a quiet API).

Time is measured from the moment a callback of the pacer runs at the start of each
iteration (after a quiet spell, from the first request); the callback runs only while
requests arrive or wait, so an idle daemon pays nothing for it.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["DEFAULT_BUDGET_S", "Pacer"]

# A few milliseconds: long enough for dozens of cheap requests per iteration, short
# against the robot's watchdog (2 s, refreshed every 0.5 s) and the scheduler's 20 ms poll.
DEFAULT_BUDGET_S = 0.004


class Pacer:
    """See the module docstring. One per server; use from the loop's thread only."""

    def __init__(self, budget_s: float = DEFAULT_BUDGET_S) -> None:
        self.budget_s = budget_s
        self._iteration_started = 0.0
        self._ticking = False
        self._active = False
        # Requests waiting for a later iteration, in arrival order; ``_carry`` holds those
        # that were let through but found the iteration already used up: they go first.
        # Under contention, requests start every other iteration: one lets a cohort of
        # waiters through, the next runs them.
        self._queue: list[asyncio.Future[None]] = []
        self._carry: list[asyncio.Future[None]] = []
        # Let through by the last tick, not yet run: newcomers must not overtake them.
        self._granted = 0
        self.deferred = 0  # requests that had to wait for a later iteration

    async def turn(self) -> None:
        """Return when a request may start (at once, when nothing waits and time is left)."""
        loop = asyncio.get_running_loop()
        if not self._ticking:
            self._start(loop)
        if not (self._queue or self._carry or self._granted) and self._fits():
            self._active = True
            return
        self.deferred += 1
        await self._wait(loop, self._queue)
        while not self._fits():
            await self._wait(loop, self._carry)
        self._active = True

    def _fits(self) -> bool:
        return time.perf_counter() - self._iteration_started < self.budget_s

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ticking = True
        self._iteration_started = time.perf_counter()
        loop.call_soon(self._tick)

    async def _wait(self, loop: asyncio.AbstractEventLoop,
                    line: list[asyncio.Future[None]]) -> None:
        future: asyncio.Future[None] = loop.create_future()
        line.append(future)
        if not self._ticking:
            self._start(loop)
        try:
            await future
        finally:
            if future.done() and not future.cancelled():
                self._granted -= 1

    def _tick(self) -> None:
        """At the start of each loop iteration while requests run or wait: a new budget;
        once the requests let through last time have all tried theirs, every waiting
        request is let through to try the next, oldest first."""
        loop = asyncio.get_running_loop()
        self._iteration_started = time.perf_counter()
        if self._granted:
            # Those let through last time run in this iteration, after this callback;
            # the ones that find no time left go first next time (``_carry``).
            loop.call_soon(self._tick)
            return
        waiting = [*self._carry, *self._queue]
        self._carry.clear()
        self._queue.clear()
        if not waiting and not self._active and not self._granted:
            self._ticking = False
            return
        self._active = False
        # Scheduled before the waiters are woken, so the next tick runs before them.
        loop.call_soon(self._tick)
        for future in waiting:
            if not future.done():  # a cancelled one (its connection closed) is skipped
                future.set_result(None)
                self._granted += 1
