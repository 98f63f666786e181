"""Group commit: journal work of concurrent API calls shares one transaction (one fsync).

Each call hands a function to ``run``; every function queued before the event loop gets
round to the flush runs inside one ``Dispensary.batch()``, each in its own savepoint (a
refused order undoes only itself). The callers' futures are resolved after the commit,
so no caller is told "accepted" before its order is on disk. Under load the batches grow
by themselves: while one commit waits for the disk, the next calls queue up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from dispenser.core import Dispensary
from dispenser.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

__all__ = ["GroupCommit"]


class GroupCommit:
    def __init__(self, dispensary: Dispensary, max_batch: int = 2000) -> None:
        self.d = dispensary
        self.max_batch = max_batch
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self.batches = 0
        self.calls = 0
        self.largest = 0

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (journal work, synchronous) in the next group transaction."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        if self._pending:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        if not batch:
            return
        outcomes: list[tuple[asyncio.Future[Any], bool, Any]] = []
        try:
            with self.d.batch():
                for fn, fut in batch:
                    try:
                        with self.d.journal.transaction():
                            outcomes.append((fut, True, fn()))
                    except Exception as exc:  # handed to that caller only
                        outcomes.append((fut, False, exc))
        except Exception as exc:
            log.exception("group commit failed", calls=len(batch))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.batches += 1
        self.calls += len(batch)
        self.largest = max(self.largest, len(batch))
        for fut, ok, value in outcomes:
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
