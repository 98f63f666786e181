"""Intake: orders as the core keeps them while they are live, and what happens to them.

``OrderBook`` owns the live (not final) orders in memory and the ``orders`` rows of the
journal. An order is parsed (``dispenser.core.orders``), made idempotent by its content
hash, checked (``dispenser.core.checks``) and stored as received, held or rejected; a
received order joins its patient's forming shipment. ``fire`` is the one place an order
changes state (``ORDER_LIFECYCLE``), with one audit row per change, also when its
shipment caused it. Order bodies (with patient data) stay in the journal, not in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dispenser.core.books import Books
from dispenser.core.checks import Hold, outcome, run_checks
from dispenser.core.errors import Conflict, InvalidState, NotFound, UnknownDrug
from dispenser.core.formulary import Formulary
from dispenser.core.history import patient_history
from dispenser.core.lifecycles import ORDER_LIFECYCLE
from dispenser.core.orders import Priority, parse_order
from dispenser.core.policy import Policy
from dispenser.core.shared import shared_datetime, shared_item, shared_moment, with_shared_zone
from dispenser.core.states import ORDER_CANCELLABLE, ORDER_FINAL, OrderState
from dispenser.core.views import SYSTEM, Actor, ItemView, OrderView

if TYPE_CHECKING:
    from dispenser.core.prescriptions import Assessment, PrescriptionBook
    from dispenser.core.shipments import ShipmentBook
    from dispenser.core.supply_index import SupplyIndex

__all__ = ["RANK", "RANK_NAME", "LiveOrder", "OrderBook", "holds_from", "items_from"]

RANK_NAME = {p.rank: p.value for p in Priority}
RANK = {p.value: p.rank for p in Priority}
_LIVE = tuple(s.value for s in OrderState if s not in ORDER_FINAL)
_VERDICT = {"ok": OrderState.RECEIVED, "hold": OrderState.HELD,
            "reject": OrderState.REJECTED}
# An order ending in one of these is not dispensed: it gives its prescription fills back.
_GIVES_BACK = (OrderState.CANCELLED, OrderState.REJECTED, OrderState.FAILED)

# Rows are addressed by their primary key (seq): a bulk update sorted by it walks the
# table's pages in order instead of jumping between them.
_UPDATE = "UPDATE orders SET state=?, holds=?, shipment_id=?, updated_at=? WHERE seq=?"
OrderRow = tuple[str, str, str | None, str, int]


@dataclass(slots=True)
class LiveOrder:
    """A live (not final) order as the core keeps it in memory."""

    seq: int
    order_id: str
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

    def view(self) -> OrderView:
        return OrderView(self.order_id, self.state, self.patient_id,
                         RANK_NAME[self.priority_rank], self.received_at,
                         [ItemView(*i) for i in self.items], list(self.holds),
                         self.shipment_id)


def items_text(items: list[tuple[str, int, int]]) -> str:
    return ",".join(f"{c}*{q}*{d}" for c, q, d in items)


def items_from(text: str) -> list[tuple[str, int, int]]:
    return [shared_item(part) for part in text.split(",")]


# Built once (``json.dumps`` with options builds an encoder per call); holds are never
# circular, so no check.
_HOLDS_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                  check_circular=False)


def holds_json(holds: Sequence[Hold]) -> str:
    if not holds:
        return "[]"
    return _holds_json_cached(tuple(holds))


@lru_cache(maxsize=4096)
def _holds_json_cached(holds: tuple[Hold, ...]) -> str:
    return _HOLDS_ENCODER.encode([h.as_dict() for h in holds])


def holds_from(text: str) -> list[Hold]:
    if text == "[]":
        return []
    return [Hold(h["code"], h["detail"], h.get("drug_code"),
                 tuple(h["cause"].items()) if h.get("cause") else ())
            for h in json.loads(text)]


class OrderBook:
    shipments: ShipmentBook  # wired by the Dispensary
    prescriptions: PrescriptionBook | None = None  # wired by the Dispensary
    supplies: SupplyIndex | None = None  # wired by the Dispensary

    def __init__(self, books: Books, formulary: Formulary, policy: Policy) -> None:
        self.books = books
        self.journal = books.journal
        self.formulary = formulary
        self.policy = policy
        # While a merge round runs, row updates are collected here and written with one
        # executemany at its end.
        self._pending: list[OrderRow] | None = None

    # ------------------------------------------------------------------ memory
    def load(self) -> None:
        self.live: dict[str, LiveOrder] = {}
        self.by_patient: dict[str, list[str]] = {}  # live order ids per patient
        marks = ",".join("?" * len(_LIVE))
        for row in self.journal.iterate(
                "SELECT seq, order_id, patient_id, prescription_id, address_key, "
                "priority, window_start, items, received_at, state, holds, shipment_id "
                f"FROM orders WHERE state IN ({marks}) ORDER BY seq", _LIVE):
            self._index(LiveOrder(
                row[0], row[1], row[2], row[3], row[4], RANK[row[5]],
                shared_datetime(row[6]), items_from(row[7]),
                with_shared_zone(datetime.fromisoformat(row[8])), OrderState(row[9]),
                holds_from(row[10]), row[11]))
        self.next_seq = (self.journal.query_one("SELECT max(seq) FROM orders")[0] or 0) + 1

    def _index(self, o: LiveOrder) -> None:
        self.live[o.order_id] = o
        self.by_patient.setdefault(o.patient_id, []).append(o.order_id)

    def _unindex(self, o: LiveOrder) -> None:
        self.live.pop(o.order_id, None)
        ids = self.by_patient.get(o.patient_id)
        if ids is not None and o.order_id in ids:
            ids.remove(o.order_id)
            if not ids:
                del self.by_patient[o.patient_id]

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Collect row updates and write them at the end, in key order (a stable sort: a
        later update of the same row still wins)."""
        self._pending = []
        try:
            yield
            self._pending.sort(key=lambda row: row[-1])
            self.journal.write_many(_UPDATE, self._pending)
        finally:
            self._pending = None

    # ------------------------------------------------------------------ lifecycle
    def fire(self, o: LiveOrder, trigger: str, actor: Actor, *,
             holds: list[Hold] | None = None, reason: str | None = None,
             extra: dict[str, Any] | None = None) -> None:
        """The one place an order changes state: the table decides the new state; the
        row, the audit row and the indexes follow."""
        new = ORDER_LIFECYCLE.next_state(o.state, trigger, o.order_id)
        before = {"state": o.state.value, "holds": [h.code for h in o.holds]}
        o.state = new
        if holds is not None:
            o.holds = holds
        self.save(o)
        after: dict[str, Any] = {"state": new.value, "trigger": trigger,
                                 "holds": [h.as_dict() for h in o.holds]}
        if reason is not None:
            after["reason"] = reason
        if extra:
            after.update(extra)
        rxs = self.prescriptions
        if new in _GIVES_BACK and rxs is not None and rxs.any_registered:
            given = rxs.give_back(o.order_id)
            if given:
                after["prescription_fills_given_back"] = given
        self.books.audit(actor, f"order.{new.value}" if trigger != "release"
                         else "order.released", o.order_id, before, after)
        if new in ORDER_FINAL:
            self._unindex(o)

    def save(self, o: LiveOrder) -> None:
        row = (o.state.value, holds_json(o.holds), o.shipment_id, self.books.stamp(), o.seq)
        if self._pending is not None:
            self._pending.append(row)
        else:
            self.journal.write(_UPDATE, row)

    def live_order(self, order_id: str) -> LiveOrder:
        o = self.live.get(order_id)
        if o is None:
            row = self.journal.query_one("SELECT state FROM orders WHERE order_id=?",
                                         (order_id,))
            if row is None:
                raise NotFound(f"no order {order_id}")
            raise InvalidState(f"order {order_id} is already {row[0]}")
        return o

    # ------------------------------------------------------------------ intake
    def submit(self, raw: Mapping[str, object], actor: Actor) -> OrderView:
        """Validate, check and store one order. The same order_id with the same content
        answers its current state; with other content raises ``Conflict``."""
        order = parse_order(raw)
        canon = order.canonical_json()
        digest = hashlib.sha256(canon.encode()).hexdigest()
        # (Not kept in memory: the journal holds it, and a new order asks it anyway.)
        row = self.journal.query_one("SELECT content_hash FROM orders WHERE order_id=?",
                                     (order.order_id,))
        known = row[0] if row else None
        if known is not None:
            if known == digest:
                return self.view(order.order_id)
            raise Conflict(f"order {order.order_id} was already received with different "
                           "content; send changes as a new order (and cancel the old one)")
        unknown = [i.drug_code for i in order.items if i.drug_code not in self.formulary]
        if unknown:
            raise UnknownDrug(unknown)
        now = self.books.now()
        stamp = now.isoformat()
        assessed: list[Assessment] = []
        rxs = self.prescriptions
        action = rxs.action(self.policy) if rxs is not None else "off"

        def provenance(o: Any) -> tuple[list[Hold], bool]:
            assert rxs is not None
            a = rxs.assess(o)
            assessed.append(a)
            return a.holds, a.registered

        results = run_checks(order, self.policy, now.date(),
                             lambda o: patient_history(self.journal, self, o,
                                                       self.supplies),
                             drugs=self.formulary,
                             provenance=(action, provenance) if action != "off" else None,
                             now=now)
        verdict, holds = outcome(results)
        state = _VERDICT[verdict]
        fills = assessed[0].fills if assessed and state is not OrderState.REJECTED else []
        o = LiveOrder(self.next_seq, order.order_id, order.patient.id,
                      order.prescription.id, order.address_key(), order.priority.rank,
                      shared_moment(order.delivery.window_start),
                      [shared_item(f"{i.drug_code}*{i.quantity}*{i.days_supply}")
                       for i in order.items],
                      now, state, holds, None)
        self.next_seq += 1
        if state is not OrderState.REJECTED:
            self._index(o)
        if state is OrderState.RECEIVED:
            self.shipments.join(o, now)
        self.journal.write(
            "INSERT INTO orders (seq, order_id, content_hash, patient_id, "
            "prescription_id, address_key, window_start, items, priority, received_at, state, "
            "holds, shipment_id, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (o.seq, o.order_id, digest, o.patient_id, o.prescription_id, o.address_key,
             o.window_start.isoformat(), items_text(o.items), order.priority.value, stamp,
             state.value, holds_json(holds), o.shipment_id, stamp))
        self.journal.write("INSERT INTO order_bodies (seq, body) VALUES (?, ?)", (o.seq, canon))
        received: dict[str, Any] = {
            "state": state.value, "patient_id": o.patient_id, "prescription": o.prescription_id,
            "priority": order.priority.value, "items": o.items, "shipment_id": o.shipment_id,
            "holds": [h.as_dict() for h in holds], "checks": [r.as_dict() for r in results]}
        if fills:
            assert rxs is not None
            rxs.record_fills(o.order_id, o.prescription_id, fills)
            received["prescription_fills"] = [list(f) for f in fills]
        self.books.audit(actor, "order.received", o.order_id, None, received)
        return o.view()

    def cancel(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """Cancel an order whose picking has not started; it leaves its shipment."""
        o = self.live_order(order_id)
        if o.state not in ORDER_CANCELLABLE:
            raise InvalidState(f"order {order_id} is {o.state.value}: picking has started, "
                               "it can no longer be cancelled; stop the shipment instead")
        self.shipments.take_out(o)
        self.fire(o, "cancel", actor, reason=reason)
        return o.view()

    def reject(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """A pharmacist refuses a held order."""
        o = self.live_order(order_id)
        if o.state is not OrderState.HELD:
            raise InvalidState(f"order {order_id} is {o.state.value}; only held orders "
                               "can be rejected (cancel it instead)")
        self.shipments.take_out(o)
        self.fire(o, "reject", actor, reason=reason)
        return o.view()

    def release(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """A pharmacist overrides the check holds of an order; it joins a shipment."""
        o = self.live_order(order_id)
        if o.state is not OrderState.HELD or o.shipment_id is not None:
            detail = ("it waits for stock and is released automatically when stock "
                      "arrives" if o.shipment_id else f"it is {o.state.value}")
            raise InvalidState(f"order {order_id} cannot be released: {detail}")
        self.fire(o, "release", actor, holds=[], reason=reason)
        self.shipments.join(o, self.books.now())
        self.save(o)
        self.books.audit(SYSTEM, "order.merged", o.order_id, None,
                         {"shipment_id": o.shipment_id})
        return o.view()

    # ------------------------------------------------------------------ reading
    def view(self, order_id: str) -> OrderView:
        o = self.live.get(order_id)
        if o is not None:
            return o.view()
        row = self.journal.query_one(
            "SELECT order_id, state, patient_id, priority, received_at, items, holds, "
            "shipment_id FROM orders WHERE order_id=?", (order_id,))
        if row is None:
            raise NotFound(f"no order {order_id}")
        return view_of_row(row)

    def body(self, order_id: str, bodies: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The order as received (canonical JSON, with patient data), from the journal."""
        text = bodies.get(order_id) if bodies else None
        if text is None:
            row = self.journal.query_one(
                "SELECT b.body FROM orders o JOIN order_bodies b USING (seq) "
                "WHERE o.order_id=?", (order_id,))
            if row is None:
                raise NotFound(f"no order {order_id}")
            text = row[0]
        body: dict[str, Any] = json.loads(text)
        return body

    def bodies(self, order_ids: list[str]) -> dict[str, str]:
        """Order bodies in a few queries (for many views at once)."""
        out: dict[str, str] = {}
        for i in range(0, len(order_ids), 500):
            chunk = order_ids[i:i + 500]
            out.update(self.journal.iterate(
                "SELECT o.order_id, b.body FROM orders o JOIN order_bodies b USING (seq) "
                "WHERE o.order_id IN "
                f"({','.join('?' * len(chunk))})", chunk))
        return out


def view_of_row(row: Sequence[Any]) -> OrderView:
    return OrderView(row[0], OrderState(row[1]), row[2], row[3],
                     datetime.fromisoformat(row[4]),
                     [ItemView(*i) for i in items_from(row[5])], holds_from(row[6]), row[7])
