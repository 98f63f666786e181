"""Shipments: orders of one patient to one address that share a tote, a label and a
packing slip.

``Shipment`` and ``Line`` are the in-memory form, with their JSON image in the journal
(``shipments.data``); ``ShipmentBook`` owns the live shipments: merging, the schedule and
the shipment lifecycle.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dispenser.core.books import Books, bulk
from dispenser.core.checks import STOCK_SHORT, Hold
from dispenser.core.errors import InvalidState, NotFound
from dispenser.core.formulary import Formulary
from dispenser.core.lifecycles import SHIPMENT_LIFECYCLE
from dispenser.core.policy import Policy
from dispenser.core.shared import shared_datetime, shared_text, with_shared_zone
from dispenser.core.states import SHIPMENT_FINAL, OrderState, ShipmentState
from dispenser.core.views import SYSTEM, Actor

if TYPE_CHECKING:
    from dispenser.core.allocation import Allocator
    from dispenser.core.intake import LiveOrder, OrderBook

# Built once (``json.dumps`` with options builds an encoder per call). The data is a tree
# built for the row, never circular: no check (it took a third of the encoding).
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(slots=True)
class Line:
    """One order item inside a shipment."""

    order_id: str
    drug_code: str
    quantity: int
    days_supply: int
    robot: bool
    reserved: list[list[int]] = field(default_factory=list)  # [[slot, count]] not yet picked
    packs: list[int] = field(default_factory=list)  # picked or confirmed pack ids
    owed: int = 0  # needed but not reserved (stock went missing during picking)
    short: int = 0  # not sent at all (partial dispensing)

    @property
    def item(self) -> str:
        return f"{self.order_id}/{self.drug_code}"

    @property
    def reserved_count(self) -> int:
        """Packs reserved and not yet picked."""
        return sum(n for _, n in self.reserved) if self.reserved else 0

    @property
    def to_send(self) -> int:
        return self.quantity - self.short

    @property
    def done(self) -> bool:
        return len(self.packs) >= self.to_send

    @property
    def as_ordered(self) -> bool:
        """Nothing reserved, picked, owed or short: the order item and nothing more."""
        return not (self.reserved or self.packs or self.owed or self.short)

    def as_json(self) -> list[Any]:
        return [self.order_id, self.drug_code, self.quantity, self.days_supply, self.robot,
                self.reserved, self.packs, self.owed, self.short]

    @classmethod
    def from_json(cls, v: list[Any]) -> Line:
        return cls(v[0], shared_text(v[1]), v[2], v[3], v[4], v[5], v[6], v[7], v[8])


@dataclass(slots=True)
class Shipment:
    shipment_id: str
    seq: int
    patient_id: str
    address_key: str
    state: ShipmentState
    created_at: datetime
    close_at: datetime  # when the merge window ends
    window_start: datetime
    priority_rank: int
    arrival: int  # lowest order seq: first come, first served
    order_ids: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)

    @property
    def urgent(self) -> bool:
        return self.priority_rank == 0

    def schedule_key(self) -> tuple[float, int, int]:
        """Delivery window start, then priority, then arrival.

        The window start is compared as a POSIX timestamp (exact to the microsecond):
        parsed times each carry their own tzinfo object, and aware datetimes with different
        tzinfo objects compare through utcoffset() calls, which made sorting a merge
        round's 10,000 shipments three times slower."""
        return self.window_start.timestamp(), self.priority_rank, self.arrival

    @property
    def lines_as_ordered(self) -> bool:
        """Held with no lines, or lines that are just its orders' items. Such a shipment
        is stored without lines (``"lines": null``) and loads with none: the ``Dispensary``
        makes them from its orders when stock is tried again. When stock is short, most of
        a merge round's shipments are held, and their lines were half of what the round
        encoded and wrote for shipments."""
        return self.state is ShipmentState.HELD and all(ln.as_ordered for ln in self.lines)

    def data_json(self) -> str:
        lines = None if self.lines_as_ordered else [ln.as_json() for ln in self.lines]
        return _ENCODER.encode({
            "close_at": self.close_at.isoformat(), "window_start": self.window_start.isoformat(),
            "priority_rank": self.priority_rank, "arrival": self.arrival,
            "order_ids": self.order_ids, "lines": lines,
            "holds": [[h.code, h.detail, h.drug_code] for h in self.holds],
        })

    @classmethod
    def from_row(cls, shipment_id: str, seq: int, patient_id: str, address_key: str,
                 state: str, created_at: str, data: str) -> Shipment:
        """The shipment of a journal row; stored without lines (see ``lines_as_ordered``),
        it comes with none."""
        d = json.loads(data)
        return cls(shipment_id, seq, patient_id, address_key, ShipmentState(state),
                   with_shared_zone(datetime.fromisoformat(created_at)),
                   shared_datetime(d["close_at"]), shared_datetime(d["window_start"]),
                   d["priority_rank"], d["arrival"], d["order_ids"],
                   [Line.from_json(v) for v in d["lines"] or ()],
                   [Hold(*h) for h in d["holds"]])

    def slots_reserved(self) -> set[int]:
        return {s for ln in self.lines for s, _ in ln.reserved}


