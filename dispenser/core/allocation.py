"""Allocation: which packs a shipment gets, first-expiry-first-out.

A shipment's robot lines are reserved as counts on slots (``StockIndex.allocate``, FEFO)
among the slots whose packs last the line's whole supply
(``dispenser.core.expiry.earliest_expiry``: expiry on or after the dispense date +
max(min_shelf_life_days, days_supply)). Reservations made on an earlier day are checked
again when picking starts (``recheck``): one on a slot that no longer qualifies is moved.
When stock is short the shipment is held (``stock_short``) and waits for the drug, or,
with ``partial_dispensing``, goes with what there is. Stock that arrives or comes free
(``retry_waiting``) is offered to waiting shipments in schedule order; a reservation on a
slot that can no longer serve it (blocked, fewer packs than reserved) is moved elsewhere
(``reshuffle_slot``); what a shipment being picked still needs is ``owed``.

``Allocator`` owns the waiting lists (drug -> shipments) and which shipments hold
reservations on each slot; the reservation counts themselves live on the slots.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

from dispenser.core.books import Books
from dispenser.core.checks import STOCK_SHORT, Hold
from dispenser.core.expiry import earliest_expiry, near_expiry_before
from dispenser.core.policy import Policy
from dispenser.core.shipments import Line, Shipment, ShipmentBook
from dispenser.core.states import ShipmentState
from dispenser.core.views import SYSTEM

if TYPE_CHECKING:
    from dispenser.core.stock import StockIndex
    from dispenser.core.tasks import TaskBook

__all__ = ["Allocator"]


class Allocator:
    stock: StockIndex  # the PackBook's, given at each load
    tasks: TaskBook  # wired by the Dispensary

    def __init__(self, books: Books, policy: Policy, shipments: ShipmentBook) -> None:
        self.books = books
        self.policy = policy
        self.shipments = shipments
        self._earliest_day = date.min
        self._earliest_by_supply: dict[int, date] = {}

    def load(self, stock: StockIndex) -> None:
        """Rebuild the reservations and waiting lists from the live shipments and output
        tasks (after they and the stock index were loaded)."""
        self.stock = stock
        self.waiting: dict[str, set[str]] = {}
        self.slot_res: dict[int, set[str]] = {}
        for sh in self.shipments.live.values():
            for ln in sh.lines:
                for slot_no, n in ln.reserved:
                    self.stock.slots[slot_no].reserved += n
                    self.slot_res.setdefault(slot_no, set()).add(sh.shipment_id)
                if ln.owed:
                    self.waiting.setdefault(ln.drug_code, set()).add(sh.shipment_id)
            for h in sh.holds:
                if h.code == STOCK_SHORT and h.drug_code:
                    self.waiting.setdefault(h.drug_code, set()).add(sh.shipment_id)
        for t in self.tasks.live.values():
            for tl in t.lines:
                for slot_no, n in tl.reserved:
                    slot = self.stock.slots[slot_no]
                    slot.reserved += n
                    slot.claimed = slot.claimed or bool(tl.pack_ids)
                    self.slot_res.setdefault(slot_no, set()).add(t.task_id)

    # ------------------------------------------------------------------ reservations
    def _add_reservations(self, sh: Shipment, ln: Line, picks: list[tuple[int, int]]) -> None:
        for slot_no, n in picks:
            for r in ln.reserved:
                if r[0] == slot_no:
                    r[1] += n
                    break
            else:
                ln.reserved.append([slot_no, n])
            self.slot_res.setdefault(slot_no, set()).add(sh.shipment_id)

    def release_line(self, ln: Line) -> None:
        for slot_no, n in ln.reserved:
            self.stock.unreserve(slot_no, n)
        ln.reserved = []

    def stop_waiting(self, sh: Shipment) -> None:
        """The shipment waits for no drug any more."""
        for ln in sh.lines:
            self.waiting.get(ln.drug_code, set()).discard(sh.shipment_id)

    def try_allocate(self, sh: Shipment) -> bool:
        """Reserve every robot line of a forming or held shipment; queue it, or hold it as
        stock_short (partial dispensing: queue what there is).

        A held shipment keeps no lines unless a pack was already confirmed for one of
        them: like a forming shipment's, its lines are made from its orders when stock is
        tried again. When stock is short, most of a merge round's shipments are held, and
        their lines were a third of the objects the round left in memory."""
        if not sh.lines:
            sh.lines = self.shipments.lines_as_ordered(sh)
        today = self.books.today()
        short: dict[str, int] = {}
        for ln in sh.lines:
            ln.owed = ln.short = 0
            if not ln.robot:
                continue
            need = ln.quantity - len(ln.packs) - ln.reserved_count
            if need > 0:
                picks, miss = self.stock.allocate(ln.drug_code, need, self._earliest(ln, today))
                if picks:
                    self._add_reservations(sh, ln, picks)
                if miss:
                    ln.owed = miss
                    short[ln.drug_code] = short.get(ln.drug_code, 0) + miss
        sendable = any(ln.reserved or ln.packs or not ln.robot for ln in sh.lines)
        if short and not (self.policy.partial_dispensing and sendable):
            for ln in sh.lines:
                self.release_line(ln)
                ln.owed = 0
            if all(ln.as_ordered for ln in sh.lines):
                sh.lines = []
            for code in short:
                self.waiting.setdefault(code, set()).add(sh.shipment_id)
            holds = [Hold(STOCK_SHORT, f"{n} pack(s) short", code) for code, n in short.items()]
            if sh.state is ShipmentState.HELD and sh.holds == holds:
                return False  # still short of the same: nothing new to record
            # Held anew, or held still but for another drug (the one it was held for came in,
            # another of its orders' drugs ran out meanwhile): the hold names what it waits
            # for, which is what staff load.
            self.shipments.fire(sh, "hold", SYSTEM, holds=holds, extra={"short": short})
            return False
        for ln in sh.lines:
            ln.short, ln.owed = ln.owed, 0
        self.shipments.fire(sh, "queue", SYSTEM, holds=[],
                            extra={"picks": [[ln.item, ln.reserved] for ln in sh.lines
                                             if ln.reserved],
                                   "manual": [ln.item for ln in sh.lines if not ln.robot],
                                   "short": short})
        return True

    def retry_waiting(self, drugs: Iterable[str]) -> None:
        """Stock came free for these drugs: release held shipments, fill what is owed."""
        sids: set[str] = set()
        for code in drugs:
            sids |= self.waiting.get(code, set())
        live = self.shipments.live
        waiting = sorted((sh for s in sids if (sh := live.get(s)) is not None),
                         key=Shipment.schedule_key)
        for sh in waiting:
            if sh.state is ShipmentState.HELD:
                self.try_allocate(sh)
            elif any(ln.owed for ln in sh.lines):
                self.fill_owed(sh, "shipment.reallocated")

    def fill_owed(self, sh: Shipment, action: str) -> None:
        """Reserve what a shipment's lines owe; a queued shipment that stays short is held,
        one being picked keeps the debt (and waits for stock)."""
        today = self.books.today()
        changed = []
        for ln in sh.lines:
            if ln.owed and ln.robot:
                picks, miss = self.stock.allocate(ln.drug_code, ln.owed,
                                                  self._earliest(ln, today))
                self._add_reservations(sh, ln, picks)
                changed.append([ln.item, picks, miss])
                ln.owed = miss
        if sh.state is ShipmentState.QUEUED and any(ln.owed for ln in sh.lines):
            if self.policy.partial_dispensing:
                for ln in sh.lines:
                    ln.short, ln.owed = ln.short + ln.owed, 0
            else:
                self.try_allocate(sh)  # releases and holds it
                return
        for ln in sh.lines:
            if ln.owed:
                self.waiting.setdefault(ln.drug_code, set()).add(sh.shipment_id)
        self.shipments.save(sh)
        self.books.audit(SYSTEM, action, sh.shipment_id, None, {"lines": changed})

    def reshuffle_slot(self, slot_no: int) -> None:
        """Move every reservation off a slot that cannot serve it any more (blocked, or
        fewer packs than reserved) and allocate it again FEFO."""
        holders: list[tuple[Shipment, Line, int]] = []
        tasks: list[str] = []
        for sid in self.slot_res.pop(slot_no, set()):
            if sid in self.tasks.live:
                tasks.append(sid)
                continue
            sh = self.shipments.live.get(sid)
            if sh is None:
                continue
            for ln in sh.lines:
                for r in [r for r in ln.reserved if r[0] == slot_no]:
                    ln.reserved.remove(r)
                    self.stock.unreserve(slot_no, r[1])
                    holders.append((sh, ln, r[1]))
        touched: dict[str, Shipment] = {}
        for sh, ln, n in sorted(holders, key=lambda h: h[0].schedule_key()):
            ln.owed += n
            touched[sh.shipment_id] = sh
        for sh in sorted(touched.values(), key=Shipment.schedule_key):
            self.fill_owed(sh, "shipment.reallocated")
        for tid in sorted(tasks):
            self.tasks.lose_slot(tid, slot_no)

    def recheck(self, sh: Shipment) -> bool:
        """Check a queued shipment's reservations again before picking starts: one on a
        slot that can no longer serve its line (blocked, or expiring before the line's
        ``earliest_expiry`` today, e.g. reserved on an earlier day) is given back and
        allocated again FEFO; without other stock the shipment is held ``stock_short``
        (partial dispensing: it goes with what there is). Returns True when something
        moved."""
        today = self.books.today()
        aged: list[tuple[str, int, int, str | None]] = []  # item, slot, count, expiry
        for ln in sh.lines:
            earliest = self._earliest(ln, today)
            for r in list(ln.reserved):
                slot = self.stock.slots.get(r[0])
                if slot is not None and not slot.blocked and slot.expiry >= earliest:
                    continue
                ln.reserved.remove(r)
                self.stock.unreserve(r[0], r[1])
                ln.owed += r[1]
                aged.append((ln.item, r[0], r[1],
                             slot.expiry.isoformat() if slot is not None else None))
        if not aged:
            return False
        for slot_no in {a[1] for a in aged}:
            if not any(r[0] == slot_no for ln in sh.lines for r in ln.reserved):
                self.slot_res.get(slot_no, set()).discard(sh.shipment_id)
        self.books.audit(SYSTEM, "shipment.reservations_checked", sh.shipment_id, None,
                         {"given_back": [list(a) for a in aged], "on": today.isoformat()})
        self.fill_owed(sh, "shipment.reallocated")
        return True

    def _earliest(self, ln: Line, today: date) -> date:
        """``earliest_expiry`` of a line, kept per day and days_supply: a merge round asks
        for it once per line (50,000 lines in a burst), for a handful of distinct values."""
        if today != self._earliest_day:
            self._earliest_day, self._earliest_by_supply = today, {}
        found = self._earliest_by_supply.get(ln.days_supply)
        if found is None:
            found = earliest_expiry(self.policy, today, ln.days_supply)
            self._earliest_by_supply[ln.days_supply] = found
        return found

    def stock_level(self, drug_code: str) -> int:
        """Packs of a drug that could be reserved now for the shortest supply an order may
        ask for (packs near expiry do not count)."""
        return self.stock.available(drug_code, near_expiry_before(self.policy,
                                                                  self.books.today()))
