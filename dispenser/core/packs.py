"""Packs: every box the machine holds or held, and what happens to them.

``PackBook`` owns the live packs in memory (loading, in stock, picked, quarantined), the
index of serials in the machine, the quarantined batches, the slot index
(``dispenser.core.stock.StockIndex``) and the ``packs``, ``blocked_slots``,
``quarantined_batches`` and ``discrepancies`` rows. ``fire`` is the one place a pack
changes state (``PACK_LIFECYCLE``), each change with its audit row.

A slot that can no longer be trusted (a count that differs, a short pick, a recalled
batch) is **blocked**: its packs are quarantined, reservations on it move elsewhere, and
it is never allocated again until it is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from dispenser.core.books import Books
from dispenser.core.errors import InvalidState, NotFound
from dispenser.core.expiry import expired, near_expiry_before
from dispenser.core.lifecycles import PACK_LIFECYCLE
from dispenser.core.policy import Policy
from dispenser.core.shared import shared_date, shared_text
from dispenser.core.states import PackState
from dispenser.core.stock import Pack, SlotGeometry, StockIndex
from dispenser.core.views import Actor, DiscrepancyView, PackView, StockCounts

if TYPE_CHECKING:
    from dispenser.core.allocation import Allocator
    from dispenser.core.shipments import ShipmentBook
    from dispenser.core.tasks import TaskBook

__all__ = ["SERIAL_DISPENSED", "PackBook", "pack_view_row"]

_LIVE = (PackState.LOADING.value, PackState.IN_STOCK.value, PackState.PICKED.value,
         PackState.QUARANTINED.value)
_GONE = (PackState.DISPENSED, PackState.DISPOSED, PackState.REFUSED, PackState.MISSING,
         PackState.DROPPED)
# How a pack is lost.
LOST_TRIGGER = {PackState.DROPPED: "drop", PackState.MISSING: "miss"}

# Was this serial of this drug dispensed before? Looked up for every loading scan and
# every manual pack. Without INDEXED BY, SQLite answers from the index on state alone (it
# has no statistics to prefer the other), walking every dispensed pack: 10 ms per scan with
# 57,000 dispensed packs, against 5 us through (drug_code, serial).
SERIAL_DISPENSED = ("SELECT state FROM packs INDEXED BY packs_serial "
                    "WHERE drug_code=? AND serial=? AND state IN ('dispensed', 'disposed') "
                    "ORDER BY state = 'dispensed' DESC LIMIT 1")
_PACK_COLUMNS = ("pack_id, drug_code, batch, expiry, serial, state, slot, shipment_id, order_id, "
                 "task_id")


def pack_view_row(r: Sequence[Any], near_before: date = date.min,
                  today: date = date.min) -> PackView:
    """A pack's view from its row (``_PACK_COLUMNS``); in stock and expiring before
    ``near_before`` it is near expiry, before ``today`` expired (the defaults flag
    nothing)."""
    expiry, state = date.fromisoformat(r[3]), PackState(r[5])
    in_stock = state is PackState.IN_STOCK
    return PackView(r[0], r[1], r[2], expiry, r[4], state, r[6], r[7], r[8], r[9],
                    in_stock and expiry < near_before, in_stock and expiry < today)


class PackBook:
    allocator: Allocator  # wired by the Dispensary
    shipments: ShipmentBook
    tasks: TaskBook

    def __init__(self, books: Books, geometry: SlotGeometry, policy: Policy) -> None:
        self.books = books
        self.journal = books.journal
        self.geometry = geometry
        self.policy = policy

    # ------------------------------------------------------------------ memory
    def load(self) -> None:
        j = self.journal
        self.live: dict[int, Pack] = {}
        # Live packs by state, kept by ``insert`` and ``fire``: machine.status counts
        # without a scan.
        self.counts: dict[PackState, int] = dict.fromkeys(PackState, 0)
        self.serials: dict[tuple[str, str], int] = {}
        self.stock = StockIndex(self.geometry)
        self.quarantined = {(g, b) for g, b in j.query(
            "SELECT drug_code, batch FROM quarantined_batches")}
        marks = ",".join("?" * len(_LIVE))
        for prow in j.iterate(
                "SELECT pack_id, drug_code, batch, expiry, serial, slot, store_seq, state, "
                f"shipment_id, order_id, task_id FROM packs WHERE state IN ({marks}) "
                "ORDER BY store_seq IS NULL, store_seq, pack_id", _LIVE):
            p = Pack(prow[0], shared_text(prow[1]), shared_text(prow[2]), shared_date(prow[3]),
                     prow[4],
                     PackState(prow[7]), prow[5], prow[6], prow[8], prow[9], prow[10])
            self.live[p.pack_id] = p
            self.counts[p.state] += 1
            if p.serial is not None:
                self.serials[(p.drug_code, p.serial)] = p.pack_id
            if p.slot is None:
                continue
            if p.state is PackState.LOADING:
                self.stock.add_incoming(p.slot, p.drug_code, p.batch, p.expiry)
            elif p.state is PackState.IN_STOCK or (
                    p.state is PackState.QUARANTINED and p.shipment_id is None
                    and p.task_id is None):
                self.stock.place(p.slot, p.drug_code, p.batch, p.expiry, p.pack_id, incoming=False)
        for (slot_no,) in j.query("SELECT slot FROM blocked_slots"):
            self._ensure_slot(slot_no)
            self.stock.block(slot_no)
        self.next_pack_id = (j.query_one("SELECT max(pack_id) FROM packs")[0] or 0) + 1
        self.next_store_seq = (j.query_one("SELECT max(store_seq) FROM packs")[0] or 0) + 1

    def _ensure_slot(self, slot_no: int) -> None:
        if slot_no not in self.stock.slots:
            self.stock.add_incoming(slot_no, "", "", date.max)
            self.stock.slots[slot_no].incoming = 0

    # ------------------------------------------------------------------ lifecycle
    def fire(self, p: Pack, trigger: str, actor: Actor, reason: str | None = None,
             extra: dict[str, Any] | None = None) -> None:
        """The one place a pack changes state: row, audit row, memory."""
        new = PACK_LIFECYCLE.next_state(p.state, trigger, f"pack:{p.pack_id}")
        before = p.state
        p.state = new
        self.counts[before] -= 1
        if new not in _GONE:
            self.counts[new] += 1
        self.journal.write("UPDATE packs SET state=?, slot=?, store_seq=?, shipment_id=?, "
                           "order_id=?, task_id=?, updated_at=? WHERE pack_id=?",
                           (new.value, p.slot, p.store_seq, p.shipment_id, p.order_id,
                            p.task_id, self.books.stamp(), p.pack_id))
        after: dict[str, Any] = {"state": new.value, "trigger": trigger, "slot": p.slot,
                                 "shipment_id": p.shipment_id}
        if p.task_id is not None:
            after["task_id"] = p.task_id
        if reason:
            after["reason"] = reason
        if extra:
            after.update(extra)
        self.books.audit(actor, f"pack.{new.value}", f"pack:{p.pack_id}",
                         {"state": before.value}, after)
        if new in _GONE:
            self.live.pop(p.pack_id, None)
            if p.serial is not None and self.serials.get((p.drug_code, p.serial)) == p.pack_id:
                del self.serials[(p.drug_code, p.serial)]

    def insert(self, p: Pack, actor: Actor, action: str) -> None:
        """A new pack (loading, or a manual pack scanned into a tote)."""
        if p.state not in PACK_LIFECYCLE.created:
            raise InvalidState(f"a pack is not created {p.state.value}")
        stamp = self.books.stamp()
        self.journal.write(
            "INSERT INTO packs (pack_id, drug_code, batch, expiry, serial, slot, store_seq, state, "
            "shipment_id, order_id, loaded_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (p.pack_id, p.drug_code, p.batch, p.expiry.isoformat(), p.serial, p.slot, p.store_seq,
             p.state.value, p.shipment_id, p.order_id, stamp, stamp))
        self.live[p.pack_id] = p
        self.counts[p.state] += 1
        if p.serial is not None:
            self.serials[(p.drug_code, p.serial)] = p.pack_id
        self.books.audit(actor, action, f"pack:{p.pack_id}", None, {
            "state": p.state.value, "drug_code": p.drug_code, "batch": p.batch,
            "expiry": p.expiry.isoformat(), "serial": p.serial, "slot": p.slot,
            "shipment_id": p.shipment_id, "order_id": p.order_id})

    def new_id(self) -> int:
        pid = self.next_pack_id
        self.next_pack_id += 1
        return pid

    def serial_gone(self, drug_code: str, serial: str) -> PackState | None:
        """``dispensed`` or ``disposed`` when a pack of this serial left the machine that
        way (to a patient, or for destruction), else None: such a serial scanned again is
        a copy or a pack that must not come back."""
        row = self.journal.query_one(SERIAL_DISPENSED, (drug_code, serial))
        return None if row is None else PackState(row[0])

    # ------------------------------------------------------------------ slots
    def block_slot(self, slot_no: int, actor: Actor, reason: str) -> None:
        """Quarantine a slot's packs and move every reservation off it."""
        self._ensure_slot(slot_no)
        slot = self.stock.slots[slot_no]
        self.stock.block(slot_no)
        self.journal.write("INSERT OR REPLACE INTO blocked_slots VALUES (?,?,?)",
                           (slot_no, self.books.stamp(), reason))
        for pid in slot.packs:
            p = self.live[pid]
            if p.state is PackState.IN_STOCK:
                self.fire(p, "quarantine", actor, reason=reason)
        self.books.audit(actor, "slot.blocked", f"slot:{slot_no}", None,
                         {"reason": reason, "packs": list(slot.packs)})
        self.allocator.reshuffle_slot(slot_no)

    def discrepancy(self, slot_no: int, kind: str, expected: int, counted: int,
                    shipment_id: str | None, actor: Actor) -> int:
        cur = self.journal.write(
            "INSERT INTO discrepancies (time, slot, kind, expected, counted, shipment_id, "
            "actor) VALUES (?,?,?,?,?,?,?)", (self.books.stamp(), slot_no, kind, expected,
                                             counted, shipment_id, actor.name))
        self.books.audit(actor, "slot.discrepancy", f"slot:{slot_no}", {"expected": expected},
                         {"counted": counted, "kind": kind, "shipment_id": shipment_id})
        return int(cur.lastrowid or 0)

    def record_slot_count(self, slot: int, counted: int, actor: Actor) -> int | None:
        """A person or the robot counted a slot. A mismatch is recorded and the slot is
        blocked (its packs quarantined) until resolved; returns the discrepancy's id."""
        s = self.stock.slots.get(slot)
        expected = len(s.packs) if s else 0
        if counted == expected:
            self.books.audit(actor, "slot.counted", f"slot:{slot}", None, {"counted": counted})
            return None
        did = self.discrepancy(slot, "count", expected, counted, None, actor)
        self.block_slot(slot, actor, f"counted {counted}, records say {expected}")
        return did

    # ------------------------------------------------------------------ recalls and losses
    def quarantine_batch(self, drug_code: str, batch: str, actor: Actor, reason: str) -> int:
        """Recall/quarantine a batch at once: its slots are blocked, reservations on them
        are moved to other batches, its packs in open totes must be taken out (their lines
        are owed again). Returns how many packs were quarantined."""
        self.quarantined.add((drug_code, batch))
        self.journal.write("INSERT OR IGNORE INTO quarantined_batches VALUES (?,?,?,?,?)",
                           (drug_code, batch, self.books.stamp(), actor.name, reason))
        count = 0
        for slot_no in sorted(self.stock.by_batch.get((drug_code, batch), set())):
            count += len(self.stock.slots[slot_no].packs)
            self.block_slot(slot_no, actor, f"batch {batch} quarantined: {reason}")
        in_totes = [p for p in self.live.values() if p.drug_code == drug_code and p.batch == batch
                    and p.state is PackState.PICKED]
        for p in in_totes:
            count += 1
            self.pull_from_tote(p, "quarantine", actor, reason)
        self.books.audit(actor, "batch.quarantined", f"batch:{drug_code}/{batch}", None,
                         {"reason": reason, "packs": count})
        return count

    def pull_from_tote(self, p: Pack, trigger: str, actor: Actor, reason: str) -> None:
        """A picked pack leaves its tote (quarantined or lost): its line owes it again."""
        sh = self.shipments.live.get(p.shipment_id or "")
        self.fire(p, trigger, actor, reason=reason)
        if p.task_id is not None:
            self.tasks.pull_from_tote(p)
            return
        if sh is None:
            return
        for ln in sh.lines:
            if p.pack_id in ln.packs:
                ln.packs.remove(p.pack_id)
                if ln.robot:
                    ln.owed += 1
        self.allocator.fill_owed(sh, "shipment.reallocated")

    def record_lost(self, pack_id: int, state: PackState, actor: Actor) -> None:
        """A pack was dropped or not found in its slot; its place in a shipment is filled
        from other stock."""
        trigger = LOST_TRIGGER.get(state)
        if trigger is None:
            raise InvalidState("a lost pack is either dropped or missing")
        p = self.live.get(pack_id)
        if p is None or p.state not in (PackState.IN_STOCK, PackState.PICKED):
            raise InvalidState(f"pack {pack_id} is not in stock or in a tote")
        if p.state is PackState.PICKED:
            self.pull_from_tote(p, trigger, actor, "lost from the tote")
            return
        assert p.slot is not None
        slot = self.stock.slots[p.slot]
        slot.packs.remove(p.pack_id)
        self.fire(p, trigger, actor)
        if slot.reserved > len(slot.packs) or slot.claimed:
            # A claimed slot's first packs were an output task's by id: no longer so.
            self.allocator.reshuffle_slot(p.slot)
        self.stock.unreserve(p.slot, 0)  # frees the slot if it is now empty

    # ------------------------------------------------------------------ expiry
    def near_expiry_before(self) -> date:
        """In-stock packs expiring before this day are near expiry (today's line)."""
        return near_expiry_before(self.policy, self.books.today())

    def near_expiry(self) -> list[Pack]:
        """In-stock packs near expiry (expired ones included), soonest expiry first; from
        the slots that expire before today's line, not from every pack."""
        return [p for slot in self.stock.expiring_before(self.near_expiry_before())
                for pid in slot.packs
                if (p := self.live[pid]).state is PackState.IN_STOCK]

    def stock_counts(self) -> StockCounts:
        today = self.books.today()
        near = self.near_expiry()
        return StockCounts(self.counts[PackState.IN_STOCK], len(near),
                           sum(1 for p in near if expired(p.expiry, today)),
                           self.counts[PackState.QUARANTINED])

    def to_sweep(self) -> list[PackView]:
        """In-stock packs near expiry or expired that no shipment holds a reservation on,
        in slot order, each slot's in the order they were stored. A slot's reservation is
        a count: its packs less that many are offered (a pick takes a slot's packs
        first-stored-first-out, so which ids leave is known when the pick completes)."""
        line = self.near_expiry_before()
        today = self.books.today()
        views: list[PackView] = []
        for slot in sorted(self.stock.expiring_before(line), key=lambda s: s.number):
            if slot.blocked:
                continue
            packs = [self.live[pid] for pid in slot.packs]
            packs = [p for p in packs if p.state is PackState.IN_STOCK][slot.reserved:]
            views += [self._view(p, line, today) for p in packs]
        return views

    # ------------------------------------------------------------------ reading
    def _view(self, p: Pack, line: date, today: date) -> PackView:
        in_stock = p.state is PackState.IN_STOCK
        return PackView(p.pack_id, p.drug_code, p.batch, p.expiry, p.serial, p.state, p.slot,
                        p.shipment_id, p.order_id, p.task_id, in_stock and p.expiry < line,
                        in_stock and expired(p.expiry, today))

    def view(self, pack_id: int) -> PackView:
        p = self.live.get(pack_id)
        if p is not None:
            return self._view(p, self.near_expiry_before(), self.books.today())
        row = self.journal.query_one(f"SELECT {_PACK_COLUMNS} FROM packs WHERE pack_id=?",
                                     (pack_id,))
        if row is None:
            raise NotFound(f"no pack {pack_id}")
        return pack_view_row(row)  # not live: never in stock

    def page(self, drug_code: str | None, state: PackState | None, limit: int,
             after: int | None, near_expiry: bool | None = None) -> list[PackView]:
        """Packs by pack id (``after`` = last pack id of the previous page). With
        ``near_expiry`` only packs in stock (whatever ``state`` says): True those near
        expiry (expired ones included), False the others."""
        line, today = self.near_expiry_before(), self.books.today()
        if near_expiry:
            # From the slots in memory: few packs, found without walking the table.
            ids = sorted(p.pack_id for p in self.near_expiry()
                         if p.pack_id > (after or 0)
                         and (drug_code is None or p.drug_code == drug_code))
            return [self._view(self.live[pid], line, today) for pid in ids[:limit]]
        # For one drug, through the (drug_code, batch) index: left to itself SQLite walks
        # every pack of the state (58,000 in stock on a day's load) to find a drug's few.
        table = "packs INDEXED BY packs_batch" if drug_code is not None else "packs"
        sql = f"SELECT {_PACK_COLUMNS} FROM {table} WHERE pack_id > ?"
        params: list[Any] = [after or 0]
        if drug_code is not None:
            sql += " AND drug_code=?"
            params.append(drug_code)
        if near_expiry is not None:
            state = PackState.IN_STOCK
            sql += " AND expiry >= ?"  # ISO dates compare as text
            params.append(line.isoformat())
        if state is not None:
            sql += " AND state=?"
            params.append(state.value)
        sql += " ORDER BY pack_id LIMIT ?"
        params.append(limit)
        return [pack_view_row(r, line, today) for r in self.journal.query(sql, params)]

    def discrepancies(self, limit: int = 1000) -> list[DiscrepancyView]:
        return [DiscrepancyView(*r) for r in self.journal.query(
            "SELECT id, time, slot, kind, expected, counted, shipment_id FROM discrepancies "
            "ORDER BY id DESC LIMIT ?", (limit,))]
