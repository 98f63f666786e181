"""Which ingredients each patient still has a supply of, from the journal (this pharmacy's
dispenses and the imported dispensing records), kept in memory so that the duplicate check
of an order without an overlap reads nothing from the journal.

The index answers one question: "may this patient have a supply of one of these
ingredients that lasts beyond that day?". When it may, the journal is read
(``dispenser.core.history.supplies_of``) and gives the supply and its wording; when it says
no, there is none. Per patient it keeps, for each ingredient, the last day a supply of it
lasts, for supplies that last beyond the day it was built: a few tuples per patient with a
current supply (docs/performance.md). Once a day the supplies that ran out are dropped.

Supplies are added in the transaction that writes them. A rollback leaves them in memory,
which errs on the safe side: the index says "may" and the journal, asked, says no. So the
index never says "no" where the journal says "yes". Built a slice per ``warm_step`` call
(``warm=False``, as the daemon does), it says "may" for everyone until it is complete.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date

from dispenser.core.books import bulk
from dispenser.core.checks import ingredients_of
from dispenser.core.formulary import Formulary
from dispenser.journal import Journal

__all__ = ["SupplyIndex"]


SWEEP = 2000  # patients looked at per call when the day has changed
WARM = 4000  # rows of the journal read per step while the index is being built
Pair = tuple[str, int]  # (ingredient, last day of its supply as a date ordinal)


class SupplyIndex:
    def __init__(self, journal: Journal, formulary: Formulary, today: date,
                 warm: bool = True) -> None:
        self.journal = journal
        self.formulary = formulary
        # patient -> (ingredient, last day of supply); the pairs are shared (a few
        # thousand distinct ones serve every patient).
        self._ends: dict[str, tuple[Pair, ...]] = {}
        self._pairs: dict[Pair, Pair] = {}
        self._floor = today.toordinal()
        self._sweep: list[str] = []  # patients still to look at since the day changed
        # How far the journal's tables have been read (rowid), in this order.
        self._to_read = ["history", "dispensing_records"]
        self._read_to = 0
        self.ready = False
        if warm:
            with bulk():  # (every current supply, at start)
                while not self.warm_step():
                    pass

    def warm_step(self, rows: int | None = None) -> bool:
        """Read the next ``WARM`` rows of the journal's dispenses and records; ``True``
        once all are read. Until then the index answers "may" for every patient (the
        journal is asked), so it is right at every step."""
        if self.ready:
            return True
        limit = rows or WARM
        table = self._to_read[0]
        after = date.fromordinal(self._floor).isoformat()
        formulary = self.formulary
        last = self._read_to
        n = 0
        for rowid, pid, what, end in self.journal.iterate(
                "SELECT rowid, patient_id, drug_code, supply_end FROM history "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?" if table == "history" else
                "SELECT rowid, patient_id, ingredients, supply_end FROM dispensing_records "
                "WHERE rowid > ? ORDER BY rowid LIMIT ?", (self._read_to, limit)):
            n += 1
            last = rowid
            if end <= after:
                continue
            if table == "history":
                self.add(pid, ingredients_of(what, formulary), date.fromisoformat(end))
            elif what:
                self.add(pid, what.split(";"), date.fromisoformat(end))
        self._read_to = last
        if n < limit:
            self._to_read.pop(0)
            self._read_to = 0
            self.ready = not self._to_read
        return self.ready

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, patient_id: str, ingredients: Iterable[str], end: date) -> None:
        """A supply written in the open transaction: ``ingredients`` until ``end``."""
        day = end.toordinal()
        if day <= self._floor:
            return
        ends = dict(self._ends.get(patient_id, ()))
        for name in ingredients:
            if day > ends.get(name, 0):
                ends[name] = day
        shared = self._pairs.setdefault
        self._ends[patient_id] = tuple(shared(pair, pair) for pair in ends.items())

    def may_overlap(self, patient_id: str, ingredients: Collection[str], after: date) -> bool:
        """Whether the patient may have a supply of one of ``ingredients`` that lasts
        beyond ``after`` (``False`` is sure; ``True`` means: ask the journal)."""
        day = after.toordinal()
        if day < self._floor or not self.ready:
            return True  # (supplies ending before the floor are not kept)
        ends = self._ends.get(patient_id)
        if not ends:
            return False
        # (A loop: any() over a generator costs twice as much.)
        for name, end in ends:  # noqa: SIM110
            if end > day and name in ingredients:
                return True
        return False

    def forget_ended(self, today: date) -> None:
        """Drop the supplies that ran out by ``today``. When the day changes the patients
        are walked a slice per call (``SWEEP`` of them), so that no call holds the event
        loop for the whole index; a supply not dropped yet cannot count (it ends before
        any day asked about), it only takes memory."""
        floor = today.toordinal()
        if floor > self._floor:
            self._floor = floor
            self._sweep = list(self._ends)
        if not self._sweep:
            return
        ends_of = self._ends
        for pid in self._sweep[-SWEEP:]:
            ends = ends_of.get(pid)
            if ends is None:
                continue
            left = tuple(pair for pair in ends if pair[1] > floor)
            if left:
                ends_of[pid] = left
            else:
                del ends_of[pid]
        del self._sweep[-SWEEP:]
        if not self._sweep:  # the pairs no patient can hold any more
            self._pairs = {pair: pair for pair in self._pairs if pair[1] > self._floor}
