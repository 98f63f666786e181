"""Per-item settlement for the packing slip: price x quantity, covered, self-pay."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from dispenser.core.formulary import Drug

CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class BillingLine:
    order_id: str
    drug_code: str
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal
    covered: Decimal
    self_pay: Decimal


@lru_cache(maxsize=8192)
def _amounts(drug: Drug, quantity: int) -> tuple[Decimal, Decimal, Decimal]:
    amount = (drug.price * quantity).quantize(CENT, ROUND_HALF_UP)
    covered = (amount * drug.reimbursement_rate).quantize(CENT, ROUND_HALF_UP)
    return amount, covered, amount - covered


def bill_item(order_id: str, drug: Drug, quantity: int) -> BillingLine:
    """Amount = price x quantity; covered = amount x reimbursement_rate (both rounded half
    up to the cent); self-pay = amount - covered."""
    amount, covered, self_pay = _amounts(drug, quantity)
    return BillingLine(order_id, drug.drug_code, drug.label, quantity, drug.price, amount,
                       covered, self_pay)


def totals(lines: list[BillingLine]) -> tuple[Decimal, Decimal, Decimal]:
    """(amount, covered, self_pay) over the lines."""
    amount = sum((ln.amount for ln in lines), Decimal("0.00"))
    covered = sum((ln.covered for ln in lines), Decimal("0.00"))
    return amount, covered, amount - covered
