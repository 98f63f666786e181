"""Per-item settlement for the packing slip: price x quantity, covered, self-pay."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from dispenser.formulary import Drug

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


def bill_item(order_id: str, drug: Drug, quantity: int) -> BillingLine:
    amount = (drug.price * quantity).quantize(CENT, ROUND_HALF_UP)
    covered = (amount * drug.reimbursement_rate).quantize(CENT, ROUND_HALF_UP)
    return BillingLine(order_id, drug.drug_code, drug.label, quantity, drug.price, amount,
                       covered, amount - covered)


def totals(lines: list[BillingLine]) -> tuple[Decimal, Decimal, Decimal]:
    """(amount, covered, self_pay) over the lines."""
    amount = sum((ln.amount for ln in lines), Decimal("0.00"))
    covered = sum((ln.covered for ln in lines), Decimal("0.00"))
    return amount, covered, amount - covered
