"""Robot stock in memory: slots, packs, FEFO allocation and slot choice.

A slot holds up to ``capacity`` packs of **one drug and one batch**, so FEFO across slots
is FEFO per pack. The robot takes packs from a slot first-stored-first-out; a reservation
is therefore a count on a slot, and which serials left is known when the pick completes.
This module holds no I/O: ``dispenser.core`` journals every change.
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
    gtin: str
    batch: str
    expiry: date
    serial: str | None
    state: PackState
    slot: int | None = None
    store_seq: int | None = None
    shipment_id: str | None = None
    order_id: str | None = None


@dataclass(slots=True)
class Slot:
    number: int
    gtin: str
    batch: str
    expiry: date
    packs: list[int] = field(default_factory=list)  # in_stock pack ids in store order
    incoming: int = 0  # packs assigned (loading) but not yet stored
    reserved: int = 0
    blocked: bool = False  # quarantined batch or count discrepancy: never allocated

    @property
    def available(self) -> int:
        return 0 if self.blocked else len(self.packs) - self.reserved

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
        self.travel = [geometry.travel_key(n) for n in range(geometry.slots)]
        keys = [(k, n) for n, k in enumerate(self.travel)]
        heapq.heapify(keys)
        self._free = keys

    def _occupy(self, slot: Slot) -> None:
        self.slots[slot.number] = slot
        insort(self.by_drug.setdefault(slot.gtin, []), (slot.fefo_key(), slot.number))
        self.by_batch.setdefault((slot.gtin, slot.batch), set()).add(slot.number)
        insort(self.by_expiry, slot.fefo_key())

    def _maybe_free(self, slot: Slot) -> None:
        if slot.packs or slot.incoming or slot.blocked or slot.reserved:
            return
        if self.slots.get(slot.number) is not slot:
            return
        del self.slots[slot.number]
        self.by_drug[slot.gtin].remove((slot.fefo_key(), slot.number))
        self.by_batch[(slot.gtin, slot.batch)].discard(slot.number)
        self.by_expiry.remove(slot.fefo_key())
        heapq.heappush(self._free, (self.travel[slot.number], slot.number))

    def choose_slot(self, gtin: str, batch: str, expiry: date) -> int:
        """A slot of the same drug and batch with room, else the free slot nearest x=0."""
        cap = self.geometry.capacity
        best: Slot | None = None
        for n in self.by_batch.get((gtin, batch), ()):
            s = self.slots[n]
            if not s.blocked and s.expiry == expiry and len(s.packs) + s.incoming < cap and (
                    best is None or s.number < best.number):
                best = s
        if best is not None:
            return best.number
        while self._free:
            _, n = heapq.heappop(self._free)
            if n not in self.slots:
                self._occupy(Slot(n, gtin, batch, expiry))
                return n
        raise NoFreeSlot

    def add_incoming(self, slot_no: int, gtin: str, batch: str, expiry: date) -> None:
        """Restore an assignment (used when loading state from the journal)."""
        slot = self.slots.get(slot_no)
        if slot is None:
            slot = Slot(slot_no, gtin, batch, expiry)
            self._occupy(slot)
        slot.incoming += 1

    def place(self, slot_no: int, gtin: str, batch: str, expiry: date, pack_id: int,
              incoming: bool) -> None:
        slot = self.slots.get(slot_no)
        if slot is None:
            slot = Slot(slot_no, gtin, batch, expiry)
            self._occupy(slot)
        if incoming:
            slot.incoming -= 1
        slot.packs.append(pack_id)

    def cancel_incoming(self, slot_no: int) -> None:
        slot = self.slots[slot_no]
        slot.incoming -= 1
        self._maybe_free(slot)

    def take(self, slot_no: int, n: int) -> list[int]:
        """Remove the first n packs stored (FIFO) and return their ids."""
        slot = self.slots[slot_no]
        taken, slot.packs = slot.packs[:n], slot.packs[n:]
        self._maybe_free(slot)
        return taken

    def remove_pack(self, slot_no: int, pack_id: int) -> None:
        slot = self.slots[slot_no]
        slot.packs.remove(pack_id)
        self._maybe_free(slot)

    def block(self, slot_no: int) -> None:
        self.slots[slot_no].blocked = True

    def unblock_if_empty(self, slot_no: int) -> None:
        slot = self.slots.get(slot_no)
        if slot is not None and not slot.packs and not slot.incoming:
            slot.blocked = False
            self._maybe_free(slot)

    def allocate(self, gtin: str, quantity: int,
                 earliest: date) -> tuple[list[tuple[int, int]], int]:
        """Reserve up to ``quantity`` packs FEFO among the slots whose expiry is on or after
        ``earliest`` (``dispenser.core.expiry.earliest_expiry``); returns ([(slot, count)],
        shortfall). Blocked slots are never used."""
        picks: list[tuple[int, int]] = []
        need = quantity
        # A drug has a few slots (3 on average with 20,000 packs): a plain walk in expiry
        # order is as fast as a bisection to the first that qualifies (docs/performance.md).
        for (expiry, _), n in self.by_drug.get(gtin, ()):
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
        return picks, need

    def available(self, gtin: str, earliest: date) -> int:
        """Packs of a drug that could be reserved now with an expiry on or after
        ``earliest``."""
        return sum(self.slots[n].available for (exp, _), n in self.by_drug.get(gtin, ())
                   if exp >= earliest and self.slots[n].available > 0)

    def expiring_before(self, day: date) -> list[Slot]:
        """Slots in use whose packs expire before ``day``, soonest first."""
        end = bisect_left(self.by_expiry, (day, -1))
        return [self.slots[n] for _, n in self.by_expiry[:end]]

    def unreserve(self, slot_no: int, count: int) -> None:
        slot = self.slots.get(slot_no)
        if slot is not None:
            slot.reserved = max(0, slot.reserved - count)
            self._maybe_free(slot)
