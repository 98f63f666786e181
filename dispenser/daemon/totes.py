"""The tote planner: which shipment's tote stands at which output, and what it needs next.

A queued shipment gets a free output (``assign_outputs``): picking starts, its orders can
no longer be cancelled. Its picks are planned as PICK commands for the robot ledger; a
pick's completion is booked on the shipment (``on_pick``). When nothing is left to pick,
the shipment goes to labelling and the print desk prints its label and packing slip;
once printed, the tote is handed on (HAND_ON) and the shipment completes in the same
transaction as the hand-on (``on_hand_on``), so no crash can leave one without the other.

``totes`` rows record where each tote stands, whether its label is printed and whether it
was handed on; after a restart the open totes are taken up again (``restore``).

Output tasks are the planner's second kind of work (``dispenser.daemon.task_totes``): they
compete with shipments for free outputs (by priority, then by when each is due), their
picks are planned first, and their completions go to ``TaskTotes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dispenser.core import SYSTEM, Dispensary
from dispenser.core.errors import DispenserError
from dispenser.core.intake import RANK
from dispenser.core.states import PackState, ShipmentState
from dispenser.core.views import ShipmentView
from dispenser.daemon.ledger import After, Counters, Intent, RobotLedger
from dispenser.daemon.robot import Completion, Motion, Outcome, Refusal, Status
from dispenser.daemon.task_totes import TaskTotes
from dispenser.journal import Journal
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["Tote", "ToteLog", "TotePlanner", "ToteRecord"]

MAX_INVALID_PER_SHIPMENT = 3


@dataclass(frozen=True)
class ToteRecord:
    shipment_id: str
    output: int
    printed: bool
    handed_on: bool
    print_started: bool = False


class ToteLog:
    """The ``totes`` rows; writes run inside the caller's transaction."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def assign(self, shipment_id: str, output: int, now: str) -> None:
        self.journal.write("INSERT INTO totes (shipment_id, output, assigned_at) "
                           "VALUES (?,?,?)", (shipment_id, output, now))

    def move(self, shipment_id: str, output: int) -> None:
        self.journal.write("UPDATE totes SET output = ? WHERE shipment_id = ?",
                           (output, shipment_id))

    def mark_print_started(self, shipment_id: str, now: str) -> None:
        self.journal.write("UPDATE totes SET print_started_at = ? WHERE shipment_id = ? "
                           "AND print_started_at IS NULL", (now, shipment_id))

    def mark_printed(self, shipment_id: str, now: str) -> None:
        self.journal.write("UPDATE totes SET printed_at = ? WHERE shipment_id = ? "
                           "AND printed_at IS NULL", (now, shipment_id))

    def mark_handed_on(self, shipment_id: str, now: str) -> None:
        self.journal.write("UPDATE totes SET handed_on_at = ? WHERE shipment_id = ?",
                           (now, shipment_id))

    def open(self) -> list[ToteRecord]:
        """Totes assigned and not yet handed on, oldest first."""
        return [ToteRecord(r[0], r[1], r[2] is not None, False, r[3] is not None)
                for r in self.journal.query(
                    "SELECT shipment_id, output, printed_at, print_started_at FROM totes "
                    "WHERE handed_on_at IS NULL ORDER BY assigned_at, shipment_id")]

    def get(self, shipment_id: str) -> ToteRecord | None:
        r = self.journal.query_one("SELECT shipment_id, output, printed_at, handed_on_at "
                                   "FROM totes WHERE shipment_id = ?", (shipment_id,))
        return None if r is None else ToteRecord(r[0], r[1], r[2] is not None, r[3] is not None)


@dataclass
class Tote:
    shipment_id: str
    output: int  # 0: no tote (nothing for the robot to pick)
    printed: bool = False
    handed_on: bool = False
    labelling: bool = False
    invalid: int = 0
    full_hits: int = 0
    seen: int = -1  # generation at which its picks were last planned in full


