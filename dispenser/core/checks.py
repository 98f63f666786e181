"""Safety checks run on every accepted order.

Each check yields a ``CheckResult``; a failed check acts as the policy says: ``hold`` (a
pharmacist releases or rejects), ``reject`` (the order is refused and stored as rejected),
or ``off`` (not run). Reason codes are stable strings (see docs/orders.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from dispenser.core.orders import Order
from dispenser.core.policy import Policy

NOT_ELIGIBLE = "not_eligible"
PRESCRIPTION_EXPIRED = "prescription_expired"
DUPLICATE_DISPENSING = "duplicate_dispensing"
DUPLICATE_PRESCRIPTION = "duplicate_prescription"
QUANTITY_LIMIT = "quantity_limit"
DELIVERY_WINDOW_PASSED = "delivery_window_passed"
STOCK_SHORT = "stock_short"

CHECK_CODES = (NOT_ELIGIBLE, PRESCRIPTION_EXPIRED, DUPLICATE_DISPENSING,
               DUPLICATE_PRESCRIPTION, QUANTITY_LIMIT, DELIVERY_WINDOW_PASSED)


@dataclass(frozen=True, slots=True)
class Hold:
    """A machine-readable reason an order waits (or was refused)."""

    code: str
    detail: str
    drug_code: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "detail": self.detail, "drug_code": self.drug_code}


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building the five results of every order a sixth of the time the checks take.
@dataclass(slots=True)
class CheckResult:
    check: str
    passed: bool
    action: str  # hold | reject | off
    holds: tuple[Hold, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"check": self.check, "passed": self.passed, "action": self.action,
                "holds": [h.as_dict() for h in self.holds]}


@dataclass
class PatientHistory:
    """What the duplicate checks need to know about one patient."""

    # drug_code -> the day the supply already dispensed or on order runs out
    supply_end: dict[str, date]
    # drug codes this prescription was already filled (or is on order) for
    prescription_drugs: set[str]


# The patient's dispensed and open supply, excluding the order itself.
History = Callable[[Order], PatientHistory]


def run_checks(order: Order, policy: Policy, today: date, history: History, *,
               now: datetime) -> list[CheckResult]:
    """Every check the policy does not turn off, for an order received at ``now`` (whose
    date is ``today``)."""
    results: list[CheckResult] = []

    def add(check: str, action: str, holds: list[Hold]) -> None:
        results.append(CheckResult(check, not holds, action, tuple(holds)))

    rx = order.prescription
    if policy.eligibility != "off":
        ok = any(d.startswith(policy.programme_diagnoses) for d in rx.diagnoses)
        add(NOT_ELIGIBLE, policy.eligibility, [] if ok else [Hold(
            NOT_ELIGIBLE, "no programme diagnosis (" + ", ".join(policy.programme_diagnoses)
            + ") on the prescription")])
    if policy.prescription_age != "off":
        age = (today - rx.issued_on).days
        holds = []
        if age > policy.prescription_max_age_days:
            holds.append(Hold(PRESCRIPTION_EXPIRED, f"prescription issued {age} days ago; "
                              f"limit {policy.prescription_max_age_days} days"))
        elif age < 0:
            holds.append(Hold(PRESCRIPTION_EXPIRED, "prescription issued in the future"))
        add(PRESCRIPTION_EXPIRED, policy.prescription_age, holds)
    if policy.quantity_limit != "off":
        holds = []
        for item in order.items:
            if item.quantity > policy.max_quantity:
                holds.append(Hold(QUANTITY_LIMIT, f"quantity {item.quantity} packs over the "
                                  f"limit of {policy.max_quantity}", item.drug_code))
            if not policy.min_days_supply <= item.days_supply <= policy.max_days_supply:
                holds.append(Hold(QUANTITY_LIMIT, f"days_supply {item.days_supply} outside "
                                  f"{policy.min_days_supply}-{policy.max_days_supply}",
                                  item.drug_code))
        add(QUANTITY_LIMIT, policy.quantity_limit, holds)
    if policy.delivery_window != "off":
        # A window that is over when the order arrives cannot be met: queued silently, the
        # order would be picked and sent late. A window that ends exactly now is over too.
        window_end = order.delivery.window_end
        add(DELIVERY_WINDOW_PASSED, policy.delivery_window, [] if window_end > now else [Hold(
            DELIVERY_WINDOW_PASSED, f"the delivery window ended {window_end.isoformat()}, before "
            "the order arrived; arrange another delivery and release, or reject")])
    if policy.duplicate_dispensing != "off" or policy.duplicate_prescription != "off":
        past = history(order)
    if policy.duplicate_dispensing != "off":
        holds = []
        grace = timedelta(days=policy.refill_grace_days)
        for item in order.items:
            end = past.supply_end.get(item.drug_code)
            if end is not None and today < end - grace:
                holds.append(Hold(DUPLICATE_DISPENSING, "supply dispensed or on order lasts "
                                  f"until {end.isoformat()}", item.drug_code))
        add(DUPLICATE_DISPENSING, policy.duplicate_dispensing, holds)
    if policy.duplicate_prescription != "off":
        holds = [Hold(DUPLICATE_PRESCRIPTION, f"prescription {rx.id} already filled for this "
                      "drug", item.drug_code)
                 for item in order.items if item.drug_code in past.prescription_drugs]
        add(DUPLICATE_PRESCRIPTION, policy.duplicate_prescription, holds)
    return results


def outcome(results: list[CheckResult]) -> tuple[str, list[Hold]]:
    """('ok' | 'hold' | 'reject', holds). A reject wins over a hold."""
    failed = [r for r in results if not r.passed]
    holds = [h for r in failed for h in r.holds]
    if any(r.action == "reject" for r in failed):
        return "reject", holds
    if failed:
        return "hold", holds
    return "ok", []
