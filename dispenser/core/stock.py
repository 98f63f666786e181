"""Robot stock in memory: slots, packs, FEFO allocation and slot choice.

A slot holds up to ``capacity`` packs of **one drug and one batch**, so FEFO across slots
is FEFO per pack. The robot takes packs from a slot first-stored-first-out; a reservation
is therefore a count on a slot, and which serials left is known when the pick completes.
An output task that names packs by id **claims** the head of their slot: nothing else is
reserved there until its pick is done, so the robot's first packs are exactly those.
This module holds no I/O: ``dispenser.core`` journals every change.

``touched`` collects the drugs whose stock changed (packs stored, taken, lost, blocked,
reserved or given back) for whoever reports stock changes (the WWKS2 front door); it is
emptied by that reader, never by this module.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from datetime import date

from dispenser.core.states import PackState


@dataclass(frozen=True)
class SlotGeometry:
    sides: int = 2
    levels: int = 25
    columns: int = 200
    capacity: int = 10

    @property
    def slots(self) -> int:
        return self.sides * self.levels * self.columns

    def slot_number(self, side: int, level: int, column: int) -> int:
        return (side * self.levels + level) * self.columns + column

    def locate(self, slot: int) -> tuple[int, int, int]:
        """(side, level, column) of a slot number."""
        rest, column = divmod(slot, self.columns)
        side, level = divmod(rest, self.levels)
        return side, level, column

    def position(self, slot: int) -> tuple[float, float]:
        """(x, y) in metres; input and output are at x = 0."""
        _, level, column = self.locate(slot)
        return column * 0.10, level * 0.08

    def travel_key(self, slot: int) -> tuple[float, int]:
        """Sort key: slots that are quicker to reach from x = 0 come first (axes move at
        once, horizontal about twice as fast as vertical)."""
        x, y = self.position(slot)
        return max(x / 2.0, y), slot


@dataclass(slots=True)
class Pack:
    pack_id: int
    drug_code: str
    batch: str
    expiry: date
    serial: str | None
    state: PackState
    slot: int | None = None
    store_seq: int | None = None
    shipment_id: str | None = None
    order_id: str | None = None
    task_id: str | None = None  # the output task it was picked for


@dataclass(slots=True)
class Slot:
    number: int
    drug_code: str
    batch: str
    expiry: date
    packs: list[int] = field(default_factory=list)  # in_stock pack ids in store order
    incoming: int = 0  # packs assigned (loading) but not yet stored
    reserved: int = 0
    blocked: bool = False  # quarantined batch or count discrepancy: never allocated
    claimed: bool = False  # its first packs are an output task's, by pack id

    @property
    def available(self) -> int:
        return 0 if self.blocked or self.claimed else len(self.packs) - self.reserved

    def fefo_key(self) -> tuple[date, int]:
        return self.expiry, self.number


class NoFreeSlot(Exception):
    pass


class StockIndex:
    """Which slot holds what, and where a new pack goes."""

    def __init__(self, geometry: SlotGeometry) -> None:
        self.geometry = geometry
        self.slots: dict[int, Slot] = {}
        self.by_drug: dict[str, list[tuple[tuple[date, int], int]]] = {}
        self.by_batch: dict[tuple[str, str], set[int]] = {}
        # Every slot in use by (expiry, number): the slots that expire before a day are a
        # bisection away (near-expiry counts and lists without a scan of all slots).
        self.by_expiry: list[tuple[date, int]] = []
        self.touched: set[str] = set()
        self.travel = [geometry.travel_key(n) for n in range(geometry.slots)]
        keys = [(k, n) for n, k in enumerate(self.travel)]
        heapq.heapify(keys)
        self._free = keys

    def _occupy(self, slot: Slot) -> None:
        self.slots[slot.number] = slot
        insort(self.by_drug.setdefault(slot.drug_code, []), (slot.fefo_key(), slot.number))
        self.by_batch.setdefault((slot.drug_code, slot.batch), set()).add(slot.number)
        insort(self.by_expiry, slot.fefo_key())

    def _maybe_free(self, slot: Slot) -> None:
        if slot.packs or slot.incoming or slot.blocked or slot.reserved:
            return
        if self.slots.get(slot.number) is not slot:
            return
        del self.slots[slot.number]
        self.by_drug[slot.drug_code].remove((slot.fefo_key(), slot.number))
        self.by_batch[(slot.drug_code, slot.batch)].discard(slot.number)
        self.by_expiry.remove(slot.fefo_key())
        heapq.heappush(self._free, (self.travel[slot.number], slot.number))

    def choose_slot(self, drug_code: str, batch: str, expiry: date) -> int:
        """A slot of the same drug and batch with room, else the free slot nearest x=0."""
        cap = self.geometry.capacity
        best: Slot | None = None
        for n in self.by_batch.get((drug_code, batch), ()):
            s = self.slots[n]
            if not s.blocked and s.expiry == expiry and len(s.packs) + s.incoming < cap and (
                    best is None or s.number < best.number):
                best = s
        if best is not None:
            return best.number
        while self._free:
            _, n = heapq.heappop(self._free)
            if n not in self.slots:
                self._occupy(Slot(n, drug_code, batch, expiry))
                return n
        raise NoFreeSlot

    def add_incoming(self, slot_no: int, drug_code: str, batch: str, expiry: date) -> None:
        """Restore an assignment (used when loading state from the journal)."""
        slot = self.slots.get(slot_no)
        if slot is None:
            slot = Slot(slot_no, drug_code, batch, expiry)
            self._occupy(slot)
        slot.incoming += 1

    def place(self, slot_no: int, drug_code: str, batch: str, expiry: date, pack_id: int,
              incoming: bool) -> None:
        slot = self.slots.get(slot_no)
        if slot is None:
            slot = Slot(slot_no, drug_code, batch, expiry)
            self._occupy(slot)
        if incoming:
            slot.incoming -= 1
        slot.packs.append(pack_id)
        self.touched.add(drug_code)

    def cancel_incoming(self, slot_no: int) -> None:
        slot = self.slots[slot_no]
        slot.incoming -= 1
        self._maybe_free(slot)

    def take(self, slot_no: int, n: int) -> list[int]:
        """Remove the first n packs stored (FIFO) and return their ids."""
        slot = self.slots[slot_no]
        taken, slot.packs = slot.packs[:n], slot.packs[n:]
        self.touched.add(slot.drug_code)
        self._maybe_free(slot)
        return taken

    def remove_pack(self, slot_no: int, pack_id: int) -> None:
        slot = self.slots[slot_no]
        slot.packs.remove(pack_id)
        self.touched.add(slot.drug_code)
        self._maybe_free(slot)

    def block(self, slot_no: int) -> None:
        slot = self.slots[slot_no]
        slot.blocked = True
        if slot.drug_code:
            self.touched.add(slot.drug_code)

    def unblock_if_empty(self, slot_no: int) -> None:
        slot = self.slots.get(slot_no)
        if slot is not None and not slot.packs and not slot.incoming:
            slot.blocked = False
            self._maybe_free(slot)

    def allocate(self, drug_code: str, quantity: int,
                 earliest: date) -> tuple[list[tuple[int, int]], int]:
        """Reserve up to ``quantity`` packs FEFO among the slots whose expiry is on or after
        ``earliest`` (``dispenser.core.expiry.earliest_expiry``); returns ([(slot, count)],
        shortfall). Blocked slots are never used."""
        picks: list[tuple[int, int]] = []
        need = quantity
        # A drug has a few slots (3 on average with 20,000 packs): a plain walk in expiry
        # order is as fast as a bisection to the first that qualifies (docs/performance.md).
        for (expiry, _), n in self.by_drug.get(drug_code, ()):
            if need == 0:
                break
            if expiry < earliest:
                continue
            s = self.slots[n]
            avail = s.available
            if avail <= 0:
                continue
            k = min(avail, need)
            s.reserved += k
            picks.append((n, k))
            need -= k
        if picks:
            self.touched.add(drug_code)
        return picks, need

    def allocate_for_task(self, drug_code: str, quantity: int, usable_from: date,
                          batch: str | None = None, single_batch: bool = False
                          ) -> tuple[list[tuple[int, int]], int]:
        """Reserve up to ``quantity`` packs FEFO for an output task, among slots whose
        packs expire on or after ``usable_from`` (and of ``batch`` when given); returns
        ([(slot, count)], shortfall). With ``single_batch`` every pack comes from one
        batch: the first (FEFO) that has them all, else the one with the most."""
        usable = [n for (expiry, _), n in self.by_drug.get(drug_code, ())
                  if expiry >= usable_from and self.slots[n].available > 0
                  and (batch is None or self.slots[n].batch == batch)]
        if single_batch:
            by_batch: dict[str, list[int]] = {}
            for n in usable:
                by_batch.setdefault(self.slots[n].batch, []).append(n)
            best: list[int] = []
            most = 0
            for numbers in by_batch.values():  # in FEFO order of each batch's first slot
                count = sum(self.slots[n].available for n in numbers)
                if count >= quantity:
                    best = numbers
                    break
                if count > most:
                    best, most = numbers, count
            usable = best
        picks: list[tuple[int, int]] = []
        need = quantity
        for n in usable:
            if need == 0:
                break
            s = self.slots[n]
            k = min(s.available, need)
            s.reserved += k
            picks.append((n, k))
            need -= k
        if picks:
            self.touched.add(drug_code)
        return picks, need

    def claim_head(self, slot_no: int, pack_ids: list[int]) -> bool:
        """Reserve exactly these packs of a slot for an output task: they must be the
        slot's first packs (the robot takes the oldest stored first) and nothing else may
        be reserved on it. The slot is then claimed until ``release_claim``."""
        slot = self.slots.get(slot_no)
        k = len(pack_ids)
        if (slot is None or slot.blocked or slot.claimed or slot.reserved
                or set(slot.packs[:k]) != set(pack_ids) or len(set(pack_ids)) != k):
            return False
        slot.reserved = k
        slot.claimed = True
        self.touched.add(slot.drug_code)
        return True

    def release_claim(self, slot_no: int) -> None:
        slot = self.slots.get(slot_no)
        if slot is not None and slot.claimed:
            slot.claimed = False
            self.touched.add(slot.drug_code)
            self._maybe_free(slot)

    def available(self, drug_code: str, earliest: date) -> int:
        """Packs of a drug that could be reserved now with an expiry on or after
        ``earliest``."""
        return sum(self.slots[n].available for (exp, _), n in self.by_drug.get(drug_code, ())
                   if exp >= earliest and self.slots[n].available > 0)

    def expiring_before(self, day: date) -> list[Slot]:
        """Slots in use whose packs expire before ``day``, soonest first."""
        end = bisect_left(self.by_expiry, (day, -1))
        return [self.slots[n] for _, n in self.by_expiry[:end]]

    def unreserve(self, slot_no: int, count: int) -> None:
        slot = self.slots.get(slot_no)
        if slot is not None:
            slot.reserved = max(0, slot.reserved - count)
            if count and slot.drug_code:
                self.touched.add(slot.drug_code)
            self._maybe_free(slot)
