"""Group commit: journal work of concurrent API calls shares one transaction (one fsync).

Each call hands a function to ``run``. Under load the first call of a batch waits
``gather_s`` for others (a lone call is committed at once); then the queued functions
run inside one ``Dispensary.batch()``, until ``budget_s`` of the loop's time is spent:
the rest go into the next transaction, after the loop has served whatever else waits
(the robot's cycle, other API calls), so that no commit holds the event loop long. Each
function must be atomic on its own (the core's calls are savepoints), so a refused order
undoes only itself. The callers' futures are resolved after the commit: no caller is told
"accepted" before its order is on disk. When the journal cannot be written
(``JournalUnavailable``) the whole transaction is rolled back and every caller in it gets
that error: none of their work is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dispenser.core import Dispensary
from dispenser.journal import JournalUnavailable
from dispenser.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

__all__ = ["GroupCommit"]


class GroupCommit:
    def __init__(self, dispensary: Dispensary, max_batch: int = 2000,
                 gather_s: float = 0.001, budget_s: float = 0.02) -> None:
        self.d = dispensary
        self.max_batch = max_batch
        # The loop's time one transaction may take before the rest waits for the next
        # (a call is never split: the budget is checked between calls).
        self.budget_s = budget_s
        # How long the first call of a batch waits for others to join it: a millisecond
        # turns a burst of single submissions into one commit instead of many.
        self.gather_s = gather_s
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self.batches = 0
        self._last_size = 0
        self.calls = 0
        self.largest = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (journal work, synchronous) in the next group transaction."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, fut))
        if not self._scheduled:
            self._scheduled = True
            # Under load (the last batch had company) wait a moment for more calls; when
            # calls come one by one, commit at once so a lone call pays no extra latency.
            if self._last_size > 1:
                loop.call_later(self.gather_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        if not batch:
            return
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        began = time.perf_counter()
        try:
            with self.d.batch():
                for n, (fn, fut) in enumerate(batch):
                    # Each function is atomic on its own (the core's calls are savepoints);
                    # a refusal is handed to that caller only.
                    try:
                        outcomes.append((fut, True, fn()))
                    except JournalUnavailable:
                        raise  # the transaction is lost: the whole batch is refused
                    except Exception as exc:
                        outcomes.append((fut, False, exc))
                    if n + 1 < len(batch) and time.perf_counter() - began >= self.budget_s:
                        # The rest go first into the next transaction.
                        self._pending[:0] = batch[n + 1:]
                        batch = batch[:n + 1]
                        break
        except JournalUnavailable as exc:
            self._again()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc.again())
            return
        except Exception as exc:
            self._again()
            log.exception("group commit failed", calls=len(batch))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self._again()
        self.batches += 1
        self.calls += len(batch)
        self.largest = max(self.largest, len(batch))
        self._last_size = len(batch)
        for fut, ok, value in outcomes:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _again(self) -> None:
        """Another transaction for the calls still waiting, after the loop's other work."""
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
