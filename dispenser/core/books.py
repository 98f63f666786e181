"""What every part of the core shares: the journal, the clock, transactions and audit rows.

Every change is written inside ``tx()``; a nested ``tx()`` is a savepoint. When a
transaction that wrote is rolled back (or its commit fails), the journal calls the
facade's reload, which rebuilds every part's memory from the journal: memory and journal
never disagree.

During a merge round (``round(stamp)``) audit rows are collected and written with one
statement at its end, all with the round's one time stamp.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime

from dispenser.core.views import Actor
from dispenser.journal import Journal

__all__ = ["AuditRow", "Books", "bulk"]

AuditRow = tuple[str, str, str, str, str, object, object]


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector during bulk work: it only finds cycles, and its
    full passes over hundreds of thousands of young objects cost more than the work."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Books:
    def __init__(self, journal: Journal, clock: Callable[[], datetime]) -> None:
        self.journal = journal
        self.clock = clock
        self._fixed_stamp: str | None = None
        self._pending_audit: list[AuditRow] | None = None

    @contextmanager
    def tx(self) -> Iterator[None]:
        with self.journal.transaction():
            yield

    def stamp(self) -> str:
        """Time for journal rows; one fixed value while a merge round runs."""
        return self._fixed_stamp or self.clock().isoformat()

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        return self.clock().date()

    def audit(self, actor: Actor, action: str, subject: str, before: object = None,
              after: object = None) -> None:
        if self._pending_audit is not None:  # a merge round: appended in order at its end
            self._pending_audit.append((self.stamp(), actor.name, actor.role, action,
                                        subject, before, after))
            return
        self.journal.audit(self.stamp(), actor.name, actor.role, action, subject,
                           before, after)

    @contextmanager
    def round(self, stamp: str) -> Iterator[None]:
        """A merge round: one time stamp; audit rows written together at the end (inside
        the caller's transaction)."""
        self._fixed_stamp, self._pending_audit = stamp, []
        try:
            yield
            self.journal.audit_many(self._pending_audit)
        finally:
            self._fixed_stamp, self._pending_audit = None, None
