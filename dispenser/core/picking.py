"""Picking: a queued shipment is picked into its tote, labelled and completed.

From ``start_picking`` on, its orders can no longer be cancelled; its reservations are
checked again first (a pack that aged out since they were made is never picked).
``record_pick`` books what the robot took from a slot: the first packs stored there (FIFO)
become ``picked`` for the lines reserved on that slot; fewer than reserved means the slot
cannot be trusted (it is blocked and the shortfall is reserved elsewhere). ``complete``
makes the packs ``dispensed`` and writes the patient's dispensing history; ``fail`` gives
a shipment up (packs already in its tote are quarantined for a person to check).
"""

from __future__ import annotations

from datetime import timedelta

from dispenser.core.allocation import Allocator
from dispenser.core.books import Books
from dispenser.core.checks import ingredients_of
from dispenser.core.errors import InvalidState
from dispenser.core.intake import OrderBook
from dispenser.core.packs import PackBook
from dispenser.core.shipments import ShipmentBook
from dispenser.core.states import ShipmentState
from dispenser.core.supply_index import SupplyIndex
from dispenser.core.views import Actor, PackView

__all__ = ["Picking"]


class Picking:
    def __init__(self, books: Books, orders: OrderBook, shipments: ShipmentBook,
                 packs: PackBook, allocator: Allocator) -> None:
        self.books = books
        self.journal = books.journal
        self.orders = orders
        self.shipments = shipments
        self.packs = packs
        self.allocator = allocator
        self.supplies: SupplyIndex | None = None  # wired by the Dispensary

    def start_picking(self, shipment_id: str, actor: Actor) -> bool:
        """Start picking a queued shipment, after its reservations were checked again
        (``Allocator.recheck``: a slot that aged out or was blocked since is replaced).
        Returns False when that check held the shipment (``stock_short``): nothing
        started."""
        sh = self.shipments.live_shipment(shipment_id, ShipmentState.QUEUED)
        if self.allocator.recheck(sh) and sh.state is not ShipmentState.QUEUED:
            return False
        self.shipments.fire(sh, "start_picking", actor)
        return True

    def record_pick(self, shipment_id: str, slot: int, picked: int,
                    actor: Actor) -> list[PackView]:
        """The robot took ``picked`` packs from ``slot`` for this shipment: the total for
        every line of the shipment reserved on that slot. Returns the packs now in the
        tote."""
        sh = self.shipments.live_shipment(shipment_id, ShipmentState.PICKING)
        entries = [(ln, r) for ln in sh.lines for r in ln.reserved if r[0] == slot]
        if not entries:
            raise InvalidState(f"shipment {shipment_id} has no pick reserved in slot {slot}")
        reserved = sum(r[1] for _, r in entries)
        if not 0 <= picked <= reserved:
            raise InvalidState(f"{picked} packs picked from slot {slot} but {reserved} "
                               "were reserved; report at most the reserved count")
        stock = self.packs.stock
        stock.unreserve(slot, reserved)
        taken = stock.take(slot, picked) if picked else []
        rest = list(taken)
        for ln, r in entries:
            got, rest = rest[: r[1]], rest[r[1]:]
            ln.reserved.remove(r)
            for pid in got:
                p = self.packs.live[pid]
                p.shipment_id, p.order_id = sh.shipment_id, ln.order_id
                self.packs.fire(p, "pick", actor)
            ln.packs.extend(got)
            ln.owed += r[1] - len(got)
        self.shipments.save(sh)
        self.books.audit(actor, "shipment.pick", sh.shipment_id, None,
                         {"slot": slot, "reserved": reserved, "picked": picked, "packs": taken})
        if picked < reserved:
            self.packs.discrepancy(slot, "short_pick", reserved, picked, sh.shipment_id, actor)
            self.packs.block_slot(slot, actor, f"robot picked {picked} of {reserved}")
            self.allocator.fill_owed(sh, "shipment.reallocated")
        return [self.packs.view(pid) for pid in taken]

    def start_labelling(self, shipment_id: str, actor: Actor) -> None:
        sh = self.shipments.live_shipment(shipment_id, ShipmentState.PICKING)
        open_lines = [ln.item for ln in sh.lines if ln.robot and not ln.done]
        if open_lines:
            raise InvalidState(f"shipment {shipment_id} still has robot picks open: "
                               + ", ".join(open_lines))
        self.shipments.fire(sh, "start_labelling", actor)

    def complete(self, shipment_id: str, actor: Actor) -> None:
        """Labelled and packed: packs become dispensed, dispensing history is written."""
        sh = self.shipments.live_shipment(shipment_id, ShipmentState.LABELLING)
        missing = [ln.item for ln in sh.lines if not ln.done]
        if missing:
            raise InvalidState(f"shipment {shipment_id} is not complete; still to pick or "
                               "confirm by scan: " + ", ".join(missing))
        today = self.books.today()
        rows = []
        for ln in sh.lines:
            o = self.orders.live[ln.order_id]
            for pid in ln.packs:
                self.packs.fire(self.packs.live[pid], "dispense", actor)
            if ln.packs:
                end = today + timedelta(days=ln.days_supply)
                rows.append((sh.patient_id, ln.drug_code, o.prescription_id, ln.order_id,
                             sh.shipment_id, len(ln.packs), ln.days_supply,
                             today.isoformat(), end.isoformat()))
                if self.supplies is not None:
                    self.supplies.add(sh.patient_id,
                                      ingredients_of(ln.drug_code, self.orders.formulary), end)
        self.journal.write_many(
            "INSERT INTO history (patient_id, drug_code, prescription_id, order_id, "
            "shipment_id, quantity, days_supply, dispensed_on, supply_end) VALUES "
            "(?,?,?,?,?,?,?,?,?)", rows)
        self.shipments.fire(sh, "complete", actor,
                            extra={"packs": {ln.item: ln.packs for ln in sh.lines}})

    def fail(self, shipment_id: str, actor: Actor, reason: str) -> None:
        """Give a shipment up: reservations are freed, packs already in its tote are
        quarantined for a person to check, its orders become failed."""
        sh = self.shipments.live_shipment(shipment_id)
        freed = set()
        for ln in sh.lines:
            self.allocator.release_line(ln)
            freed.add(ln.drug_code)
            for pid in ln.packs:
                self.packs.fire(self.packs.live[pid], "quarantine", actor,
                                reason="shipment failed")
        self.shipments.forming.pop((sh.patient_id, sh.address_key), None)
        self.shipments.fire(sh, "fail", actor, extra={"reason": reason})
        self.allocator.retry_waiting(freed)
