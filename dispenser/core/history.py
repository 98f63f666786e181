"""A patient's dispensing history as the duplicate checks see it: this pharmacy's
dispenses, the dispensing records imported from other channels, and the supply on the
patient's other open orders, per ingredient."""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from dispenser.core.checks import THIS_PHARMACY, PatientHistory, Supply, ingredients_of
from dispenser.core.orders import Order
from dispenser.core.supply_index import SupplyIndex
from dispenser.journal import Journal

if TYPE_CHECKING:
    from dispenser.core.intake import OrderBook

__all__ = ["patient_history", "supplies_of"]

# One statement per order: the patient's own dispenses whose supply lasts beyond the
# threshold (or that filled this prescription), and the imported records whose supply
# lasts beyond it (index dispensing_records(patient_id, supply_end): records that ran out
# long ago are never read).
_SUPPLY_SQL = (
    "SELECT 0, drug_code, supply_end, dispensed_on, order_id, prescription_id = ?, NULL, "
    "NULL, NULL, NULL FROM history WHERE patient_id = ? AND (supply_end > ? OR "
    "prescription_id = ?) "
    "UNION ALL "
    "SELECT 1, drug_code, supply_end, dispensed_on, record_id, 0, atc, ingredients, source, "
    "source_name FROM dispensing_records WHERE patient_id = ? AND supply_end > ?")


def patient_history(journal: Journal, orders: OrderBook, order: Order,
                    index: SupplyIndex | None = None) -> PatientHistory:
    """Supply that lasts beyond today + the refill grace, per ingredient: dispensed here
    (journal), imported from other channels (journal) and on order (live orders), the
    order itself left out. With ``index``, the journal is read only when the patient may
    have such a supply of an ingredient the order holds (the supplies of other ingredients
    cannot make this order a duplicate) and the drugs already filled on the order's
    prescription only when asked."""
    today = orders.books.today()
    threshold = today + timedelta(days=orders.policy.refill_grace_days)
    pid, rx = order.patient.id, order.prescription.id
    if index is not None:
        index.forget_ended(today)
        by_code = orders.formulary.ingredients
        wanted = [i for item in order.items
                  for i in by_code.get(item.drug_code) or (item.drug_code,)]  # ingredients_of
        if not index.may_overlap(pid, wanted, threshold):
            supplies: dict[str, Supply] = {}
            rx_drugs: set[str] = set()
            if pid in orders.by_patient:
                _on_order(orders, pid, threshold, rx, order.order_id, supplies, rx_drugs)

            def filled() -> set[str]:
                return rx_drugs | {code for (code,) in journal.iterate(
                    "SELECT drug_code FROM history WHERE patient_id = ? AND "
                    "prescription_id = ?", (pid, rx))}

            return PatientHistory(supplies, filled)
    return supplies_of(journal, orders, pid, threshold, rx, order.order_id)


def _offer(supplies: dict[str, Supply], s: Supply) -> None:
    # The supply that lasts longest; between two that end the same day, the one with the
    # greater (source, ref): the hold names the same cause whatever order the records and
    # orders arrived in.
    known = supplies.get(s.ingredient)
    if known is None or (s.end, s.source, s.ref) > (known.end, known.source, known.ref):
        supplies[s.ingredient] = s


def _on_order(orders: OrderBook, pid: str, threshold_day: date, rx: str, skip_order: str,
              supplies: dict[str, Supply], rx_drugs: set[str]) -> None:
    """The supply on the patient's live orders (``skip_order`` left out), and the drugs
    those orders fill prescription ``rx`` for."""
    drugs = orders.formulary
    for oid in orders.by_patient.get(pid, ()):
        if oid == skip_order:
            continue
        o = orders.live[oid]
        day = o.received_at.date()
        for code, _, days in o.items:
            if o.prescription_id == rx:
                rx_drugs.add(code)
            e = day + timedelta(days=days)
            if e <= threshold_day:
                continue
            for ingredient in ingredients_of(code, drugs):
                _offer(supplies, Supply(ingredient, e, "order", oid, THIS_PHARMACY,
                                        THIS_PHARMACY, code, None, day))


def supplies_of(journal: Journal, orders: OrderBook, pid: str, threshold_day: date,
                rx: str = "", skip_order: str = "") -> PatientHistory:
    """The patient's supply per ingredient that lasts beyond ``threshold_day`` (the one
    that lasts longest for each), and the drugs prescription ``rx`` was filled for; the
    order ``skip_order`` left out."""
    drugs = orders.formulary
    threshold = threshold_day.isoformat()
    supplies: dict[str, Supply] = {}
    rx_drugs: set[str] = set()
    for (kind, code, end, on, ref, used, atc, ingredients, source,
         source_name) in journal.iterate(_SUPPLY_SQL, (rx, pid, threshold, rx, pid, threshold)):
        if used:
            rx_drugs.add(code)
        if end <= threshold:
            continue
        end_day, on_day = date.fromisoformat(end), date.fromisoformat(on)
        if kind == 0:
            for ingredient in ingredients_of(code, drugs):
                _offer(supplies, Supply(ingredient, end_day, "dispensed", ref, THIS_PHARMACY,
                                        THIS_PHARMACY, code, None, on_day))
        elif ingredients:
            for ingredient in ingredients.split(";"):
                _offer(supplies, Supply(ingredient, end_day, "record", ref, source,
                                        source_name, code, atc, on_day))
    _on_order(orders, pid, threshold_day, rx, skip_order, supplies, rx_drugs)
    return PatientHistory(supplies, rx_drugs)
