"""The dispensing core: ``Dispensary`` is the only entry point the daemon uses.

It keeps the working state (live orders, shipments, slots, reservations) in memory, loaded
from the journal when it is built, and writes every change to the journal inside the same
call's transaction: a call either commits all it did or nothing. If a call fails after it
wrote, its transaction is rolled back and the memory is reloaded from the journal, so
memory and journal never disagree. Like the ``Journal`` it owns, it is not thread-safe:
call it from one thread.

State changes go through one function per entity: ``_set_order_state``,
``_set_shipment_state`` and ``_set_pack_state``.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from dispenser.billing import BillingLine, bill_item, totals
from dispenser.checks import STOCK_SHORT, Hold, PatientHistory, outcome, run_checks
from dispenser.errors import (
    Conflict,
    DispenserError,
    InvalidState,
    LoadRefused,
    NotFound,
    UnknownDrug,
)
from dispenser.formulary import Drug, Formulary
from dispenser.gs1 import parse_scan
from dispenser.journal import Journal, VerifyResult
from dispenser.orders import Order, Priority, parse_order
from dispenser.policy import Policy
from dispenser.shipments import Line, Shipment
from dispenser.states import (
    ORDER_CANCELLABLE,
    ORDER_FINAL,
    SHIPMENT_FINAL,
    OrderState,
    PackState,
    ShipmentState,
)
from dispenser.stock import NoFreeSlot, Pack, SlotGeometry, StockIndex
from dispenser.views import (
    SYSTEM,
    Actor,
    DiscrepancyView,
    ItemView,
    ManualLine,
    OrderView,
    OwedLine,
    PackScan,
    PackView,
    PickLine,
    ShipmentView,
)

__all__ = ["Actor", "Dispensary"]

_RANK_NAME = {p.rank: p.value for p in Priority}
_RANK = {p.value: p.rank for p in Priority}
_LIVE_ORDER = tuple(s.value for s in OrderState if s not in ORDER_FINAL)
_LIVE_SHIPMENT = tuple(s.value for s in ShipmentState if s not in SHIPMENT_FINAL)
_LIVE_PACK = (PackState.LOADING.value, PackState.IN_STOCK.value, PackState.PICKED.value,
              PackState.QUARANTINED.value)
# What an order becomes when its shipment changes state.
_ORDER_FOR_SHIPMENT = {
    ShipmentState.HELD: OrderState.HELD, ShipmentState.QUEUED: OrderState.QUEUED,
    ShipmentState.PICKING: OrderState.PICKING, ShipmentState.LABELLING: OrderState.LABELLING,
    ShipmentState.COMPLETED: OrderState.COMPLETED, ShipmentState.FAILED: OrderState.FAILED,
    ShipmentState.CANCELLED: OrderState.CANCELLED, ShipmentState.FORMING: OrderState.RECEIVED,
}


# Was this serial of this GTIN dispensed before? Looked up for every loading scan and every
# manual pack. Without INDEXED BY, SQLite answers from the index on state alone (it has no
# statistics to prefer the other), walking every dispensed pack: 10 ms per scan with 57,000
# dispensed packs, against 5 us through (gtin, serial).
SERIAL_DISPENSED = ("SELECT 1 FROM packs INDEXED BY packs_serial "
                    "WHERE gtin=? AND serial=? AND state='dispensed' LIMIT 1")


@dataclass(slots=True)
class _Order:
    """A live (not final) order as the core keeps it in memory."""

    seq: int
    order_id: str
    content_hash: str
    patient_id: str
    prescription_id: str
    address_key: str
    priority_rank: int
    window_start: datetime
    items: list[tuple[str, int, int]]  # (drug_code, quantity, days_supply)
    received_at: datetime
    state: OrderState
    holds: list[Hold]
    shipment_id: str | None


# Rows are addressed by their primary key (seq): a bulk update sorted by it walks the
# table's pages in order instead of jumping between them.
_UPDATE_ORDER = "UPDATE orders SET state=?, holds=?, shipment_id=?, updated_at=? WHERE seq=?"
_UPDATE_SHIPMENT = "UPDATE shipments SET state=?, updated_at=?, data=? WHERE seq=?"


def _holds_json(holds: Sequence[Hold]) -> str:
    if not holds:
        return "[]"
    return _holds_json_cached(tuple(holds))


# Built once (``json.dumps`` with options builds an encoder per call); holds are never
# circular, so no check.
_HOLDS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                  check_circular=False)


@lru_cache(maxsize=4096)
def _holds_json_cached(holds: tuple[Hold, ...]) -> str:
    return _HOLDS_ENCODER.encode([h.as_dict() for h in holds])


def _items_text(items: list[tuple[str, int, int]]) -> str:
    return ",".join(f"{c}*{q}*{d}" for c, q, d in items)


def _items_from(text: str) -> list[tuple[str, int, int]]:
    out = []
    for part in text.split(","):
        c, q, d = part.split("*")
        out.append((c, int(q), int(d)))
    return out


@contextmanager
def _bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector during bulk work: it only finds cycles, and its
    full passes over hundreds of thousands of young objects cost more than the work."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _page_query(table: str, id_column: str, columns: str,
                state: OrderState | ShipmentState | None, after: str | None,
                limit: int) -> tuple[str, list[Any]]:
    """One page of a list in arrival order (``seq``), optionally of one state; ``after`` is
    the last id of the previous page. ``table`` and the column names are this module's
    constants, never caller input."""
    sql = f"SELECT {columns} FROM {table} WHERE 1=1"
    params: list[Any] = []
    if state is not None:
        sql += " AND state=?"
        params.append(state.value)
    if after is not None:
        sql += f" AND seq > (SELECT seq FROM {table} WHERE {id_column}=?)"
        params.append(after)
    sql += " ORDER BY seq LIMIT ?"
    params.append(limit)
    return sql, params


def _holds_from(text: str) -> list[Hold]:
    if text == "[]":
        return []
    return [Hold(h["code"], h["detail"], h.get("drug_code")) for h in json.loads(text)]


class Dispensary:
    """Orders, checks, merging, FEFO stock and the journal behind one facade."""

    def __init__(self, journal: Journal, formulary: Formulary, policy: Policy,
                 geometry: SlotGeometry, clock: Callable[[], datetime]) -> None:
        self.journal = journal
        self.formulary = formulary
        self.policy = policy
        self.geometry = geometry
        self.clock = clock
        # While forming many shipments, order row updates are collected here and written
        # with one executemany at the end of the transaction.
        self._pending_orders: list[tuple[str, str, str | None, str, int]] | None = None
        self._pending_shipments: dict[str, Shipment] | None = None
        self._fixed_stamp: str | None = None
        self._pending_audit: list[tuple[str, str, str, str, str, object, object]] | None = None
        with _bulk():
            self._load()
        # The state just loaded holds no reference cycles and mostly lives as long as the
        # service. Move it (with everything else alive at start) out of the collector's
        # generations: the full passes that follow a big load, and every later one, would
        # otherwise walk its few hundred thousand objects for nothing (~80 ms per pass at
        # 20,000 live orders). Objects dropped later are still freed by reference counting.
        # Not after a rollback's reload (rare): freezing then would also keep the garbage
        # cycles of the failure that caused it (its traceback) from ever being collected.
        gc.freeze()
        journal.on_rollback.append(self._reload)

    # ================================================================== state & journal
    def _load(self) -> None:
        """(Re)build the working state from the journal."""
        j = self.journal
        self._orders: dict[str, _Order] = {}
        self._by_patient: dict[str, list[str]] = {}  # live order ids per patient
        self._shipments: dict[str, Shipment] = {}
        # Queued shipments in schedule order, (schedule key, id), kept up to date as
        # shipments are queued; one that left the queue is dropped when next_shipments
        # meets it. None: built again on the next call.
        self._schedule: list[tuple[tuple[float, int, int], str]] | None = None
        self._forming: dict[tuple[str, str], str] = {}
        self._waiting: dict[str, set[str]] = {}
        self._slot_res: dict[int, set[str]] = {}
        self._packs: dict[int, Pack] = {}
        self._serials: dict[tuple[str, str], int] = {}
        self.stock = StockIndex(self.geometry)
        self._quarantined = {(g, b) for g, b in j.query(
            "SELECT gtin, batch FROM quarantined_batches")}
        marks = ",".join("?" * len(_LIVE_ORDER))
        for row in j.iterate(
                "SELECT seq, order_id, content_hash, patient_id, prescription_id, address_key, "
                "priority, window_start, items, received_at, state, holds, shipment_id "
                f"FROM orders WHERE state IN ({marks}) ORDER BY seq", _LIVE_ORDER):
            o = _Order(row[0], row[1], row[2], row[3], row[4], row[5], _RANK[row[6]],
                       datetime.fromisoformat(row[7]), _items_from(row[8]),
                       datetime.fromisoformat(row[9]), OrderState(row[10]),
                       _holds_from(row[11]), row[12])
            self._index_order(o)
        marks = ",".join("?" * len(_LIVE_SHIPMENT))
        for srow in j.iterate(
                "SELECT shipment_id, seq, patient_id, address_key, state, created_at, data "
                f"FROM shipments WHERE state IN ({marks}) ORDER BY seq", _LIVE_SHIPMENT):
            sh = Shipment.from_row(*srow)
            self._shipments[sh.shipment_id] = sh
            if sh.state is ShipmentState.FORMING:
                self._forming[(sh.patient_id, sh.address_key)] = sh.shipment_id
        marks = ",".join("?" * len(_LIVE_PACK))
        for prow in j.iterate(
                "SELECT pack_id, gtin, batch, expiry, serial, slot, store_seq, state, "
                f"shipment_id, order_id FROM packs WHERE state IN ({marks}) "
                "ORDER BY store_seq IS NULL, store_seq, pack_id", _LIVE_PACK):
            p = Pack(prow[0], prow[1], prow[2], date.fromisoformat(prow[3]), prow[4],
                     PackState(prow[7]), prow[5], prow[6], prow[8], prow[9])
            self._packs[p.pack_id] = p
            if p.serial is not None:
                self._serials[(p.gtin, p.serial)] = p.pack_id
            if p.slot is None:
                continue
            if p.state is PackState.LOADING:
                self.stock.add_incoming(p.slot, p.gtin, p.batch, p.expiry)
            elif p.state is PackState.IN_STOCK or (
                    p.state is PackState.QUARANTINED and p.shipment_id is None):
                self.stock.place(p.slot, p.gtin, p.batch, p.expiry, p.pack_id, incoming=False)
        for (slot_no,) in j.query("SELECT slot FROM blocked_slots"):
            if slot_no not in self.stock.slots:
                self.stock.add_incoming(slot_no, "", "", date.max)
                self.stock.slots[slot_no].incoming = 0
            self.stock.block(slot_no)
        for sh in self._shipments.values():
            for ln in sh.lines:
                for slot_no, n in ln.reserved:
                    self.stock.slots[slot_no].reserved += n
                    self._slot_res.setdefault(slot_no, set()).add(sh.shipment_id)
                if ln.owed:
                    self._waiting.setdefault(ln.drug_code, set()).add(sh.shipment_id)
            for h in sh.holds:
                if h.code == STOCK_SHORT and h.drug_code:
                    self._waiting.setdefault(h.drug_code, set()).add(sh.shipment_id)
        self._next_order_seq = (j.query_one("SELECT max(seq) FROM orders")[0] or 0) + 1
        self._next_shipment_seq = (j.query_one("SELECT max(seq) FROM shipments")[0] or 0) + 1
        self._next_pack_id = (j.query_one("SELECT max(pack_id) FROM packs")[0] or 0) + 1
        self._next_store_seq = (j.query_one("SELECT max(store_seq) FROM packs")[0] or 0) + 1

    def _index_order(self, o: _Order) -> None:
        self._orders[o.order_id] = o
        self._by_patient.setdefault(o.patient_id, []).append(o.order_id)

    def _unindex_order(self, o: _Order) -> None:
        self._orders.pop(o.order_id, None)
        ids = self._by_patient.get(o.patient_id)
        if ids is not None and o.order_id in ids:
            ids.remove(o.order_id)
            if not ids:
                del self._by_patient[o.patient_id]

    @contextmanager
    def _tx(self) -> Iterator[None]:
        # A rollback of anything that wrote, here or in a caller's enclosing transaction,
        # reloads the memory through the journal's on_rollback hook.
        with self.journal.transaction():
            yield

    def _reload(self) -> None:
        with _bulk():
            self._load()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several calls into one transaction (one commit, one fsync). A call that
        raises inside the batch undoes only itself; leaving the block by an exception
        undoes the whole batch."""
        with self._tx():
            yield

    def _stamp(self) -> str:
        """Time for journal rows; one fixed value while a merge round runs."""
        return self._fixed_stamp or self.clock().isoformat()

    def _now(self) -> tuple[datetime, str]:
        now = self.clock()
        return now, now.isoformat()

    def _audit(self, actor: Actor, action: str, subject: str, before: object = None,
               after: object = None) -> None:
        if self._pending_audit is not None:  # a merge round: appended in order at its end
            self._pending_audit.append((self._stamp(), actor.name, actor.role, action, subject,
                                        before, after))
            return
        self.journal.audit(self._stamp(), actor.name, actor.role, action, subject,
                           before, after)

    # ================================================================== history (checks)
    def patient_history(self, order: Order) -> PatientHistory:
        """Dispensed supply (journal) plus supply on order (live orders), one query."""
        pid, rx = order.patient.id, order.prescription.id
        ends: dict[str, date] = {}
        rx_drugs: set[str] = set()
        for code, end, used in self.journal.iterate(
                "SELECT drug_code, max(supply_end), max(prescription_id = ?) FROM history "
                "WHERE patient_id=? GROUP BY drug_code", (rx, pid)):
            ends[code] = date.fromisoformat(end)
            if used:
                rx_drugs.add(code)
        for oid in self._by_patient.get(pid, ()):
            if oid == order.order_id:
                continue
            o = self._orders[oid]
            for code, _, days in o.items:
                e = o.received_at.date() + timedelta(days=days)
                if code not in ends or e > ends[code]:
                    ends[code] = e
                if o.prescription_id == rx:
                    rx_drugs.add(code)
        return PatientHistory(ends, rx_drugs)

    # ================================================================== orders
    def submit(self, raw: Mapping[str, object], actor: Actor) -> OrderView:
        """Validate, check and store one order. Same order_id with the same content returns
        its current state; with other content raises ``Conflict``."""
        with self._tx():
            return self._submit_one(raw, actor)

    def submit_many(self, raws: Iterable[Mapping[str, object]],
                    actor: Actor) -> list[OrderView | DispenserError]:
        """Submit many orders in one transaction; each result is a view or the error that
        refused that order (the others are unaffected)."""
        results: list[OrderView | DispenserError] = []
        with _bulk(), self._tx():
            for raw in raws:
                try:
                    with self._tx():
                        results.append(self._submit_one(raw, actor))
                except DispenserError as exc:
                    results.append(exc)
        return results

    def _submit_one(self, raw: Mapping[str, object], actor: Actor) -> OrderView:
        order = parse_order(raw)
        canon = order.canonical_json()
        digest = hashlib.sha256(canon.encode()).hexdigest()
        live = self._orders.get(order.order_id)
        known = live.content_hash if live else None
        if live is None:
            row = self.journal.query_one("SELECT content_hash FROM orders WHERE order_id=?",
                                         (order.order_id,))
            known = row[0] if row else None
        if known is not None:
            if known == digest:
                return self.get_order(order.order_id)
            raise Conflict(f"order {order.order_id} was already received with different "
                           "content; send changes as a new order (and cancel the old one)")
        unknown = [i.drug_code for i in order.items if i.drug_code not in self.formulary]
        if unknown:
            raise UnknownDrug(unknown)
        now, stamp = self._now()
        results = run_checks(order, self.policy, now.date(), self)
        verdict, holds = outcome(results)
        state = {"ok": OrderState.RECEIVED, "hold": OrderState.HELD,
                 "reject": OrderState.REJECTED}[verdict]
        o = _Order(self._next_order_seq, order.order_id, digest, order.patient.id,
                   order.prescription.id, order.address_key(), order.priority.rank,
                   order.delivery.window_start,
                   [(i.drug_code, i.quantity, i.days_supply) for i in order.items],
                   now, state, holds, None)
        self._next_order_seq += 1
        if state is not OrderState.REJECTED:
            self._index_order(o)
        if state is OrderState.RECEIVED:
            self._join_forming(o, now, write_order=False)
        self.journal.write(
            "INSERT INTO orders (seq, order_id, content_hash, patient_id, "
            "prescription_id, address_key, window_start, items, priority, received_at, state, "
            "holds, shipment_id, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (o.seq, o.order_id, digest, o.patient_id, o.prescription_id, o.address_key,
             o.window_start.isoformat(), _items_text(o.items), order.priority.value, stamp,
             state.value, _holds_json(holds), o.shipment_id, stamp))
        self.journal.write("INSERT INTO order_bodies (seq, body) VALUES (?, ?)", (o.seq, canon))
        self._audit(actor, "order.received", o.order_id, None, {
            "state": state.value, "patient_id": o.patient_id, "prescription": o.prescription_id,
            "priority": order.priority.value, "items": o.items, "shipment_id": o.shipment_id,
            "holds": [h.as_dict() for h in holds], "checks": [r.as_dict() for r in results]})
        return self._order_view(o)

    def _join_forming(self, o: _Order, now: datetime, write_order: bool = True) -> None:
        key = (o.patient_id, o.address_key)
        sid = self._forming.get(key)
        if sid is None:
            seq = self._next_shipment_seq
            self._next_shipment_seq += 1
            sh = Shipment(f"SH-{seq:08d}", seq, o.patient_id, o.address_key,
                          ShipmentState.FORMING, now,
                          now + timedelta(seconds=self.policy.merge_window_s), o.window_start,
                          o.priority_rank, o.seq, [o.order_id])
            self._shipments[sh.shipment_id] = sh
            self._forming[key] = sh.shipment_id
            self.journal.write(
                "INSERT INTO shipments (seq, shipment_id, patient_id, address_key, state, "
                "created_at, updated_at, data) VALUES (?,?,?,?,?,?,?,?)",
                (seq, sh.shipment_id, sh.patient_id, sh.address_key, sh.state.value,
                 now.isoformat(), now.isoformat(), sh.data_json()))
        else:
            sh = self._shipments[sid]
            sh.order_ids.append(o.order_id)
            self._refresh_schedule(sh)
            self._save_shipment(sh)
        o.shipment_id = sh.shipment_id
        if write_order:
            self._set_order_state(o, OrderState.RECEIVED, SYSTEM, "order.merged",
                                  extra={"shipment_id": sh.shipment_id})

    def _refresh_schedule(self, sh: Shipment) -> None:
        orders = [self._orders[oid] for oid in sh.order_ids]
        if orders:
            sh.window_start = min(o.window_start for o in orders)
            sh.priority_rank = min(o.priority_rank for o in orders)
            sh.arrival = min(o.seq for o in orders)
            self._schedule = None  # its key may have changed

    def _set_order_state(self, o: _Order, new: OrderState, actor: Actor, action: str,
                         holds: list[Hold] | None = None, reason: str | None = None,
                         log: bool = True, extra: dict[str, Any] | None = None,
                         pending: list[tuple[str, str, str | None, str, int]] | None = None
                         ) -> None:
        """The one place an order changes state (journal row, audit, indexes). With
        ``pending`` the row update is appended there for the caller to write in bulk."""
        before = {"state": o.state.value, "holds": [h.code for h in o.holds]} if log else None
        o.state = new
        if holds is not None:
            o.holds = holds
        row = (new.value, _holds_json(o.holds), o.shipment_id, self._stamp(), o.seq)
        if pending is not None:
            pending.append(row)
        else:
            self.journal.write(_UPDATE_ORDER, row)
        if log:
            after: dict[str, Any] = {"state": new.value, "holds": [h.as_dict() for h in o.holds]}
            if reason is not None:
                after["reason"] = reason
            if extra:
                after.update(extra)
            self._audit(actor, action, o.order_id, before, after)
        if new in ORDER_FINAL:
            self._unindex_order(o)

    def _live_order(self, order_id: str) -> _Order:
        o = self._orders.get(order_id)
        if o is None:
            row = self.journal.query_one("SELECT state FROM orders WHERE order_id=?", (order_id,))
            if row is None:
                raise NotFound(f"no order {order_id}")
            raise InvalidState(f"order {order_id} is already {row[0]}")
        return o

    def cancel(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """Cancel an order whose picking has not started; it leaves its shipment."""
        with self._tx():
            o = self._live_order(order_id)
            if o.state not in ORDER_CANCELLABLE:
                raise InvalidState(f"order {order_id} is {o.state.value}: picking has started, "
                                   "it can no longer be cancelled; stop the shipment instead")
            self._take_out(o)
            self._set_order_state(o, OrderState.CANCELLED, actor, "order.cancelled",
                                  reason=reason)
            return self._order_view(o)

    def reject(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """A pharmacist refuses a held order."""
        with self._tx():
            o = self._live_order(order_id)
            if o.state is not OrderState.HELD:
                raise InvalidState(f"order {order_id} is {o.state.value}; only held orders "
                                   "can be rejected (cancel it instead)")
            self._take_out(o)
            self._set_order_state(o, OrderState.REJECTED, actor, "order.rejected",
                                  reason=reason)
            return self._order_view(o)

    def release(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """A pharmacist overrides the check holds of an order; it joins a shipment."""
        with self._tx():
            o = self._live_order(order_id)
            if o.state is not OrderState.HELD or o.shipment_id is not None:
                detail = ("it waits for stock and is released automatically when stock "
                          "arrives" if o.shipment_id else f"it is {o.state.value}")
                raise InvalidState(f"order {order_id} cannot be released: {detail}")
            self._set_order_state(o, OrderState.HELD, actor, "order.released", holds=[],
                                  reason=reason)
            self._join_forming(o, self.clock())
            return self._order_view(o)

    def _take_out(self, o: _Order) -> None:
        """Remove an order (and its reservations) from its shipment."""
        if o.shipment_id is None:
            return
        sh = self._shipments[o.shipment_id]
        if sh.state is ShipmentState.HELD and not sh.lines:
            sh.lines = self._lines_as_ordered(sh)
        freed = set()
        for ln in [ln for ln in sh.lines if ln.order_id == o.order_id]:
            self._release_line(sh, ln)
            freed.add(ln.drug_code)
            sh.lines.remove(ln)
        sh.order_ids.remove(o.order_id)
        o.shipment_id = None
        if not sh.order_ids:
            self._forming.pop((sh.patient_id, sh.address_key), None)
            self._set_shipment_state(sh, ShipmentState.CANCELLED, SYSTEM, "shipment.cancelled",
                                     extra={"reason": "its last order left"})
        else:
            self._refresh_schedule(sh)
            sh.holds = [h for h in sh.holds if any(ln.drug_code == h.drug_code
                                                   for ln in sh.lines)]
            self._save_shipment(sh)
            if sh.state is ShipmentState.HELD:
                self._try_allocate(sh)
        self._retry_waiting(freed)

    def get_order(self, order_id: str) -> OrderView:
        o = self._orders.get(order_id)
        if o is not None:
            return self._order_view(o)
        row = self.journal.query_one(
            "SELECT order_id, state, patient_id, priority, received_at, items, holds, "
            "shipment_id FROM orders WHERE order_id=?", (order_id,))
        if row is None:
            raise NotFound(f"no order {order_id}")
        return self._order_view_row(row)

    def list_orders(self, state: OrderState | None = None, limit: int = 100,
                    after: str | None = None) -> list[OrderView]:
        """Orders in arrival order; ``after`` is the last order_id of the previous page."""
        sql, params = _page_query(
            "orders", "order_id",
            "order_id, state, patient_id, priority, received_at, items, holds, shipment_id",
            state, after, limit)
        return [self._order_view_row(r) for r in self.journal.query(sql, params)]

    def _order_view(self, o: _Order) -> OrderView:
        return OrderView(o.order_id, o.state, o.patient_id, _RANK_NAME[o.priority_rank],
                         o.received_at, [ItemView(*i) for i in o.items], list(o.holds),
                         o.shipment_id)

    @staticmethod
    def _order_view_row(row: Sequence[Any]) -> OrderView:
        return OrderView(row[0], OrderState(row[1]), row[2], row[3],
                         datetime.fromisoformat(row[4]),
                         [ItemView(*i) for i in _items_from(row[5])], _holds_from(row[6]),
                         row[7])

    # ================================================================== shipments
    def _save_shipment(self, sh: Shipment) -> None:
        if self._pending_shipments is not None:
            self._pending_shipments[sh.shipment_id] = sh  # written once, at the end
            return
        self.journal.write(_UPDATE_SHIPMENT, (sh.state.value, self._stamp(), sh.data_json(),
                                              sh.seq))

    def _set_shipment_state(self, sh: Shipment, new: ShipmentState, actor: Actor, action: str,
                            holds: list[Hold] | None = None,
                            extra: dict[str, Any] | None = None) -> None:
        """The one place a shipment changes state; its orders follow."""
        before = {"state": sh.state.value}
        if (new is ShipmentState.QUEUED and sh.state is not ShipmentState.QUEUED
                and self._schedule is not None):
            bisect.insort(self._schedule, (sh.schedule_key(), sh.shipment_id))
        sh.state = new
        if holds is not None:
            sh.holds = holds
        self._save_shipment(sh)
        after: dict[str, Any] = {"state": new.value, "orders": sh.order_ids,
                                 "holds": [h.as_dict() for h in sh.holds]}
        if extra:
            after.update(extra)
        self._audit(actor, action, sh.shipment_id, before, after)
        order_state = _ORDER_FOR_SHIPMENT[new]
        pending = self._pending_orders if self._pending_orders is not None else []
        for oid in sh.order_ids:
            o = self._orders[oid]
            order_holds: list[Hold] = []
            if new is ShipmentState.HELD:
                codes = {c for c, _, _ in o.items}
                order_holds = [h for h in sh.holds if h.drug_code in codes] or [
                    Hold(STOCK_SHORT, f"waits with shipment {sh.shipment_id} for stock")]
            # The shipment's audit row names its orders; no second row per order.
            self._set_order_state(o, order_state, actor, action, holds=order_holds, log=False,
                                  pending=pending)
        if pending is not self._pending_orders:
            self.journal.write_many(_UPDATE_ORDER, pending)
        if new in SHIPMENT_FINAL:
            self._shipments.pop(sh.shipment_id, None)
        if new is not ShipmentState.HELD and not any(ln.owed for ln in sh.lines):
            for ln in sh.lines:
                self._waiting.get(ln.drug_code, set()).discard(sh.shipment_id)

    def form_shipments(self) -> list[ShipmentView]:
        """Close merge windows that are over (urgent shipments at once), reserve stock
        FEFO, hold shipments that are short. Returns the shipments formed now."""
        due = self._close_merge_windows()
        bodies = self._bodies([sh.order_ids[0] for sh in due if sh.order_ids])
        return [self._shipment_view(sh, bodies) for sh in due]

    def close_merge_windows(self) -> list[str]:
        """Like ``form_shipments`` but returns only the shipment ids (no views built)."""
        return [sh.shipment_id for sh in self._close_merge_windows()]

    def _close_merge_windows(self) -> list[Shipment]:
        now = self.clock()
        due = [sh for sh in (self._shipments[s] for s in self._forming.values())
               if sh.close_at <= now or sh.urgent]
        if not due:
            return []
        due.sort(key=Shipment.schedule_key)
        stamp = now.isoformat()
        with _bulk(), self._tx():
            # Row updates of orders and shipments are collected and written once each.
            self._pending_orders, self._pending_shipments = [], {}
            self._fixed_stamp, self._pending_audit = stamp, []
            try:
                for sh in due:
                    del self._forming[(sh.patient_id, sh.address_key)]
                    self._try_allocate(sh)
                # In key order (a stable sort: a later update of the same row still wins).
                self._pending_orders.sort(key=lambda row: row[-1])
                self.journal.write_many(_UPDATE_ORDER, self._pending_orders)
                shipments = sorted(self._pending_shipments.values(), key=lambda sh: sh.seq)
                self.journal.write_many(_UPDATE_SHIPMENT, [
                    (sh.state.value, stamp, sh.data_json(), sh.seq) for sh in shipments])
                self.journal.audit_many(self._pending_audit)
            finally:
                self._pending_orders, self._pending_shipments = None, None
                self._fixed_stamp, self._pending_audit = None, None
        return due

    def _lines_as_ordered(self, sh: Shipment) -> list[Line]:
        """One line per item of the shipment's orders, nothing reserved yet. The items of
        an order no longer live (a final shipment's) come from its body in the journal."""
        lines: list[Line] = []
        for oid in sh.order_ids:
            o = self._orders.get(oid)
            items = o.items if o is not None else [
                (i["drug_code"], i["quantity"], i["days_supply"])
                for i in self._order_body(oid)["items"]]
            lines += [Line(oid, code, qty, days, self.formulary[code].robot)
                      for code, qty, days in items]
        return lines

    def _bodies(self, order_ids: list[str]) -> dict[str, str]:
        """Order bodies in a few queries (for many views at once)."""
        out: dict[str, str] = {}
        for i in range(0, len(order_ids), 500):
            chunk = order_ids[i:i + 500]
            out.update(self.journal.iterate(
                "SELECT o.order_id, b.body FROM orders o JOIN order_bodies b USING (seq) "
                "WHERE o.order_id IN "
                f"({','.join('?' * len(chunk))})", chunk))
        return out

    def _add_reservations(self, sh: Shipment, ln: Line, picks: list[tuple[int, int]]) -> None:
        for slot_no, n in picks:
            for r in ln.reserved:
                if r[0] == slot_no:
                    r[1] += n
                    break
            else:
                ln.reserved.append([slot_no, n])
            self._slot_res.setdefault(slot_no, set()).add(sh.shipment_id)

    def _release_line(self, sh: Shipment, ln: Line) -> None:
        for slot_no, n in ln.reserved:
            self.stock.unreserve(slot_no, n)
        ln.reserved = []

    def _try_allocate(self, sh: Shipment) -> bool:
        """Reserve every robot line of a forming or held shipment; queue it, or hold it as
        stock_short (partial dispensing: queue what there is).

        A held shipment keeps no lines unless a pack was already confirmed for one of
        them: like a forming shipment's, its lines are made from its orders when stock is
        tried again. When stock is short, most of a merge round's shipments are held, and
        their lines were a third of the objects the round left in memory."""
        if not sh.lines:
            sh.lines = self._lines_as_ordered(sh)
        today = self.clock().date()
        short: dict[str, int] = {}
        for ln in sh.lines:
            ln.owed = ln.short = 0
            if not ln.robot:
                continue
            need = ln.quantity - len(ln.packs) - ln.reserved_count
            if need > 0:
                picks, miss = self.stock.allocate(ln.drug_code, need, today)
                if picks:
                    self._add_reservations(sh, ln, picks)
                if miss:
                    ln.owed = miss
                    short[ln.drug_code] = short.get(ln.drug_code, 0) + miss
        sendable = any(ln.reserved or ln.packs or not ln.robot for ln in sh.lines)
        if short and not (self.policy.partial_dispensing and sendable):
            for ln in sh.lines:
                self._release_line(sh, ln)
                ln.owed = 0
            if all(ln.as_ordered for ln in sh.lines):
                sh.lines = []
            for code in short:
                self._waiting.setdefault(code, set()).add(sh.shipment_id)
            holds = [Hold(STOCK_SHORT, f"{n} pack(s) short", code) for code, n in short.items()]
            if sh.state is ShipmentState.HELD and sh.holds == holds:
                return False  # still short of the same: nothing new to record
            # Held anew, or held still but for another drug (the one it was held for came in,
            # another of its orders' drugs ran out meanwhile): the hold names what it waits
            # for, which is what staff load.
            self._set_shipment_state(sh, ShipmentState.HELD, SYSTEM, "shipment.held",
                                     holds=holds, extra={"short": short})
            return False
        for ln in sh.lines:
            ln.short, ln.owed = ln.owed, 0
        self._set_shipment_state(sh, ShipmentState.QUEUED, SYSTEM, "shipment.queued", holds=[],
                                 extra={"picks": [[ln.item, ln.reserved] for ln in sh.lines
                                                  if ln.reserved],
                                        "manual": [ln.item for ln in sh.lines if not ln.robot],
                                        "short": short})
        return True

    def _retry_waiting(self, drugs: Iterable[str]) -> None:
        """Stock came free for these drugs: release held shipments, fill what is owed."""
        sids: set[str] = set()
        for code in drugs:
            sids |= self._waiting.get(code, set())
        waiting = sorted((sh for s in sids if (sh := self._shipments.get(s)) is not None),
                         key=Shipment.schedule_key)
        for sh in waiting:
            if sh.state is ShipmentState.HELD:
                self._try_allocate(sh)
            elif any(ln.owed for ln in sh.lines):
                self._fill_owed(sh, "shipment.reallocated")

    def _fill_owed(self, sh: Shipment, action: str) -> None:
        """Reserve what a shipment's lines owe; a queued shipment that stays short is held,
        one being picked keeps the debt (and waits for stock)."""
        today = self.clock().date()
        changed = []
        for ln in sh.lines:
            if ln.owed and ln.robot:
                picks, miss = self.stock.allocate(ln.drug_code, ln.owed, today)
                self._add_reservations(sh, ln, picks)
                changed.append([ln.item, picks, miss])
                ln.owed = miss
        if sh.state is ShipmentState.QUEUED and any(ln.owed for ln in sh.lines):
            if self.policy.partial_dispensing:
                for ln in sh.lines:
                    ln.short, ln.owed = ln.short + ln.owed, 0
            else:
                self._try_allocate(sh)  # releases and holds it
                return
        for ln in sh.lines:
            if ln.owed:
                self._waiting.setdefault(ln.drug_code, set()).add(sh.shipment_id)
        self._save_shipment(sh)
        self._audit(SYSTEM, action, sh.shipment_id, None, {"lines": changed})

    def _reshuffle_slot(self, slot_no: int) -> None:
        """Move every reservation off a slot that cannot serve it any more (blocked, or
        fewer packs than reserved) and allocate it again FEFO."""
        holders: list[tuple[Shipment, Line, int]] = []
        for sid in self._slot_res.pop(slot_no, set()):
            sh = self._shipments.get(sid)
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
            self._fill_owed(sh, "shipment.reallocated")

    def next_shipments(self, limit: int = 10) -> list[ShipmentView]:
        """Queued shipments in schedule order: delivery window start, priority, arrival.

        The scheduler asks every cycle; sorting every queued shipment each time (12,000 in
        a day's burst) was 30-44 % of the daemon's CPU, so the order is kept (see
        ``_schedule``) and only its front is read."""
        if self._schedule is None:
            self._schedule = sorted((sh.schedule_key(), sh.shipment_id)
                                    for sh in self._shipments.values()
                                    if sh.state is ShipmentState.QUEUED)
        schedule = self._schedule
        found: list[Shipment] = []
        seen: set[str] = set()
        i = 0
        while i < len(schedule) and len(found) < limit:
            sid = schedule[i][1]
            sh = self._shipments.get(sid)
            if sh is None or sh.state is not ShipmentState.QUEUED or sid in seen:
                del schedule[i]  # left the queue (or queued again: a second entry)
                continue
            seen.add(sid)
            found.append(sh)
            i += 1
        return [self._shipment_view(sh) for sh in found]

    def _live_shipment(self, shipment_id: str, *states: ShipmentState) -> Shipment:
        sh = self._shipments.get(shipment_id)
        if sh is None:
            row = self.journal.query_one("SELECT state FROM shipments WHERE shipment_id=?",
                                         (shipment_id,))
            if row is None:
                raise NotFound(f"no shipment {shipment_id}")
            raise InvalidState(f"shipment {shipment_id} is already {row[0]}")
        if states and sh.state not in states:
            raise InvalidState(f"shipment {shipment_id} is {sh.state.value}; this needs "
                               + " or ".join(s.value for s in states))
        return sh

    def start_picking(self, shipment_id: str, actor: Actor = SYSTEM) -> ShipmentView:
        """From now on the shipment's orders can no longer be cancelled."""
        with self._tx():
            sh = self._live_shipment(shipment_id, ShipmentState.QUEUED)
            self._set_shipment_state(sh, ShipmentState.PICKING, actor, "shipment.picking")
            return self._shipment_view(sh)

    def record_pick(self, shipment_id: str, slot: int, picked: int,
                    actor: Actor = SYSTEM) -> list[PackView]:
        """The robot took ``picked`` packs from ``slot`` for this shipment: the total for
        every line of the shipment reserved on that slot (``robot_picks`` may list a slot
        once per line). They are the first ones stored there (FIFO). If fewer than
        reserved came out, the slot is quarantined as a discrepancy and the shortfall is
        reserved elsewhere (see ``get_shipment(...).robot_picks`` / ``owed``). Returns the
        packs now in the tote."""
        with self._tx():
            sh = self._live_shipment(shipment_id, ShipmentState.PICKING)
            entries = [(ln, r) for ln in sh.lines for r in ln.reserved if r[0] == slot]
            if not entries:
                raise InvalidState(f"shipment {shipment_id} has no pick reserved in slot {slot}")
            reserved = sum(r[1] for _, r in entries)
            if not 0 <= picked <= reserved:
                raise InvalidState(f"{picked} packs picked from slot {slot} but {reserved} "
                                   "were reserved; report at most the reserved count")
            self.stock.unreserve(slot, reserved)
            taken = self.stock.take(slot, picked) if picked else []
            rest = list(taken)
            for ln, r in entries:
                got, rest = rest[: r[1]], rest[r[1]:]
                ln.reserved.remove(r)
                for pid in got:
                    p = self._packs[pid]
                    p.shipment_id, p.order_id = sh.shipment_id, ln.order_id
                    self._set_pack_state(p, PackState.PICKED, actor, "pack.picked", log=False)
                ln.packs.extend(got)
                ln.owed += r[1] - len(got)
            self._save_shipment(sh)
            self._audit(actor, "shipment.pick", sh.shipment_id, None,
                        {"slot": slot, "reserved": reserved, "picked": picked, "packs": taken})
            if picked < reserved:
                self._discrepancy(slot, "short_pick", reserved, picked, sh.shipment_id, actor)
                self._block_slot(slot, actor, f"robot picked {picked} of {reserved}")
                self._fill_owed(sh, "shipment.reallocated")
            return [self._pack_view(pid) for pid in taken]

    def start_labelling(self, shipment_id: str, actor: Actor = SYSTEM) -> ShipmentView:
        with self._tx():
            sh = self._live_shipment(shipment_id, ShipmentState.PICKING)
            open_lines = [ln.item for ln in sh.lines if ln.robot and not ln.done]
            if open_lines:
                raise InvalidState(f"shipment {shipment_id} still has robot picks open: "
                                   + ", ".join(open_lines))
            self._set_shipment_state(sh, ShipmentState.LABELLING, actor, "shipment.labelling")
            return self._shipment_view(sh)

    def complete_shipment(self, shipment_id: str, actor: Actor = SYSTEM) -> ShipmentView:
        """Labelled and packed: packs become dispensed, dispensing history is written."""
        with self._tx():
            sh = self._live_shipment(shipment_id, ShipmentState.LABELLING)
            missing = [ln.item for ln in sh.lines if not ln.done]
            if missing:
                raise InvalidState(f"shipment {shipment_id} is not complete; still to pick or "
                                   "confirm by scan: " + ", ".join(missing))
            now = self.clock()
            rows = []
            for ln in sh.lines:
                o = self._orders[ln.order_id]
                for pid in ln.packs:
                    self._set_pack_state(self._packs[pid], PackState.DISPENSED, actor,
                                         "pack.dispensed", log=False)
                if ln.packs:
                    end = now.date() + timedelta(days=ln.days_supply)
                    rows.append((sh.patient_id, ln.drug_code, o.prescription_id, ln.order_id,
                                 sh.shipment_id, len(ln.packs), ln.days_supply,
                                 now.date().isoformat(), end.isoformat()))
            self.journal.write_many(
                "INSERT INTO history (patient_id, drug_code, prescription_id, order_id, "
                "shipment_id, quantity, days_supply, dispensed_on, supply_end) VALUES "
                "(?,?,?,?,?,?,?,?,?)", rows)
            self._set_shipment_state(sh, ShipmentState.COMPLETED, actor, "shipment.completed",
                                     extra={"packs": {ln.item: ln.packs for ln in sh.lines}})
            return self._shipment_view(sh)

    def fail_shipment(self, shipment_id: str, actor: Actor, reason: str) -> ShipmentView:
        """Give up a shipment: reservations are freed, packs already in its tote are
        quarantined for a person to check, its orders become failed."""
        with self._tx():
            sh = self._live_shipment(shipment_id)
            freed = set()
            for ln in sh.lines:
                self._release_line(sh, ln)
                freed.add(ln.drug_code)
                for pid in ln.packs:
                    self._set_pack_state(self._packs[pid], PackState.QUARANTINED, actor,
                                         "pack.quarantined", reason="shipment failed")
            self._forming.pop((sh.patient_id, sh.address_key), None)
            self._set_shipment_state(sh, ShipmentState.FAILED, actor, "shipment.failed",
                                     extra={"reason": reason})
            self._retry_waiting(freed)
            return self._shipment_view(sh)

    def get_shipment(self, shipment_id: str) -> ShipmentView:
        sh = self._shipments.get(shipment_id)
        if sh is None:
            row = self.journal.query_one(
                "SELECT shipment_id, seq, patient_id, address_key, state, created_at, data "
                "FROM shipments WHERE shipment_id=?", (shipment_id,))
            if row is None:
                raise NotFound(f"no shipment {shipment_id}")
            sh = Shipment.from_row(*row)
        return self._shipment_view(sh)

    def list_shipments(self, state: ShipmentState | None = None, limit: int = 100,
                       after: str | None = None) -> list[ShipmentView]:
        sql, params = _page_query(
            "shipments", "shipment_id",
            "shipment_id, seq, patient_id, address_key, state, created_at, data",
            state, after, limit)
        out = []
        for row in self.journal.query(sql, params):
            sh = self._shipments.get(row[0]) or Shipment.from_row(*row)
            out.append(self._shipment_view(sh))
        return out

    def _order_body(self, order_id: str, bodies: Mapping[str, str] | None = None
                    ) -> dict[str, Any]:
        # Order bodies (with patient data) stay in the journal, not in memory.
        text = bodies.get(order_id) if bodies else None
        if text is None:
            text = self.journal.query_one(
                "SELECT b.body FROM orders o JOIN order_bodies b USING (seq) "
                "WHERE o.order_id=?", (order_id,))[0]
        body: dict[str, Any] = json.loads(text)
        return body

    def _shipment_view(self, sh: Shipment, bodies: Mapping[str, str] | None = None
                       ) -> ShipmentView:
        first = self._order_body(sh.order_ids[0], bodies) if sh.order_ids else None
        # Forming or held (nothing reserved yet): bill the orders' items as asked for.
        lines = sh.lines or self._lines_as_ordered(sh)
        drugs: dict[str, Drug] = {ln.drug_code: self.formulary[ln.drug_code] for ln in lines}
        robot = [PickLine(ln.item, ln.drug_code, s, n) for ln in lines for s, n in ln.reserved]
        if len(robot) > 1:
            robot.sort(key=lambda p: self.stock.travel[p.slot])
        manual = [ManualLine(ln.item, ln.drug_code, drugs[ln.drug_code].label, ln.to_send,
                             [self._pack_view(p) for p in ln.packs], drugs[ln.drug_code].fridge)
                  for ln in lines if not ln.robot]
        billing: list[BillingLine] = [bill_item(ln.order_id, drugs[ln.drug_code], ln.to_send)
                                      for ln in lines if ln.to_send]
        total, covered, self_pay = totals(billing)
        patient = first["patient"] if first else {}
        delivery = first["delivery"] if first else {}
        return ShipmentView(
            shipment_id=sh.shipment_id, state=sh.state, order_ids=list(sh.order_ids),
            patient_id=sh.patient_id, patient_name=patient.get("name", ""),
            patient_phone=patient.get("phone"), address=delivery.get("address", ""),
            window_start=sh.window_start,
            window_end=datetime.fromisoformat(delivery["window_end"]) if delivery
            else sh.window_start,
            priority=_RANK_NAME[sh.priority_rank], robot_picks=robot, manual_picks=manual,
            picked=[self._pack_view(p) for ln in lines if ln.robot for p in ln.packs],
            owed=[OwedLine(ln.item, ln.drug_code, ln.owed) for ln in lines if ln.owed],
            short=[OwedLine(ln.item, ln.drug_code, ln.short) for ln in lines if ln.short],
            billing=billing, total=total, covered=covered, self_pay=self_pay,
            fridge=any(d.fridge for d in drugs.values()), holds=list(sh.holds),
            created_at=sh.created_at)

    # ================================================================== packs & stock
    def _set_pack_state(self, p: Pack, new: PackState, actor: Actor, action: str,
                        reason: str | None = None, log: bool = True) -> None:
        """The one place a pack changes state."""
        before = p.state
        p.state = new
        self.journal.write("UPDATE packs SET state=?, slot=?, store_seq=?, shipment_id=?, "
                           "order_id=?, updated_at=? WHERE pack_id=?",
                           (new.value, p.slot, p.store_seq, p.shipment_id, p.order_id,
                            self._stamp(), p.pack_id))
        if log:
            after: dict[str, Any] = {"state": new.value, "slot": p.slot,
                                     "shipment_id": p.shipment_id}
            if reason:
                after["reason"] = reason
            self._audit(actor, action, f"pack:{p.pack_id}", {"state": before.value}, after)
        if new in (PackState.DISPENSED, PackState.REFUSED, PackState.MISSING,
                   PackState.DROPPED):
            self._packs.pop(p.pack_id, None)
            if p.serial is not None and self._serials.get((p.gtin, p.serial)) == p.pack_id:
                del self._serials[(p.gtin, p.serial)]

    def check_scan(self, scan: str) -> PackScan:
        """Would this pack be accepted? Raises ``LoadRefused`` with the reason."""
        d = parse_scan(scan)
        drug = self.formulary.get(d.gtin)
        if drug is None:
            raise LoadRefused("unknown_gtin", f"GTIN {d.gtin} is not in the formulary; set "
                                              "the pack aside")
        if d.expiry is None:
            raise LoadRefused("no_expiry", "the scan has no expiry date (17); load the pack "
                                           "by hand with its expiry or set it aside")
        if not d.batch:
            raise LoadRefused("no_batch", "the scan has no batch number (10); set the pack "
                                          "aside")
        today = self.clock().date()
        if d.expiry < today:
            raise LoadRefused("expired", f"the pack expired on {d.expiry.isoformat()}; do not "
                                         "load it")
        days_left = (d.expiry - today).days
        if days_left < self.policy.min_shelf_life_days:
            raise LoadRefused("short_shelf_life", f"only {days_left} days of shelf life left; "
                              f"the minimum is {self.policy.min_shelf_life_days}")
        if (d.gtin, d.batch) in self._quarantined:
            raise LoadRefused("quarantined", f"batch {d.batch} is quarantined; do not load it")
        if d.serial is not None:
            if (d.gtin, d.serial) in self._serials:
                raise LoadRefused("serial_in_stock", f"serial {d.serial} is already in stock: "
                                  "this scan is a duplicate or the pack is a copy")
            if self.journal.query_one(SERIAL_DISPENSED, (d.gtin, d.serial)):
                raise LoadRefused("serial_dispensed", f"serial {d.serial} was already "
                                  "dispensed; quarantine the pack and report it")
        return PackScan(d.gtin, d.expiry, d.batch, d.serial, drug.label, drug.robot)

    def begin_load(self, scan: str, actor: Actor) -> PackView:
        """Accept a scanned pack for loading and give it a slot (state ``loading``)."""
        with self._tx():
            ps = self.check_scan(scan)
            if not ps.robot:
                raise LoadRefused("not_for_robot", f"{ps.name} is a fridge or manual item; it "
                                  "is not stored in the robot")
            try:
                slot = self.stock.choose_slot(ps.gtin, ps.batch, ps.expiry)
            except NoFreeSlot:
                raise LoadRefused("no_free_slot", "the robot has no free slot; dispense or "
                                  "remove stock first") from None
            self.stock.slots[slot].incoming += 1
            p = Pack(self._next_pack_id, ps.gtin, ps.batch, ps.expiry, ps.serial,
                     PackState.LOADING, slot)
            self._next_pack_id += 1
            self._insert_pack(p, actor, "pack.loading")
            return self._pack_view(p.pack_id)

    def _insert_pack(self, p: Pack, actor: Actor, action: str) -> None:
        stamp = self._stamp()
        self.journal.write(
            "INSERT INTO packs (pack_id, gtin, batch, expiry, serial, slot, store_seq, state, "
            "shipment_id, order_id, loaded_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (p.pack_id, p.gtin, p.batch, p.expiry.isoformat(), p.serial, p.slot, p.store_seq,
             p.state.value, p.shipment_id, p.order_id, stamp, stamp))
        self._packs[p.pack_id] = p
        if p.serial is not None:
            self._serials[(p.gtin, p.serial)] = p.pack_id
        self._audit(actor, action, f"pack:{p.pack_id}", None, {
            "state": p.state.value, "gtin": p.gtin, "batch": p.batch,
            "expiry": p.expiry.isoformat(), "serial": p.serial, "slot": p.slot,
            "shipment_id": p.shipment_id, "order_id": p.order_id})

    def _loading_pack(self, pack_id: int) -> Pack:
        p = self._packs.get(pack_id)
        if p is None or p.state is not PackState.LOADING or p.slot is None:
            raise InvalidState(f"pack {pack_id} is not being loaded")
        return p

    def confirm_stored(self, pack_id: int, actor: Actor = SYSTEM) -> PackView:
        """The robot confirmed the pack is in its slot; held shipments may now go."""
        with self._tx():
            p = self._loading_pack(pack_id)
            assert p.slot is not None
            p.store_seq = self._next_store_seq
            self._next_store_seq += 1
            self.stock.place(p.slot, p.gtin, p.batch, p.expiry, p.pack_id, incoming=True)
            self._set_pack_state(p, PackState.IN_STOCK, actor, "pack.stored")
            if (p.gtin, p.batch) in self._quarantined or self.stock.slots[p.slot].blocked:
                self._block_slot(p.slot, actor, "stored into a quarantined batch or slot")
            else:
                self._retry_waiting([p.gtin])
            return self._pack_view(p.pack_id)

    def refuse_stored(self, pack_id: int, reason: str, actor: Actor = SYSTEM) -> PackView:
        """The robot could not store the pack; its slot place is given back."""
        with self._tx():
            p = self._loading_pack(pack_id)
            assert p.slot is not None
            self.stock.cancel_incoming(p.slot)
            self._set_pack_state(p, PackState.REFUSED, actor, "pack.refused", reason=reason)
            return self._pack_view(p.pack_id)

    def _block_slot(self, slot_no: int, actor: Actor, reason: str) -> None:
        """Quarantine a slot's packs and move every reservation off it."""
        if slot_no not in self.stock.slots:
            self.stock.add_incoming(slot_no, "", "", date.max)
            self.stock.slots[slot_no].incoming = 0
        slot = self.stock.slots[slot_no]
        self.stock.block(slot_no)
        self.journal.write("INSERT OR REPLACE INTO blocked_slots VALUES (?,?,?)",
                           (slot_no, self._stamp(), reason))
        for pid in slot.packs:
            p = self._packs[pid]
            if p.state is PackState.IN_STOCK:
                self._set_pack_state(p, PackState.QUARANTINED, actor, "pack.quarantined",
                                     reason=reason, log=False)
        self._audit(actor, "slot.blocked", f"slot:{slot_no}", None,
                    {"reason": reason, "packs": list(slot.packs)})
        self._reshuffle_slot(slot_no)

    def _discrepancy(self, slot_no: int, kind: str, expected: int, counted: int,
                     shipment_id: str | None, actor: Actor) -> int:
        cur = self.journal.write(
            "INSERT INTO discrepancies (time, slot, kind, expected, counted, shipment_id, "
            "actor) VALUES (?,?,?,?,?,?,?)", (self._stamp(), slot_no, kind, expected,
                                             counted, shipment_id, actor.name))
        self._audit(actor, "slot.discrepancy", f"slot:{slot_no}", {"expected": expected},
                    {"counted": counted, "kind": kind, "shipment_id": shipment_id})
        return int(cur.lastrowid or 0)

    def quarantine_batch(self, gtin: str, batch: str, actor: Actor, reason: str) -> int:
        """Recall/quarantine a batch at once: its slots are blocked, reservations on them
        are moved to other batches, its packs in open totes must be taken out (their lines
        are owed again). Returns how many packs were quarantined."""
        with self._tx():
            self._quarantined.add((gtin, batch))
            self.journal.write("INSERT OR IGNORE INTO quarantined_batches VALUES (?,?,?,?,?)",
                               (gtin, batch, self._stamp(), actor.name, reason))
            count = 0
            for slot_no in sorted(self.stock.by_batch.get((gtin, batch), set())):
                count += len(self.stock.slots[slot_no].packs)
                self._block_slot(slot_no, actor, f"batch {batch} quarantined: {reason}")
            in_totes = [p for p in self._packs.values() if p.gtin == gtin and p.batch == batch
                        and p.state is PackState.PICKED]
            for p in in_totes:
                count += 1
                self._pull_from_tote(p, PackState.QUARANTINED, actor, reason)
            self._audit(actor, "batch.quarantined", f"batch:{gtin}/{batch}", None,
                        {"reason": reason, "packs": count})
            return count

    def _pull_from_tote(self, p: Pack, state: PackState, actor: Actor, reason: str) -> None:
        sh = self._shipments.get(p.shipment_id or "")
        self._set_pack_state(p, state, actor, f"pack.{state.value}", reason=reason)
        if sh is None:
            return
        for ln in sh.lines:
            if p.pack_id in ln.packs:
                ln.packs.remove(p.pack_id)
                if ln.robot:
                    ln.owed += 1
        self._fill_owed(sh, "shipment.reallocated")

    def record_pack_lost(self, pack_id: int, state: PackState,
                         actor: Actor = SYSTEM) -> PackView:
        """A pack was dropped or not found in its slot; its place in a shipment is filled
        from other stock."""
        if state not in (PackState.DROPPED, PackState.MISSING):
            raise InvalidState("a lost pack is either dropped or missing")
        with self._tx():
            p = self._packs.get(pack_id)
            if p is None or p.state not in (PackState.IN_STOCK, PackState.PICKED):
                raise InvalidState(f"pack {pack_id} is not in stock or in a tote")
            if p.state is PackState.PICKED:
                self._pull_from_tote(p, state, actor, "lost from the tote")
            else:
                assert p.slot is not None
                slot = self.stock.slots[p.slot]
                slot.packs.remove(p.pack_id)
                self._set_pack_state(p, state, actor, f"pack.{state.value}")
                if slot.reserved > len(slot.packs):
                    self._reshuffle_slot(p.slot)
                self.stock.unreserve(p.slot, 0)  # frees the slot if it is now empty
            return self._pack_view(pack_id)

    def record_slot_count(self, slot: int, counted: int,
                          actor: Actor) -> DiscrepancyView | None:
        """A person or the robot counted a slot. A mismatch is recorded and the slot is
        blocked (its packs quarantined) until resolved."""
        with self._tx():
            s = self.stock.slots.get(slot)
            expected = len(s.packs) if s else 0
            if counted == expected:
                self._audit(actor, "slot.counted", f"slot:{slot}", None, {"counted": counted})
                return None
            did = self._discrepancy(slot, "count", expected, counted, None, actor)
            self._block_slot(slot, actor, f"counted {counted}, records say {expected}")
            return next(d for d in self.list_discrepancies() if d.id == did)

    def list_discrepancies(self, limit: int = 1000) -> list[DiscrepancyView]:
        return [DiscrepancyView(*r) for r in self.journal.query(
            "SELECT id, time, slot, kind, expected, counted, shipment_id FROM discrepancies "
            "ORDER BY id DESC LIMIT ?", (limit,))]

    def list_stock(self, gtin: str | None = None, state: PackState | None = PackState.IN_STOCK,
                   limit: int = 1000, after: int | None = None) -> list[PackView]:
        """Packs by pack id (``after`` = last pack id of the previous page)."""
        # For one drug, through the (gtin, batch) index: left to itself SQLite walks every
        # pack of the state (58,000 in stock on a day's load) to find a drug's few.
        table = "packs INDEXED BY packs_batch" if gtin is not None else "packs"
        sql = ("SELECT pack_id, gtin, batch, expiry, serial, state, slot, shipment_id, "
               f"order_id FROM {table} WHERE pack_id > ?")
        params: list[Any] = [after or 0]
        if gtin is not None:
            sql += " AND gtin=?"
            params.append(gtin)
        if state is not None:
            sql += " AND state=?"
            params.append(state.value)
        sql += " ORDER BY pack_id LIMIT ?"
        params.append(limit)
        return [self._pack_view_row(r) for r in self.journal.query(sql, params)]

    def stock_level(self, gtin: str) -> int:
        """Packs of a drug that could be reserved now."""
        return self.stock.available(gtin, self.clock().date())

    def confirm_manual(self, shipment_id: str, scan: str, actor: Actor) -> PackView:
        """Staff confirm a fridge/manual pack for a shipment by scanning it."""
        with self._tx():
            sh = self._live_shipment(shipment_id, ShipmentState.QUEUED, ShipmentState.PICKING,
                                     ShipmentState.LABELLING)
            d = parse_scan(scan)
            drug = self.formulary.get(d.gtin)
            if drug is None:
                raise LoadRefused("unknown_gtin", f"GTIN {d.gtin} is not in the formulary")
            if d.expiry is None:
                raise LoadRefused("no_expiry", "the scan has no expiry date (17)")
            if not d.batch:
                raise LoadRefused("no_batch", "the scan has no batch number (10)")
            if d.expiry < self.clock().date():
                raise LoadRefused("expired", f"the pack expired on {d.expiry.isoformat()}; "
                                             "take another")
            if (d.gtin, d.batch) in self._quarantined:
                raise LoadRefused("quarantined", f"batch {d.batch} is quarantined; take "
                                                 "another pack")
            if d.serial is not None:
                if (d.gtin, d.serial) in self._serials:
                    raise LoadRefused("serial_in_stock", f"serial {d.serial} was already "
                                                         "scanned")
                if self.journal.query_one(SERIAL_DISPENSED, (d.gtin, d.serial)):
                    raise LoadRefused("serial_dispensed", f"serial {d.serial} was already "
                                                          "dispensed; quarantine the pack")
            line = next((ln for ln in sh.lines if not ln.robot and ln.drug_code == d.gtin
                         and not ln.done), None)
            if line is None:
                raise LoadRefused("not_on_pick_list", f"{drug.label} is not (or no longer) on "
                                  f"the manual pick list of shipment {shipment_id}")
            p = Pack(self._next_pack_id, d.gtin, d.batch, d.expiry, d.serial, PackState.PICKED,
                     None, None, sh.shipment_id, line.order_id)
            self._next_pack_id += 1
            self._insert_pack(p, actor, "pack.confirmed_manual")
            line.packs.append(p.pack_id)
            self._save_shipment(sh)
            return self._pack_view(p.pack_id)

    def _pack_view(self, pack_id: int) -> PackView:
        p = self._packs.get(pack_id)
        if p is not None:
            return PackView(p.pack_id, p.gtin, p.batch, p.expiry, p.serial, p.state, p.slot,
                            p.shipment_id, p.order_id)
        row = self.journal.query_one(
            "SELECT pack_id, gtin, batch, expiry, serial, state, slot, shipment_id, order_id "
            "FROM packs WHERE pack_id=?", (pack_id,))
        if row is None:
            raise NotFound(f"no pack {pack_id}")
        return self._pack_view_row(row)

    @staticmethod
    def _pack_view_row(r: Sequence[Any]) -> PackView:
        return PackView(r[0], r[1], r[2], date.fromisoformat(r[3]), r[4], PackState(r[5]), r[6],
                        r[7], r[8])

    def get_pack(self, pack_id: int) -> PackView:
        return self._pack_view(pack_id)

    # ================================================================== audit
    def audit_verify(self) -> VerifyResult:
        return self.journal.verify()