# ====================================================================== the book

_UPDATE = "UPDATE shipments SET state=?, updated_at=?, data=? WHERE seq=?"
_LIVE = tuple(s.value for s in ShipmentState if s not in SHIPMENT_FINAL)
_COLUMNS = "shipment_id, seq, patient_id, address_key, state, created_at, data"


class ShipmentBook:
    """The live shipments: merging orders of one patient and address within the merge
    window, the schedule, and ``fire``, the one place a shipment changes state (its
    orders follow, each with its own audit row)."""

    orders: OrderBook  # wired by the Dispensary
    allocator: Allocator

    def __init__(self, books: Books, formulary: Formulary, policy: Policy) -> None:
        self.books = books
        self.journal = books.journal
        self.formulary = formulary
        self.policy = policy
        self._pending: dict[str, Shipment] | None = None

    # ------------------------------------------------------------------ memory
    def load(self) -> None:
        self.live: dict[str, Shipment] = {}
        self.forming: dict[tuple[str, str], str] = {}  # (patient, address key) -> id
        # Queued shipments in schedule order, (schedule key, id), kept up to date as
        # shipments are queued; one that left the queue is dropped when ``next_due``
        # meets it. None: built again on the next call.
        self.schedule: list[tuple[tuple[float, int, int], str]] | None = None
        marks = ",".join("?" * len(_LIVE))
        orders = self.orders.live  # (loaded first)
        for row in self.journal.iterate(
                f"SELECT {_COLUMNS} FROM shipments WHERE state IN ({marks}) ORDER BY seq",
                _LIVE):
            sh = Shipment.from_row(*row)
            # The ids and keys its live orders hold already: one string each, not two.
            first = orders.get(sh.order_ids[0]) if sh.order_ids else None
            if first is not None:
                sh.patient_id, sh.address_key = first.patient_id, first.address_key
            sh.order_ids = [o.order_id if (o := orders.get(i)) else i for i in sh.order_ids]
            for ln in sh.lines:
                if (o := orders.get(ln.order_id)) is not None:
                    ln.order_id = o.order_id
            self.live[sh.shipment_id] = sh
            if sh.state is ShipmentState.FORMING:
                self.forming[(sh.patient_id, sh.address_key)] = sh.shipment_id
        self.next_seq = (self.journal.query_one("SELECT max(seq) FROM shipments")[0] or 0) + 1

    def save(self, sh: Shipment) -> None:
        if self._pending is not None:
            self._pending[sh.shipment_id] = sh  # written once, at the end
            return
        self.journal.write(_UPDATE, (sh.state.value, self.books.stamp(), sh.data_json(),
                                     sh.seq))

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Collect row updates and write each changed shipment once, at the end."""
        self._pending = {}
        try:
            yield
            stamp = self.books.stamp()
            rows = sorted(self._pending.values(), key=lambda sh: sh.seq)
            self.journal.write_many(_UPDATE, [(sh.state.value, stamp, sh.data_json(), sh.seq)
                                              for sh in rows])
        finally:
            self._pending = None

    # ------------------------------------------------------------------ lifecycle
    def fire(self, sh: Shipment, trigger: str, actor: Actor, *,
             holds: list[Hold] | None = None, extra: dict[str, Any] | None = None) -> None:
        """The one place a shipment changes state; its orders follow."""
        new = SHIPMENT_LIFECYCLE.next_state(sh.state, trigger, sh.shipment_id)
        before = {"state": sh.state.value}
        if (new is ShipmentState.QUEUED and sh.state is not ShipmentState.QUEUED
                and self.schedule is not None):
            bisect.insort(self.schedule, (sh.schedule_key(), sh.shipment_id))
        sh.state = new
        if holds is not None:
            sh.holds = holds
        self.save(sh)
        after: dict[str, Any] = {"state": new.value, "trigger": trigger,
                                 "orders": sh.order_ids,
                                 "holds": [h.as_dict() for h in sh.holds]}
        if extra:
            after.update(extra)
        self.books.audit(actor, f"shipment.{new.value}", sh.shipment_id, before, after)
        cause = {"shipment_id": sh.shipment_id}
        for oid in sh.order_ids:
            o = self.orders.live[oid]
            order_holds: list[Hold] = []
            if new is ShipmentState.HELD:
                codes = {c for c, _, _ in o.items}
                order_holds = [h for h in sh.holds if h.drug_code in codes] or [
                    Hold(STOCK_SHORT, f"waits with shipment {sh.shipment_id} for stock")]
            self.orders.fire(o, trigger, actor, holds=order_holds, extra=cause)
        if new in SHIPMENT_FINAL:
            self.live.pop(sh.shipment_id, None)
        if new is not ShipmentState.HELD and not any(ln.owed for ln in sh.lines):
            self.allocator.stop_waiting(sh)

    def live_shipment(self, shipment_id: str, *states: ShipmentState) -> Shipment:
        sh = self.live.get(shipment_id)
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

    # ------------------------------------------------------------------ merging
    def join(self, o: LiveOrder, now: datetime) -> None:
        """The order joins its patient's forming shipment to the same address (a new one
        when there is none)."""
        key = (o.patient_id, o.address_key)
        sid = self.forming.get(key)
        if sid is None:
            seq = self.next_seq
            self.next_seq += 1
            sh = Shipment(f"SH-{seq:08d}", seq, o.patient_id, o.address_key,
                          ShipmentState.FORMING, now,
                          now + timedelta(seconds=self.policy.merge_window_s), o.window_start,
                          o.priority_rank, o.seq, [o.order_id])
            self.live[sh.shipment_id] = sh
            self.forming[key] = sh.shipment_id
            self.journal.write(
                "INSERT INTO shipments (seq, shipment_id, patient_id, address_key, state, "
                "created_at, updated_at, data) VALUES (?,?,?,?,?,?,?,?)",
                (seq, sh.shipment_id, sh.patient_id, sh.address_key, sh.state.value,
                 now.isoformat(), now.isoformat(), sh.data_json()))
            self.books.audit(SYSTEM, "shipment.created", sh.shipment_id, None,
                             {"state": sh.state.value, "orders": [o.order_id],
                              "close_at": sh.close_at.isoformat()})
        else:
            sh = self.live[sid]
            sh.order_ids.append(o.order_id)
            self.refresh_schedule(sh)
            self.save(sh)
        o.shipment_id = sh.shipment_id

    def refresh_schedule(self, sh: Shipment) -> None:
        orders = [self.orders.live[oid] for oid in sh.order_ids]
        if orders:
            sh.window_start = min(o.window_start for o in orders)
            sh.priority_rank = min(o.priority_rank for o in orders)
            sh.arrival = min(o.seq for o in orders)
            self.schedule = None  # its key may have changed

    def take_out(self, o: LiveOrder) -> None:
        """Remove an order (and its reservations) from its shipment."""
        if o.shipment_id is None:
            return
        sh = self.live[o.shipment_id]
        if sh.state is ShipmentState.HELD and not sh.lines:
            sh.lines = self.lines_as_ordered(sh)
        freed = set()
        for ln in [ln for ln in sh.lines if ln.order_id == o.order_id]:
            self.allocator.release_line(ln)
            freed.add(ln.drug_code)
            sh.lines.remove(ln)
        sh.order_ids.remove(o.order_id)
        o.shipment_id = None
        if not sh.order_ids:
            self.forming.pop((sh.patient_id, sh.address_key), None)
            self.fire(sh, "cancel", SYSTEM, extra={"reason": "its last order left"})
        else:
            self.refresh_schedule(sh)
            sh.holds = [h for h in sh.holds if any(ln.drug_code == h.drug_code
                                                   for ln in sh.lines)]
            self.save(sh)
            if sh.state is ShipmentState.HELD:
                self.allocator.try_allocate(sh)
        self.allocator.retry_waiting(freed)

    def close_merge_windows(self, limit: int | None = None) -> list[Shipment]:
        """Close merge windows that are over (urgent shipments at once) and give each
        shipment stock (``Allocator.try_allocate``), in schedule order; with ``limit``, at
        most that many (the first in schedule order; the rest stay due for the next call).
        Returns the shipments formed now."""
        now = self.books.now()
        due = [sh for sh in (self.live[s] for s in self.forming.values())
               if sh.close_at <= now or sh.urgent]
        if not due:
            return []
        due.sort(key=Shipment.schedule_key)
        if limit is not None:
            del due[limit:]
        # Row updates of orders and shipments are collected and written once each.
        with bulk(), self.books.tx(), self.books.round(now.isoformat()), \
                self.orders.collecting(), self.collecting():
            for sh in due:
                del self.forming[(sh.patient_id, sh.address_key)]
                self.allocator.try_allocate(sh)
        return due

    def lines_as_ordered(self, sh: Shipment) -> list[Line]:
        """One line per item of the shipment's orders, nothing reserved yet. The items of
        an order no longer live (a final shipment's) come from its body in the journal."""
        lines: list[Line] = []
        for oid in sh.order_ids:
            o = self.orders.live.get(oid)
            items = o.items if o is not None else [
                (i["drug_code"], i["quantity"], i["days_supply"])
                for i in self.orders.body(oid)["items"]]
            lines += [Line(oid, code, qty, days, self.formulary[code].robot)
                      for code, qty, days in items]
        return lines

    # ------------------------------------------------------------------ reading
    def next_due(self, limit: int) -> list[Shipment]:
        """Queued shipments in schedule order: delivery window start, priority, arrival.

        The scheduler asks every cycle; sorting every queued shipment each time (12,000 in
        a day's burst) was 30-44 % of the daemon's CPU, so the order is kept (see
        ``schedule``) and only its front is read."""
        if self.schedule is None:
            self.schedule = sorted((sh.schedule_key(), sh.shipment_id)
                                   for sh in self.live.values()
                                   if sh.state is ShipmentState.QUEUED)
        schedule = self.schedule
        found: list[Shipment] = []
        seen: set[str] = set()
        i = 0
        while i < len(schedule) and len(found) < limit:
            sid = schedule[i][1]
            sh = self.live.get(sid)
            if sh is None or sh.state is not ShipmentState.QUEUED or sid in seen:
                del schedule[i]  # left the queue (or queued again: a second entry)
                continue
            seen.add(sid)
            found.append(sh)
            i += 1
        return found

    def get(self, shipment_id: str) -> Shipment:
        """A live shipment, or a final one as its journal row holds it."""
        sh = self.live.get(shipment_id)
        if sh is None:
            row = self.journal.query_one(
                f"SELECT {_COLUMNS} FROM shipments WHERE shipment_id=?", (shipment_id,))
            if row is None:
                raise NotFound(f"no shipment {shipment_id}")
            sh = Shipment.from_row(*row)
        return sh

    def page(self, state: ShipmentState | None, limit: int, after: str | None
             ) -> list[Shipment]:
        sql, params = page_query("shipments", "shipment_id", _COLUMNS, state, after, limit)
        return [self.live.get(row[0]) or Shipment.from_row(*row)
                for row in self.journal.query(sql, params)]


def page_query(table: str, id_column: str, columns: str,
               state: OrderState | ShipmentState | None, after: str | None,
               limit: int) -> tuple[str, list[Any]]:
    """One page of a list in arrival order (``seq``), optionally of one state; ``after`` is
    the last id of the previous page. ``table`` and the column names are this package's
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
