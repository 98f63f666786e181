"""The patient's record as a pharmacist reads it (``patient.get``): the dispensing history
(this pharmacy's and other channels', newest first, with the source), the current supply
per ingredient with its run-out date, the registered prescriptions with what is left, and
the open orders with their holds.

The record is patient data: it is built for one reader, never logged, and every read is
written to the audit trail with who read it (the caller of ``Dispensary.patient_record``).
The record carries ids, drug names and dates; names and addresses stay in order bodies.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from dispenser.core.checks import THIS_PHARMACY, product_label
from dispenser.core.history import supplies_of

if TYPE_CHECKING:
    from dispenser.core.intake import OrderBook
    from dispenser.core.prescriptions import PrescriptionBook

__all__ = ["HISTORY_LIMIT", "patient_record"]

# Dispensing history rows shown (newest first); the count of all rows is given too.
HISTORY_LIMIT = 50

_HISTORY_SQL = (
    "SELECT dispensed_on, supply_end, drug_code, NULL, quantity, days_supply, order_id, "
    "NULL, NULL FROM history WHERE patient_id = ? "
    "UNION ALL "
    "SELECT dispensed_on, supply_end, drug_code, atc, quantity, days_supply, record_id, "
    "source, source_name FROM dispensing_records WHERE patient_id = ? "
    "ORDER BY 1 DESC, 7 DESC LIMIT ?")


def patient_record(orders: OrderBook, prescriptions: PrescriptionBook, patient_id: str,
                   today: date) -> dict[str, Any]:
    """The patient's record as a JSON-ready mapping (see docs/api.md, ``patient.get``)."""
    journal = orders.journal
    drugs = orders.formulary
    history = []
    for on, end, code, atc, qty, days, ref, source, source_name in journal.iterate(
            _HISTORY_SQL, (patient_id, patient_id, HISTORY_LIMIT)):
        ours = source is None
        history.append({
            "dispensed_on": on, "supply_until": end, "drug_code": code, "atc": atc,
            "description": product_label(code, drugs, atc), "quantity": qty,
            "days_supply": days, "source": THIS_PHARMACY if ours else source,
            "source_name": THIS_PHARMACY if ours else source_name,
            "order_id" if ours else "record_id": ref})
    total = journal.query_one(
        "SELECT (SELECT count(*) FROM history WHERE patient_id = ?) + "
        "(SELECT count(*) FROM dispensing_records WHERE patient_id = ?)",
        (patient_id, patient_id))[0]
    current = supplies_of(journal, orders, patient_id, today).supplies
    supplies = [{"ingredient": s.ingredient, "supply_until": s.end.isoformat(),
                 "days_left": (s.end - today).days, "kind": s.kind, "source": s.source,
                 "source_name": s.source_name, "ref": s.ref, "drug_code": s.drug_code,
                 "atc": s.atc,
                 "dispensed_on": s.dispensed_on.isoformat() if s.dispensed_on else None}
                for s in sorted(current.values(), key=lambda s: (s.end, s.ingredient))]
    rxs = []
    for rx in prescriptions.for_patient(patient_id):
        rxs.append({
            "prescription_id": rx.prescription_id, "institution": rx.institution,
            "institution_name": prescriptions.institutions.get(rx.institution),
            "designated": rx.institution in prescriptions.institutions,
            "prescriber": rx.prescriber, "issued_on": rx.issued_on.isoformat(),
            "diagnoses": list(rx.diagnoses),
            "items": [{"drug_code": i.drug_code, "atc": i.atc,
                       "ingredients": list(i.ingredients), "quantity": i.quantity,
                       "days_supply": i.days_supply, "filled": i.filled, "left": i.left}
                      for i in rx.items]})
    open_orders = [orders.live[oid].view() for oid in orders.by_patient.get(patient_id, ())]
    return {
        "patient_id": patient_id, "today": today.isoformat(),
        "history": history, "history_total": total, "supplies": supplies,
        "prescriptions": rxs,
        "open_orders": [{"order_id": v.order_id, "state": v.state.value,
                         "received_at": v.received_at.isoformat(),
                         "shipment_id": v.shipment_id,
                         "items": [{"drug_code": i.drug_code, "quantity": i.quantity,
                                    "days_supply": i.days_supply} for i in v.items],
                         "hold_reasons": [h.as_dict() for h in v.holds]}
                        for v in open_orders],
    }
