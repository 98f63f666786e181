"""A patient's dispensing history as the duplicate checks see it."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from dispenser.core.checks import PatientHistory
from dispenser.core.orders import Order
from dispenser.journal import Journal

if TYPE_CHECKING:
    from dispenser.core.intake import OrderBook

__all__ = ["patient_history"]


def patient_history(journal: Journal, orders: OrderBook, order: Order) -> PatientHistory:
    """Dispensed supply (journal) plus supply on order (live orders), in one query; the
    order itself is left out."""
    pid, rx = order.patient.id, order.prescription.id
    ends: dict[str, date] = {}
    rx_drugs: set[str] = set()
    for code, end, used in journal.iterate(
            "SELECT drug_code, max(supply_end), max(prescription_id = ?) FROM history "
            "WHERE patient_id=? GROUP BY drug_code", (rx, pid)):
        ends[code] = date.fromisoformat(end)
        if used:
            rx_drugs.add(code)
    for oid in orders.by_patient.get(pid, ()):
        if oid == order.order_id:
            continue
        o = orders.live[oid]
        for code, _, days in o.items:
            e = o.received_at.date() + timedelta(days=days)
            if code not in ends or e > ends[code]:
                ends[code] = e
            if o.prescription_id == rx:
                rx_drugs.add(code)
    return PatientHistory(ends, rx_drugs)
