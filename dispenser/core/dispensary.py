"""``Dispensary``: the facade the daemon calls; every public call is one transaction.

It builds the parts and wires them together; each part owns its data and its rules:

===================  =====================================================================
``OrderBook``        intake: orders received, checked, held, cancelled, rejected, released
``ShipmentBook``     shipments: merging, the schedule, the shipment lifecycle
``Allocator``        stock for shipments: FEFO reservations, waiting, owed packs
``PackBook``         packs and slots: the pack lifecycle, blocked slots, recalls, losses
``Loading``          scanned packs into the robot
``Picking``          picks, labelling, completion, failure of a shipment
``ManualPicks``      fridge and manual items scanned into a tote
``TaskBook``         output tasks: packs picked to an output for a requester other than a
                     shipment (pharmacy software, the expiry sweep)
``ExpirySweep``      the expiry sweep: near-expiry and expired packs to totes for
                     destruction (output tasks of purpose ``destruction``)
===================  =====================================================================

A call either commits all it did or nothing. If it fails after it wrote (or its commit
fails), the transaction is rolled back and every part reloads its memory from the journal
(the journal's ``on_rollback``), so memory and journal never disagree. Like the journal
it is not thread-safe: call it from one thread.

Size: the facade's length is the number of things the daemon may ask: one short method per
call, each one transaction through ``_call``, in the order of the table above. Split, the
list of what the daemon may ask would be in several places; the rules are in the parts.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from dispenser.core.allocation import Allocator
from dispenser.core.books import Books, bulk
from dispenser.core.errors import DispenserError
from dispenser.core.formulary import Formulary
from dispenser.core.intake import RANK_NAME, OrderBook, view_of_row
from dispenser.core.lifecycles import IllegalTransition
from dispenser.core.loading import Loading
from dispenser.core.manual import ManualPicks
from dispenser.core.packs import PackBook
from dispenser.core.patients import patient_record
from dispenser.core.picking import Picking
from dispenser.core.policy import Policy
from dispenser.core.prescriptions import PrescriptionBook
from dispenser.core.records import RecordBook, RecordOutcome
from dispenser.core.shipments import Shipment, ShipmentBook, page_query
from dispenser.core.states import OrderState, PackState, ShipmentState, TaskState
from dispenser.core.stock import SlotGeometry, StockIndex
from dispenser.core.supply_index import SupplyIndex
from dispenser.core.sweep import ExpirySweep, SweepView
from dispenser.core.tasks import TaskBook, TaskRequest, TaskView
from dispenser.core.views import (
    SYSTEM,
    Actor,
    DiscrepancyView,
    OrderView,
    PackScan,
    PackView,
    ShipmentView,
    StockCounts,
    shipment_view,
)
from dispenser.journal import Journal, VerifyResult

__all__ = ["Dispensary"]

# First orders' patient and delivery kept for shipment views (``Dispensary._first_body``).
_FIRST_BODIES = 256


class Dispensary:
    """Orders, checks, merging, FEFO stock and the journal behind one facade."""

    def __init__(self, journal: Journal, formulary: Formulary, policy: Policy,
                 geometry: SlotGeometry, clock: Callable[[], datetime],
                 institutions: Mapping[str, str] | None = None,
                 warm_indexes: bool = True) -> None:
        self.journal = journal
        self.formulary = formulary
        self.policy = policy
        self.geometry = geometry
        self.clock = clock
        self.books = Books(journal, clock)
        self.orders = OrderBook(self.books, formulary, policy)
        self.shipments = ShipmentBook(self.books, formulary, policy)
        self.packs = PackBook(self.books, geometry, policy)
        self.allocator = Allocator(self.books, policy, self.shipments)
        self.tasks = TaskBook(self.books, formulary, policy)
        self.tasks.packs = self.packs
        self.tasks.allocator = self.allocator
        self.allocator.tasks = self.tasks
        self.packs.tasks = self.tasks
        self.sweeps = ExpirySweep(self.books, self.packs, self.tasks)
        self.orders.shipments = self.shipments
        self.shipments.orders = self.orders
        self.shipments.allocator = self.allocator
        self.packs.allocator = self.allocator
        self.packs.shipments = self.shipments
        self.loading = Loading(self.books, formulary, policy, self.packs, self.allocator)
        self.picking = Picking(self.books, self.orders, self.shipments, self.packs,
                               self.allocator)
        self.manual = ManualPicks(self.books, formulary, self.packs, self.shipments)
        # The pharmacist's desk (issue 10): other channels' dispensing records, registered
        # prescriptions (``institutions``: designated institution code -> name).
        self.records = RecordBook(self.books, formulary)
        # Who still has a supply of what (the duplicate check reads the journal only for
        # them): built once, it follows the dispenses and imports written.
        self.supplies = SupplyIndex(journal, formulary, self.books.today(), warm_indexes)
        self.records.supplies = self.orders.supplies = self.picking.supplies = self.supplies
        # The index keeps what an order may still cite: prescriptions within the age limit.
        self.prescriptions = PrescriptionBook(self.books, formulary, institutions or {},
                                              policy.prescription_max_age_days + 1,
                                              warm_indexes)
        self.orders.prescriptions = self.prescriptions
        # Patient and delivery of a shipment's first order, by order id: a shipment's view
        # is built a dozen times on its way through the machine (queued, started, planned,
        # labelled, printed, completed) and each time read and parsed its first order's
        # body from the journal. Bodies never change once stored; the few shipments moving
        # at any time fit in a small table (``_FIRST_BODIES`` entries, oldest dropped).
        self._first_bodies: dict[str, dict[str, Any]] = {}
        with bulk():
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

    def _load(self) -> None:
        self.orders.load()
        self.shipments.load()
        self.packs.load()
        self.tasks.load()
        self.allocator.load(self.packs.stock)
        self.prescriptions.load()

    def _reload(self) -> None:
        # An order stored by the call rolled back is gone: so is what was kept of it.
        self._first_bodies.clear()
        with bulk():
            self._load()

    def warm_indexes(self) -> bool:
        """One step of building the checks' indexes from the journal (a few thousand rows);
        ``True`` once both are built. Built with ``warm_indexes=False``, the Dispensary
        answers every check from the journal until then: a service calls this between
        other work instead of reading a large journal before it starts."""
        if not self.supplies.warm_step():
            return False  # (one slice per call: the supplies, then the prescriptions)
        return self.prescriptions.index.warm_step()

    @property
    def stock(self) -> StockIndex:
        """The slot index (what each slot holds, reserved and free)."""
        return self.packs.stock

    @contextmanager
    def _call(self) -> Iterator[None]:
        """One public call: one transaction (a savepoint inside ``batch()``). A change of
        state the lifecycle tables refuse is a defect: it is recorded in the audit trail
        (after the rollback of the call) and raised."""
        try:
            with self.books.tx():
                yield
        except IllegalTransition as exc:
            with self.books.tx():
                self.books.audit(SYSTEM, "lifecycle.refused", f"{exc.what}:{exc.subject}",
                                 None, {"from_state": exc.state.value,
                                        "refused_trigger": exc.trigger})
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group several calls into one transaction (one commit, one fsync). A call that
        raises inside the batch undoes only itself; leaving the block by an exception
        undoes the whole batch."""
        with self.books.tx():
            yield

    # ================================================================== orders
    def submit(self, raw: Mapping[str, object], actor: Actor) -> OrderView:
        """Validate, check and store one order. Same order_id with the same content returns
        its current state; with other content raises ``Conflict``."""
        with self._call():
            return self.orders.submit(raw, actor)

    def submit_many(self, raws: Iterable[Mapping[str, object]],
                    actor: Actor) -> list[OrderView | DispenserError]:
        """Submit many orders in one transaction; each result is a view or the error that
        refused that order (the others are unaffected)."""
        results: list[OrderView | DispenserError] = []
        with bulk(), self.books.tx():
            for raw in raws:
                try:
                    with self._call():
                        results.append(self.orders.submit(raw, actor))
                except DispenserError as exc:
                    results.append(exc)
        return results

    def cancel(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """Cancel an order whose picking has not started; it leaves its shipment."""
        with self._call():
            return self.orders.cancel(order_id, actor, reason)

    def reject(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """A pharmacist refuses a held order."""
        with self._call():
            return self.orders.reject(order_id, actor, reason)

    def release(self, order_id: str, actor: Actor, reason: str) -> OrderView:
        """A pharmacist overrides the check holds of an order; it joins a shipment."""
        with self._call():
            return self.orders.release(order_id, actor, reason)

    def get_order(self, order_id: str) -> OrderView:
        return self.orders.view(order_id)

    def order_body(self, order_id: str) -> dict[str, Any]:
        """The order as submitted (patient, prescription, delivery): patient data, never
        for logs."""
        return self.orders.body(order_id)

    def list_orders(self, state: OrderState | None = None, limit: int = 100,
                    after: str | None = None) -> list[OrderView]:
        """Orders in arrival order; ``after`` is the last order_id of the previous page."""
        sql, params = page_query(
            "orders", "order_id",
            "order_id, state, patient_id, priority, received_at, items, holds, shipment_id",
            state, after, limit)
        return [view_of_row(r) for r in self.journal.query(sql, params)]

    # ================================================================== the pharmacist's desk
    def import_records(self, raws: Sequence[object], actor: Actor) -> list[RecordOutcome]:
        """Import dispensing records of other channels in one transaction; one outcome per
        record (imported, unchanged, conflict, refused with field paths)."""
        with bulk(), self._call():
            return self.records.import_records(raws, actor)

    def register_prescriptions(self, raws: Iterable[object],
                               actor: Actor) -> list[dict[str, Any] | DispenserError]:
        """Register prescriptions in one transaction; each result is ``{"id", "status"}``
        (registered or unchanged) or the error that refused it (the others unaffected)."""
        results: list[dict[str, Any] | DispenserError] = []
        with bulk(), self.books.tx():
            for raw in raws:
                try:
                    with self._call():
                        results.append(self.prescriptions.register(raw, actor))
                except DispenserError as exc:
                    results.append(exc)
        return results

    def patient_record(self, patient_id: str, actor: Actor) -> dict[str, Any]:
        """The patient's record (patient data: never log it); the read is audited with who
        read it, in the same transaction."""
        with self._call():
            record = patient_record(self.orders, self.prescriptions, patient_id,
                                    self.books.today())
            self.books.audit(actor, "patient.read", patient_id, None, {
                "history": len(record["history"]), "open_orders": len(record["open_orders"]),
                "prescriptions": len(record["prescriptions"])})
            return record

    def renewals(self, within_days: int, limit: int = 100,
                 after: str | None = None) -> list[dict[str, Any]]:
        """Patients whose latest prescription reaches the age limit
        (``prescription_max_age_days``) within ``within_days``, soonest first."""
        return self.prescriptions.renewals(self.books.today(), within_days,
                                           self.policy.prescription_max_age_days, limit, after)

    # ================================================================== shipments
    def form_shipments(self, limit: int | None = None) -> list[ShipmentView]:
        """Close merge windows that are over (urgent shipments at once), reserve stock
        FEFO, hold shipments that are short. Returns the shipments formed now: with
        ``limit``, at most that many, the first in schedule order (the rest next call)."""
        due = self.shipments.close_merge_windows(limit)
        bodies = self.orders.bodies([sh.order_ids[0] for sh in due if sh.order_ids])
        return [self._shipment_view(sh, bodies) for sh in due]

    def close_merge_windows(self) -> list[str]:
        """Like ``form_shipments`` but returns only the shipment ids (no views built)."""
        return [sh.shipment_id for sh in self.shipments.close_merge_windows()]

    def next_shipments(self, limit: int = 10) -> list[ShipmentView]:
        """Queued shipments in schedule order: delivery window start, priority, arrival."""
        return [self._shipment_view(sh) for sh in self.shipments.next_due(limit)]

    def iter_next_shipments(self, limit: int = 10) -> Iterator[ShipmentView]:
        """The shipments of ``next_shipments``, chosen when called, each view built only
        when the caller takes it (as the shipment stands then): the scheduler stops at the
        first one that fills its last free output and builds no view for the others."""
        for sh in self.shipments.next_due(limit):
            yield self._shipment_view(sh)

    def start_picking(self, shipment_id: str, actor: Actor = SYSTEM) -> ShipmentView:
        """From now on the shipment's orders can no longer be cancelled. Its reservations
        are checked again first (shelf life today, blocked slots) and moved where needed;
        without stock to move them to, the shipment is held ``stock_short`` instead: the
        view returned is then ``held``, not ``picking``."""
        with self._call():
            self.picking.start_picking(shipment_id, actor)
            return self.get_shipment(shipment_id)

    def record_pick(self, shipment_id: str, slot: int, picked: int,
                    actor: Actor = SYSTEM) -> list[PackView]:
        """The robot took ``picked`` packs from ``slot`` for this shipment (see
        ``Picking.record_pick``). Returns the packs now in the tote."""
        with self._call():
            return self.picking.record_pick(shipment_id, slot, picked, actor)

    def start_labelling(self, shipment_id: str, actor: Actor = SYSTEM) -> ShipmentView:
        with self._call():
            self.picking.start_labelling(shipment_id, actor)
            return self.get_shipment(shipment_id)

    def complete_shipment(self, shipment_id: str, actor: Actor = SYSTEM) -> ShipmentView:
        """Labelled and packed: packs become dispensed, dispensing history is written."""
        with self._call():
            self.picking.complete(shipment_id, actor)
            return self.get_shipment(shipment_id)

    def fail_shipment(self, shipment_id: str, actor: Actor, reason: str) -> ShipmentView:
        """Give up a shipment: reservations are freed, packs already in its tote are
        quarantined for a person to check, its orders become failed."""
        with self._call():
            self.picking.fail(shipment_id, actor, reason)
            return self.get_shipment(shipment_id)

    def get_shipment(self, shipment_id: str) -> ShipmentView:
        return self._shipment_view(self.shipments.get(shipment_id))

    def list_shipments(self, state: ShipmentState | None = None, limit: int = 100,
                       after: str | None = None) -> list[ShipmentView]:
        return [self._shipment_view(sh) for sh in self.shipments.page(state, limit, after)]

    def _shipment_view(self, sh: Shipment, bodies: Mapping[str, str] | None = None
                       ) -> ShipmentView:
        first = self._first_body(sh.order_ids[0], bodies) if sh.order_ids else None
        # Forming or held (nothing reserved yet): bill the orders' items as asked for.
        lines = sh.lines or self.shipments.lines_as_ordered(sh)
        return shipment_view(sh, lines=lines, first_body=first, formulary=self.formulary,
                             travel=self.packs.stock.travel, pack=self.packs.view,
                             priority=RANK_NAME[sh.priority_rank])

    def _first_body(self, order_id: str, bodies: Mapping[str, str] | None
                    ) -> dict[str, Any]:
        """What a shipment's view takes from its first order's body (patient, delivery),
        kept for the next view of the same shipment (see ``_first_bodies``)."""
        kept = self._first_bodies.get(order_id)
        if kept is None:
            body = self.orders.body(order_id, bodies)
            kept = {k: body[k] for k in ("patient", "delivery") if k in body}
            if len(self._first_bodies) >= _FIRST_BODIES:
                del self._first_bodies[next(iter(self._first_bodies))]
            self._first_bodies[order_id] = kept
        return kept

    # ================================================================== stock
    def check_scan(self, scan: str) -> PackScan:
        """Would this pack be accepted for loading? Raises ``LoadRefused`` with the
        reason."""
        return self.loading.check_scan(scan)

    def begin_load(self, scan: str, actor: Actor) -> PackView:
        """Accept a scanned pack for loading and give it a slot (state ``loading``)."""
        with self._call():
            return self.loading.begin_load(scan, actor)

    def confirm_stored(self, pack_id: int, actor: Actor = SYSTEM) -> PackView:
        """The robot confirmed the pack is in its slot; held shipments may now go."""
        with self._call():
            return self.loading.confirm_stored(pack_id, actor)

    def refuse_stored(self, pack_id: int, reason: str, actor: Actor = SYSTEM) -> PackView:
        """The robot could not store the pack; its slot place is given back."""
        with self._call():
            return self.loading.refuse_stored(pack_id, reason, actor)

    def quarantine_batch(self, drug_code: str, batch: str, actor: Actor, reason: str) -> int:
        """Recall a batch at once (see ``PackBook.quarantine_batch``); returns how many
        packs were quarantined."""
        with self._call():
            return self.packs.quarantine_batch(drug_code, batch, actor, reason)

    def record_pack_lost(self, pack_id: int, state: PackState,
                         actor: Actor = SYSTEM) -> PackView:
        """A pack was dropped or not found; its place in a shipment is filled from other
        stock."""
        with self._call():
            self.packs.record_lost(pack_id, state, actor)
            return self.packs.view(pack_id)

    def record_slot_count(self, slot: int, counted: int,
                          actor: Actor) -> DiscrepancyView | None:
        """A person or the robot counted a slot; a mismatch is recorded and the slot
        blocked until resolved."""
        with self._call():
            did = self.packs.record_slot_count(slot, counted, actor)
            if did is None:
                return None
            return next(d for d in self.packs.discrepancies() if d.id == did)

    def slot_count(self, slot: int) -> int:
        """The packs the journal holds in a slot: what a count of it should find."""
        s = self.packs.stock.slots.get(slot)
        return len(s.packs) if s else 0

    def list_discrepancies(self, limit: int = 1000) -> list[DiscrepancyView]:
        return self.packs.discrepancies(limit)

    def list_stock(self, drug_code: str | None = None,
                   state: PackState | None = PackState.IN_STOCK, limit: int = 1000,
                   after: int | None = None, near_expiry: bool | None = None) -> list[PackView]:
        """Packs by pack id (``after`` = last pack id of the previous page). ``near_expiry``
        lists packs in stock only: True those near expiry or expired
        (``dispenser.core.expiry``), False the others."""
        return self.packs.page(drug_code, state, limit, after, near_expiry)

    def stock_counts(self) -> StockCounts:
        """Packs in stock, near expiry, expired and quarantined, from memory (no scan of
        the packs table; the near-expiry slots are found by bisection)."""
        return self.packs.stock_counts()

    def packs_to_sweep(self) -> list[PackView]:
        """What the expiry sweep takes out: in-stock packs near expiry or expired that are
        not reserved, with their slots, in slot order (see ``PackBook.to_sweep``)."""
        return self.packs.to_sweep()

    def sweep_stock(self, output: int, tote_capacity: int, actor: Actor) -> SweepView:
        """The expiry sweep: reserve every pack ``packs_to_sweep`` offers (whose slot no
        one else holds a reservation on) and make one destruction task per tote of at most
        ``tote_capacity`` packs at ``output`` (see ``dispenser.core.sweep``). Nothing to
        take: no task, ``sweep_id`` None. Raises ``SweepRunning`` while a sweep is under
        way."""
        with self._call():
            return self.sweeps.sweep(output, tote_capacity, actor)

    def sweep_under_way(self) -> tuple[str, list[str]] | None:
        """(sweep id, its unfinished task ids) while a sweep is under way."""
        return self.sweeps.running()

    def stock_level(self, drug_code: str) -> int:
        """Packs of a drug that could be reserved now."""
        return self.allocator.stock_level(drug_code)

    def confirm_manual(self, shipment_id: str, scan: str, actor: Actor) -> PackView:
        """Staff confirm a fridge/manual pack for a shipment by scanning it."""
        with self._call():
            return self.manual.confirm(shipment_id, scan, actor)

    def get_pack(self, pack_id: int) -> PackView:
        return self.packs.view(pack_id)

    # ================================================================== output tasks
    def create_task(self, request: TaskRequest, actor: Actor) -> TaskView:
        """Create an output task and reserve its stock FEFO (see ``TaskBook.create``)."""
        with self._call():
            return self.tasks.view(self.tasks.create(request, actor))

    def get_task(self, task_id: str) -> TaskView:
        return self.tasks.view(self.tasks.get(task_id))

    def find_task(self, purpose: str, key: str) -> TaskView | None:
        """The latest task of this purpose with this requester's key, if any."""
        t = self.tasks.find(purpose, key)
        return None if t is None else self.tasks.view(t)

    def list_tasks(self, state: TaskState | None = None, purpose: str | None = None,
                   limit: int = 100, after: str | None = None) -> list[TaskView]:
        """Tasks in arrival order; ``after`` is the last task_id of the previous page."""
        return [self.tasks.view(t) for t in self.tasks.page(state, purpose, limit, after)]

    def next_tasks(self, limit: int = 10, outputs: Collection[int] | None = None
                   ) -> list[TaskView]:
        """Queued tasks in schedule order: priority, then arrival; with ``outputs`` only
        the first waiting for each of those outputs."""
        return [self.tasks.view(t) for t in self.tasks.next_due(limit, outputs)]

    def live_tasks(self) -> list[TaskView]:
        """Tasks not finished, in arrival order."""
        return [self.tasks.view(t) for t in sorted(self.tasks.live.values(),
                                                    key=lambda t: t.seq)]

    def start_task(self, task_id: str, actor: Actor = SYSTEM) -> TaskView:
        """The task has its output: picking starts."""
        with self._call():
            return self.tasks.view(self.tasks.start(task_id, actor))

    def record_task_pick(self, task_id: str, slot: int, picked: int,
                         actor: Actor = SYSTEM) -> list[PackView]:
        """The robot took ``picked`` packs from ``slot`` for this task (see
        ``TaskBook.record_pick``). Returns the packs now in its tote."""
        with self._call():
            return [self.packs.view(p) for p in
                    self.tasks.record_pick(task_id, slot, picked, actor)]

    def finish_task(self, task_id: str, actor: Actor = SYSTEM) -> TaskView:
        """Its tote was handed on (or it had nothing to hand on): packs dispensed, the task
        completed, incomplete or aborted."""
        with self._call():
            return self.tasks.view(self.tasks.finish(task_id, actor))

    def cancel_task(self, task_id: str, actor: Actor, reason: str) -> TaskView:
        """The requester cancels: a queued task is aborted at once, one being picked
        becomes aborting (``finish_task`` once no pick is under way)."""
        with self._call():
            return self.tasks.view(self.tasks.stop(task_id, "cancel", actor, reason))

    def fail_task(self, task_id: str, actor: Actor, reason: str) -> TaskView:
        """The machine gives a task up (like ``cancel_task``, triggered ``fail``)."""
        with self._call():
            return self.tasks.view(self.tasks.stop(task_id, "fail", actor, reason))

    def mark_tasks_reported(self, task_ids: Iterable[str]) -> None:
        """The requester has been told these tasks' outcomes."""
        with self._call():
            self.tasks.mark_reported(list(task_ids))

    def unreported_tasks(self, purpose: str, key_prefix: str) -> list[TaskView]:
        """Finished tasks whose requester was not told the outcome, oldest first."""
        return [self.tasks.view(t) for t in self.tasks.unreported(purpose, key_prefix)]

    # ================================================================== audit
    def audit_verify(self) -> VerifyResult:
        return self.journal.verify()
