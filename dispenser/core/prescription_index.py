"""The registered prescriptions an order may still cite, kept in memory in a compact form,
so that the provenance check of the common order (its prescription registered, as issued,
by a designated institution, with packs left) reads nothing from the journal.

The index answers one question: "does this order pass, and which fills does it draw?".
Anything else (a prescription not kept here, a field that differs, an item not prescribed,
too few packs left) is answered ``None``, and ``PrescriptionBook.assess`` takes its journal
path, which gives the holds and their wording: the rules are written once, there.

What is kept, per prescription of a designated institution issued within ``keep_days``
(older ones can no longer be filled under the age limit; they are read from the journal
when cited): its sequence number, a fingerprint of the fields the order must repeat
(institution, prescriber, patient, issue date), its diagnoses and items (both shared with
every prescription that has the same) and each item's fills, packed in one ``bytes``: about
170 bytes per prescription with its key (docs/performance.md). The fingerprint is the
process's own keyed hash (``hash``, SipHash with a per-process random key), so a match
by accident is a 2^-64 event no sender can aim at.

Memory follows the journal: changes are made in the same transaction as the journal's,
and a rollback forgets every prescription the transaction touched, to be read again from
the journal once no transaction is open. The index is built from the journal at once, or
(``warm=False``, as the daemon does) a slice per ``warm_step`` call after the start; a
prescription not read yet is answered by the journal.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING

from dispenser.core.books import bulk
from dispenser.journal import Journal

if TYPE_CHECKING:
    from dispenser.core.formulary import Formulary
    from dispenser.core.orders import Order

__all__ = ["PrescriptionIndex", "normal_name"]

# seq, fingerprint, issue day (ordinal), diagnoses id, items id; then one u16 of fills
# per item (a prescribed quantity is at most 1,000 packs).
_HEAD = struct.Struct("<IqIII")
SWEEP = 2000  # prescriptions looked at per call when the day has changed
WARM = 1000  # prescriptions read per step while the index is being built
_AMBIGUOUS = ""  # two designated institutions share a name or code: never the fast path



@functools.lru_cache(maxsize=64)
def _fills_of(items: int) -> struct.Struct:
    return struct.Struct(f"<{items}H")


# (ingredients, prescribed quantity) per item, in item order
Items = tuple[tuple[tuple[str, ...], int], ...]


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=8192)
def normal_name(text: str) -> str:
    """Institution names and codes compared ignoring case and spacing (cached: a day's
    orders name a few institutions and prescribers many times)."""
    return " ".join(text.split()).casefold()


class PrescriptionIndex:
    def __init__(self, journal: Journal, formulary: Formulary,
                 institutions: Mapping[str, str], keep_days: int, today: date,
                 warm: bool = True) -> None:
        self.journal = journal
        self.formulary = formulary
        self.institutions = dict(institutions)
        self.keep_days = keep_days
        # The normal form of a designated institution's code or name -> its code.
        self._designated: dict[str, str] = {}
        for code, name in self.institutions.items():
            for said in {normal_name(code), normal_name(name)}:
                known = self._designated.get(said)
                self._designated[said] = code if known in (None, code) else _AMBIGUOUS
        self._kept: dict[str, bytes] = {}
        self._diagnoses: list[tuple[str, ...]] = []
        self._diagnosis_ids: dict[tuple[str, ...], int] = {}
        self._items: list[Items] = []
        self._item_ids: dict[Items, int] = {}
        self._item_parts: dict[tuple[str, int], tuple[tuple[str, ...], int]] = {}
        self._touched: set[str] = set()
        self._again: set[str] = set()  # forgotten by a rollback, to read again
        self._oldest = (today - timedelta(days=keep_days)).toordinal()
        self._sweep: list[str] = []  # ids still to look at since the day changed
        self._read_to = 0  # the journal's prescriptions up to this seq have been read
        self.ready = False
        journal.on_commit.append(self._committed)
        journal.on_rollback.append(self._rolled_back)
        if warm and not journal.in_transaction:  # (inside one it would read nothing)
            with bulk():  # (a few hundred thousand rows at start)
                while not self.warm_step():
                    pass

    def __len__(self) -> int:
        return len(self._kept)

    # ------------------------------------------------------------------ building
    def warm_step(self, prescriptions: int | None = None) -> bool:
        """Read the next ``WARM`` prescriptions of the journal into the index; ``True``
        once all are read. Until then a prescription not read yet is answered by the
        journal, as any prescription not kept. Inside a transaction it reads nothing (what
        it read could still be undone). It also reads again what a rollback made the index
        forget."""
        if self.journal.in_transaction:
            return self.ready
        self._read_again()
        if self.ready:
            return True
        limit = prescriptions or WARM
        seqs = [seq for (seq,) in self.journal.iterate(
            "SELECT seq FROM prescriptions WHERE seq > ? ORDER BY seq LIMIT ?",
            (self._read_to, limit))]
        if not seqs:
            self.ready = True
            return True
        self._read("p.seq BETWEEN ? AND ?", (seqs[0], seqs[-1]))
        self._read_to = seqs[-1]
        if len(seqs) < limit:
            self.ready = True
        return self.ready

    def _read(self, where: str, params: Sequence[object]) -> None:
        """Keep the prescriptions ``where`` selects, as the journal has them now."""
        oldest = date.fromordinal(self._oldest).isoformat()
        current: str | None = None
        head: tuple[int, str, str, str, date, tuple[str, ...]] | None = None
        items: list[tuple[tuple[str, ...], int]] = []
        filled: list[int] = []
        for (rx_id, seq, institution, prescriber, patient_id, issued_on, diagnoses,
             ingredients, quantity, fills) in self.journal.iterate(
                "SELECT p.prescription_id, p.seq, p.institution, p.prescriber, p.patient_id, "
                "p.issued_on, p.diagnoses, i.ingredients, i.quantity, i.filled "
                "FROM prescriptions p JOIN prescription_items i ON i.prescription_seq = p.seq "
                f"WHERE {where} AND p.issued_on >= ? ORDER BY p.seq, i.item_no",
                (*params, oldest)):
            if rx_id != current:
                if current is not None and head is not None:
                    self._keep(current, *head, tuple(items), filled)
                current, items, filled = rx_id, [], []
                head = (seq, institution, prescriber, patient_id,
                        date.fromisoformat(issued_on), tuple(diagnoses.split(",")))
            items.append(self._shared_item(ingredients, quantity))
            filled.append(fills)
        if current is not None and head is not None:
            self._keep(current, *head, tuple(items), filled)

    def add(self, prescription_id: str, seq: int, institution: str, prescriber: str,
            patient_id: str, issued_on: date, diagnoses: Sequence[str],
            items: Sequence[tuple[str, int]]) -> None:
        """A prescription just registered (inside its transaction); ``items`` as
        ``(ingredients joined by ";", quantity)``."""
        self._touched.add(prescription_id)
        self._keep(prescription_id, seq, institution, prescriber, patient_id, issued_on,
                   tuple(diagnoses), tuple(self._shared_item(i, q) for i, q in items),
                   [0] * len(items))

    def _keep(self, prescription_id: str, seq: int, institution: str, prescriber: str,
              patient_id: str, issued_on: date, diagnoses: tuple[str, ...], items: Items,
              filled: Sequence[int]) -> None:
        day = issued_on.toordinal()
        if institution not in self.institutions or day < self._oldest:
            return  # never the fast path: the journal answers (with its hold)
        mark = hash((institution, normal_name(prescriber), patient_id, day))
        self._kept[prescription_id] = (
            _HEAD.pack(seq, mark, day, self._shared_diagnoses(diagnoses),
                       self._shared_items(items))
            + _fills_of(len(items)).pack(*filled))

    def _shared_item(self, ingredients: str, quantity: int) -> tuple[tuple[str, ...], int]:
        key = (ingredients, quantity)
        item = self._item_parts.get(key)
        if item is None:
            item = self._item_parts[key] = (
                tuple(ingredients.split(";")) if ingredients else (), quantity)
        return item

    def _shared_diagnoses(self, diagnoses: tuple[str, ...]) -> int:
        n = self._diagnosis_ids.get(diagnoses)
        if n is None:
            n = self._diagnosis_ids[diagnoses] = len(self._diagnoses)
            self._diagnoses.append(diagnoses)
        return n

    def _shared_items(self, items: Items) -> int:
        n = self._item_ids.get(items)
        if n is None:
            n = self._item_ids[items] = len(self._items)
            self._items.append(items)
        return n

    # ------------------------------------------------------------------ the question
    def passes(self, order: Order) -> list[tuple[int, int, int]] | None:
        """The fills ``(prescription seq, item no, packs)`` the order draws when its
        prescription check passes on what is kept here; ``None`` when the journal must
        answer (the prescription is not kept, or the order does not pass)."""
        ordered = order.prescription
        kept = self._kept.get(ordered.id)
        if kept is None:
            return None
        seq, mark, _, diagnoses_id, items_id = _HEAD.unpack_from(kept)
        code = self._designated.get(normal_name(ordered.institution))
        if not code or mark != hash((code, normal_name(ordered.prescriber), order.patient.id,
                                     ordered.issued_on.toordinal())):
            return None
        diagnoses = self._diagnoses[diagnoses_id]
        for d in ordered.diagnoses:
            if d not in diagnoses:
                return None
        items = self._items[items_id]
        left = [q - f for (_, q), f in zip(
            items, _fills_of(len(items)).unpack_from(kept, _HEAD.size), strict=True)]
        fills = []
        by_code = self.formulary.ingredients
        for item in order.items:
            wanted = by_code.get(item.drug_code) or (item.drug_code,)  # (ingredients_of)
            best = -1
            for n, (ingredients, _) in enumerate(items):
                # The item with the most left; the first of equals (as max() picks).
                if ingredients == wanted and (best < 0 or left[n] > left[best]):
                    best = n
            if best < 0 or item.quantity > left[best]:
                return None
            left[best] -= item.quantity
            fills.append((seq, best, item.quantity))
        return fills

    # ------------------------------------------------------------------ fills
    def fill(self, prescription_id: str, changes: Sequence[tuple[int, int]]) -> None:
        """Fills drawn (``packs`` > 0) or given back (< 0) as ``(item no, packs)``, in the
        transaction that writes them."""
        kept = self._kept.get(prescription_id)
        if kept is None:
            return
        self._touched.add(prescription_id)
        n = (len(kept) - _HEAD.size) // 2
        filled = list(_fills_of(n).unpack_from(kept, _HEAD.size))
        for item_no, packs in changes:
            filled[item_no] += packs
        if min(filled) < 0:  # the journal disagrees: let it answer from now on
            del self._kept[prescription_id]
            return
        self._kept[prescription_id] = kept[:_HEAD.size] + _fills_of(n).pack(*filled)

    # ------------------------------------------------------------------ the journal
    def _committed(self, _took: float) -> None:
        self._touched.clear()
        self._read_again()

    def _rolled_back(self) -> None:
        for prescription_id in self._touched:
            self._kept.pop(prescription_id, None)
        self._again |= self._touched
        self._touched.clear()
        self._read_again()

    def _read_again(self) -> None:
        """Read from the journal the prescriptions a rollback made the index forget, once
        no transaction is open (inside one, what is read could still be undone)."""
        if not self._again or self.journal.in_transaction:
            return
        again, self._again = sorted(self._again), set()
        for n in range(0, len(again), 500):
            chunk = again[n:n + 500]
            self._read(f"p.prescription_id IN ({','.join('?' * len(chunk))})", chunk)

    def forget_older(self, today: date) -> None:
        """Drop prescriptions issued more than ``keep_days`` before ``today``: they can no
        longer be filled under the age limit. When the day changes the kept ones are
        walked a slice per call (``SWEEP`` entries), so that no call holds the event loop
        for the whole index; one not dropped yet is still a right answer (the index does not
        judge age), only memory."""
        oldest = (today - timedelta(days=self.keep_days)).toordinal()
        if oldest > self._oldest:
            self._oldest = oldest
            self._sweep = list(self._kept)
        if not self._sweep:
            return
        kept = self._kept
        for prescription_id in self._sweep[-SWEEP:]:
            packed = kept.get(prescription_id)
            if packed is not None and _HEAD.unpack_from(packed)[2] < self._oldest:
                del kept[prescription_id]
        del self._sweep[-SWEEP:]