class TotePlanner:
    def __init__(self, dispensary: Dispensary, ledger: RobotLedger, counters: Counters,
                 clock: Callable[[], str], event: Callable[..., None],
                 print_label: Callable[[str, bool], None], outputs: Callable[[], int],
                 low_stock_packs: int) -> None:
        self.d = dispensary
        self.ledger = ledger
        self.journal = ledger.journal
        self.log = ToteLog(self.journal)
        self.counters = counters
        self._now = clock
        self._event = event
        self._print_label = print_label
        self._outputs = outputs
        self.low_stock_packs = low_stock_packs
        self.totes: dict[str, Tote] = {}
        self.generation = 0
        self._low_stock: set[str] = set()
        self.tasks = TaskTotes(dispensary, ledger, counters, clock, event)
        ledger.effects[Motion.PICK] = self.on_pick
        ledger.effects[Motion.HAND_ON] = self.on_hand_on

    def bump(self) -> None:
        """Something that can change what the totes need happened: plan them again."""
        self.generation += 1

    def busy_outputs(self) -> set[int]:
        return {t.output for t in self.totes.values() if t.output and not t.handed_on} | set(
            self.tasks.outputs_in_use())

    def shipment_event(self, view: ShipmentView) -> None:
        if view.state is ShipmentState.HELD:  # codes and drug codes: no patient data
            log.info("shipment held", shipment_id=view.shipment_id,
                     holds=sorted({h.code for h in view.holds}),
                     drugs=sorted({h.drug_code for h in view.holds if h.drug_code}))
        self._event("shipment", shipment_id=view.shipment_id, state=view.state.value,
                    order_ids=view.order_ids)
        for oid in view.order_ids:
            self._event("order", order_id=oid, state=view.state.value
                        if view.state is not ShipmentState.FORMING else "received",
                        shipment_id=view.shipment_id)

    # ------------------------------------------------------------------ restart
    def restore(self) -> None:
        """Take up the totes of the journal (after a start; nothing in memory yet)."""
        self.tasks.restore()
        if self.totes:
            return
        # Shipments whose tote was handed on (and label printed) but which were not
        # completed yet, e.g. waiting for a fridge pack's scan when the daemon stopped.
        for view in self.d.list_shipments(ShipmentState.LABELLING, limit=100000):
            self.maybe_complete(view.shipment_id)
        for t in self.log.open():
            self.totes[t.shipment_id] = Tote(t.shipment_id, t.output, printed=t.printed)
            try:
                view = self.d.get_shipment(t.shipment_id)
            except DispenserError:
                continue
            if view.state is ShipmentState.LABELLING:
                self.totes[t.shipment_id].labelling = True
                if not t.printed:
                    # Printing began and was not recorded as done: it may have come out
                    # before the crash, so this one is marked COPY.
                    self._print_label(t.shipment_id, t.print_started)

    # ------------------------------------------------------------------ planning
    def assign_outputs(self, status: Status) -> None:
        """Give free outputs to the next queued shipments: picking starts."""
        busy = self.busy_outputs()
        free = [k for k in range(1, self._outputs() + 1)
                if k not in busy and k not in status.output_full]
        if not free:
            return
        capacity = status.tote_capacity or 40
        # The first output task waiting for each free output: one goes before a shipment
        # that comes after it (priority, then due time), and shipments leave the outputs
        # tasks wait for to the last.
        heads = self.tasks.waiting(free)
        # Views one at a time: the loop mostly stops at the first shipment (one output
        # freed), and the others' views would be built again next time.
        for view in self.d.iter_next_shipments(limit=len(free) + 4):
            if heads:
                self.tasks.start_before(heads, free, (RANK[view.priority],
                                                      view.window_start.timestamp()),
                                        capacity)
            needs_tote = bool(view.robot_picks)
            packs = sum(p.count for p in view.robot_picks)
            if packs > capacity:
                # One shipment is one tote; the robot would stop with OUTPUT_FULL half
                # way. Refuse it whole, before any pack moves, so nothing is half sent.
                failed = self.d.fail_shipment(
                    view.shipment_id, SYSTEM,
                    f"{packs} packs do not fit one tote ({capacity}); split the orders")
                log.error("shipment too large for one tote", shipment_id=view.shipment_id,
                          packs=packs, tote_capacity=capacity)
                self.shipment_event(failed)
                continue
            if needs_tote and not free:
                continue
            output = 0
            if needs_tote:
                output = next((k for k in free if k not in heads), free[0])
            with self.d.batch():
                # Its reservations are checked again first (a pack may have aged out
                # since they were made): held instead, it gets no tote.
                started = self.d.start_picking(view.shipment_id)
                if started.state is ShipmentState.PICKING:
                    self.log.assign(view.shipment_id, output, self._now())
            if started.state is not ShipmentState.PICKING:
                log.info("not started: its stock was checked again", shipment_id=view.shipment_id,
                         state=started.state.value)
                self.shipment_event(started)
                continue
            if needs_tote:
                free.remove(output)
            self.totes[view.shipment_id] = Tote(view.shipment_id, output)
            log.info("picking", shipment_id=view.shipment_id, output=output,
                     picks=sum(p.count for p in view.robot_picks),
                     manual=sum(m.quantity for m in view.manual_picks))
            self.shipment_event(started)
            if not free:
                break
        if heads and free:
            self.tasks.start_before(heads, free, None, capacity)

    def plan(self, status: Status, room: int) -> list[Intent]:
        """Intents the totes need now (at most ``room``): output tasks' first (someone
        waits at the output), then shipments' hand-ons (they free outputs), then the
        oldest tote's picks."""
        intents: list[Intent] = self.tasks.plan(status, room)
        for tote in sorted(self.totes.values(), key=lambda t: not t.labelling):
            if room - len(intents) <= 0:
                break
            intents += self._plan_tote(tote, status, room - len(intents))
        return intents

    def _plan_tote(self, tote: Tote, status: Status, room: int) -> list[Intent]:
        sid = tote.shipment_id
        out: list[Intent] = []
        mine = [i for i in self.ledger.outstanding.values() if i.shipment_id == sid]
        if tote.labelling:
            if tote.printed and not tote.handed_on and tote.output and not any(
                    i.motion is Motion.HAND_ON for i in mine) and room > 0:
                out.append(self.ledger.intent(Motion.HAND_ON, output=tote.output,
                                              shipment_id=sid))
            return out
        if tote.seen == self.generation:
            return out  # nothing happened since its picks were planned in full
        view = self.d.get_shipment(sid)
        if view.state is not ShipmentState.PICKING:
            if view.state in (ShipmentState.FAILED, ShipmentState.CANCELLED):
                # Whatever is in its tote goes to a person (the packs are quarantined):
                # hand the tote on before the output takes another shipment's packs.
                if tote.output and not tote.handed_on and not mine and room > 0:
                    out.append(self.ledger.intent(Motion.HAND_ON, output=tote.output,
                                                  shipment_id=sid))
                elif not tote.output or tote.handed_on:
                    self._forget(sid, hand_on=not tote.handed_on)
            return out
        if not view.robot_picks and not view.owed and not any(
                i.motion is Motion.PICK for i in mine):
            labelled = self.d.start_labelling(sid)
            tote.labelling = True
            self.shipment_event(labelled)
            self._print_label(sid, False)
            return out
        if tote.output in status.output_full:
            if not view.picked and not mine:
                self._move(tote, status)
            return out
        wanted: dict[int, int] = {}
        for p in view.robot_picks:
            wanted[p.slot] = wanted.get(p.slot, 0) + p.count
        for i in mine:
            if i.motion is Motion.PICK:
                wanted[i.slot] = wanted.get(i.slot, 0) - i.count
        for slot, count in wanted.items():
            if count <= 0 or len(out) >= room:
                continue
            out.append(self.ledger.intent(Motion.PICK, slot, tote.output, count,
                                          shipment_id=sid))
        if len(out) < room:
            tote.seen = self.generation
        return out

    def _move(self, tote: Tote, status: Status) -> None:
        busy = self.busy_outputs()
        for k in range(1, self._outputs() + 1):
            if k not in busy and k not in status.output_full:
                with self.journal.transaction():
                    self.log.move(tote.shipment_id, k)
                log.info("output full, shipment moves on", shipment_id=tote.shipment_id,
                         output_from=tote.output, output_to=k)
                tote.output = k
                return

    def _forget(self, shipment_id: str, hand_on: bool) -> None:
        tote = self.totes.pop(shipment_id, None)
        if tote is not None and hand_on:
            self.log.mark_handed_on(shipment_id, self._now())

    # ------------------------------------------------------------------ completions
    def on_pick(self, intent: Intent, c: Completion, after: After) -> None:
        if intent.task_id is not None:
            self.tasks.on_pick(intent, c, after)
            return
        sid = intent.shipment_id
        assert sid is not None
        tote = self.totes.get(sid)
        if c.outcome in (Outcome.OK, Outcome.SLOT_EMPTY, Outcome.JAM, Outcome.DROPPED,
                         Outcome.ESTOP):
            moved = min(c.detail, intent.count)
            if c.outcome is Outcome.ESTOP and moved == 0:
                return  # cut short before anything moved: planned again
            if c.outcome in (Outcome.JAM, Outcome.DROPPED) and moved < intent.count:
                # The pack after the delivered ones left the slot but is in neither the
                # tote nor the slot (stuck in the gripper, or fallen). Record it as picked,
                # then as lost from the tote: the shipment is owed one more pack and the
                # slot's other packs stay where the journal says they are.
                packs = self.d.record_pick(sid, intent.slot, moved + 1)
                lost = packs.pop()
                state = PackState.DROPPED if c.outcome is Outcome.DROPPED else PackState.MISSING
                self.d.record_pack_lost(lost.pack_id, state)
                self.counters.packs_lost += 1
                after.append(lambda: log.warning("pack lost in a fault", pack_id=lost.pack_id,
                                                 shipment_id=sid, state=state.value))
            else:
                packs = self.d.record_pick(sid, intent.slot, moved)
            self.counters.packs_picked += len(packs)
            drug = packs[0].drug_code if packs else None
            if c.outcome is not Outcome.OK:
                log.warning("pick short", shipment_id=sid, slot=intent.slot,
                            asked=intent.count, picked=moved, outcome=c.outcome.name)
                after.append(lambda: self._event("stock", kind="discrepancy", slot=intent.slot,
                                                 shipment_id=sid, expected=intent.count,
                                                 found=moved))
            after.append(lambda: log.info("picked", shipment_id=sid, slot=intent.slot,
                                          packs=len(packs), output=intent.output))
            if drug is not None:
                after.append(lambda: self.check_low_stock(drug))
        elif c.outcome is Outcome.OUTPUT_FULL:
            if tote is not None:
                tote.full_hits += 1
            log.warning("output full, pick planned again", shipment_id=sid,
                        output=intent.output)
        elif c.outcome is Outcome.INVALID:
            reason = c.refusal.value if c.refusal is not None else str(c.detail)
            log.error("robot refused a pick", shipment_id=sid, slot=intent.slot,
                      reason=reason)
            if c.refusal is Refusal.NOT_HOMED:
                return
            if tote is not None:
                tote.invalid += 1
                if tote.invalid >= MAX_INVALID_PER_SHIPMENT:
                    view = self.d.fail_shipment(sid, SYSTEM,
                                                f"robot refused its picks ({reason})")
                    after.append(lambda: self.shipment_event(view))
        # ABORTED: nothing moved; the reservation stays and is planned again.

    def on_hand_on(self, intent: Intent, c: Completion, after: After) -> None:
        if intent.task_id is not None:
            self.tasks.on_hand_on(intent, c, after)
            return
        sid = intent.shipment_id
        assert sid is not None
        if c.outcome is not Outcome.OK:
            return  # planned again
        self.log.mark_handed_on(sid, self._now())
        tote = self.totes.get(sid)
        if tote is not None:
            tote.handed_on = True
            if not tote.labelling:  # a failed shipment's tote, handed on for a person
                self.totes.pop(sid, None)
        log.info("tote handed on", shipment_id=sid, output=intent.output)
        # In the same transaction as the hand-on: no crash can leave the shipment
        # handed on but not completed.
        self.maybe_complete(sid)

    def check_low_stock(self, drug_code: str) -> None:
        level = self.d.stock_level(drug_code)
        if level <= self.low_stock_packs and drug_code not in self._low_stock:
            self._low_stock.add(drug_code)
            self._event("stock", kind="low_stock", drug_code=drug_code, in_stock=level)
        elif level > self.low_stock_packs:
            self._low_stock.discard(drug_code)

    # ------------------------------------------------------------------ labelling
    def maybe_complete(self, shipment_id: str) -> bool:
        """Complete a labelled shipment once printed, handed on and manual lines scanned.

        Reads the tote's state from the journal, so it also completes shipments whose
        tote was handed on before a restart."""
        record = self.log.get(shipment_id)
        if record is None or not record.printed or not record.handed_on:
            return False
        try:
            view = self.d.get_shipment(shipment_id)
        except DispenserError:
            return False
        if view.state is not ShipmentState.LABELLING:
            return False
        if any(len(m.confirmed) < m.quantity for m in view.manual_picks):
            return False
        view = self.d.complete_shipment(shipment_id)
        self.counters.shipments_completed += 1
        self.totes.pop(shipment_id, None)
        log.info("completed", shipment_id=shipment_id, orders=len(view.order_ids),
                 packs=len(view.picked) + sum(len(m.confirmed) for m in view.manual_picks))
        self.shipment_event(view)
        return True

    def on_print_starting(self, shipment_id: str) -> None:
        """The print desk is about to send the shipment's first document."""
        with self.journal.transaction():
            self.log.mark_print_started(shipment_id, self._now())

    def on_printed(self, shipment_id: str) -> None:
        """The print desk printed the shipment's label and slip."""
        self.bump()
        with self.journal.transaction():
            self.log.mark_printed(shipment_id, self._now())
            tote = self.totes.get(shipment_id)
            if tote is not None and tote.output == 0:
                self.log.mark_handed_on(shipment_id, self._now())
        # Memory follows the journal only once the commit went through.
        if tote is not None:
            tote.printed = True
            if tote.output == 0:
                tote.handed_on = True
        log.info("labelled", shipment_id=shipment_id)
        self.maybe_complete(shipment_id)

    def output_of(self, shipment_id: str) -> int | None:
        """The output a shipment's tote stands (or stood) at."""
        tote = self.totes.get(shipment_id)
        if tote is not None:
            return tote.output or None
        rec = self.log.get(shipment_id)
        return rec.output or None if rec is not None else None

    def outputs_in_use(self) -> dict[int, str]:
        return {t.output: t.shipment_id for t in self.totes.values()
                if t.output and not t.handed_on}
