"""Safety checks run on every accepted order.

Each check yields a ``CheckResult``; a failed check acts as the policy says: ``hold`` (a
pharmacist releases or rejects), ``reject`` (the order is refused and stored as rejected),
or ``off`` (not run). Reason codes are stable strings (see docs/orders.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from dispenser.core.orders import Order
from dispenser.core.policy import Policy

if TYPE_CHECKING:
    from dispenser.core.formulary import Drug

NOT_ELIGIBLE = "not_eligible"
PRESCRIPTION_EXPIRED = "prescription_expired"
DUPLICATE_DISPENSING = "duplicate_dispensing"
DUPLICATE_PRESCRIPTION = "duplicate_prescription"
QUANTITY_LIMIT = "quantity_limit"
DELIVERY_WINDOW_PASSED = "delivery_window_passed"
STOCK_SHORT = "stock_short"
# Prescription provenance (one check, four reasons).
PRESCRIPTION_PROVENANCE = "prescription_provenance"
PRESCRIPTION_UNREGISTERED = "prescription_unregistered"
PRESCRIPTION_MISMATCH = "prescription_mismatch"
INSTITUTION_NOT_DESIGNATED = "institution_not_designated"
PRESCRIPTION_EXHAUSTED = "prescription_exhausted"

CHECK_CODES = (NOT_ELIGIBLE, PRESCRIPTION_EXPIRED, DUPLICATE_DISPENSING,
               DUPLICATE_PRESCRIPTION, QUANTITY_LIMIT, PRESCRIPTION_UNREGISTERED,
               PRESCRIPTION_MISMATCH, INSTITUTION_NOT_DESIGNATED, PRESCRIPTION_EXHAUSTED,
               DELIVERY_WINDOW_PASSED)

# What a hold's ``cause`` holds: the supply or the prescription behind it, as pairs.
Cause = tuple[tuple[str, str | int | None], ...]


@dataclass(frozen=True, slots=True)
class Hold:
    """A machine-readable reason an order waits (or was refused). ``cause`` names the
    supply or prescription behind a duplicate or provenance hold (empty otherwise), so
    that a pharmacist's decision needs no second lookup."""

    code: str
    detail: str
    drug_code: str | None = None
    cause: Cause = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "detail": self.detail,
                                  "drug_code": self.drug_code}
        if self.cause:
            out["cause"] = dict(self.cause)
        return out


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


THIS_PHARMACY = "this pharmacy"


@dataclass(frozen=True, slots=True)
class Supply:
    """A supply of one ingredient a patient has: dispensed by this pharmacy (``kind``
    "dispensed"), by another channel (an imported record, "record") or on an open order
    ("order")."""

    ingredient: str
    end: date  # the day the supply runs out
    kind: str
    ref: str  # the order id, or the record id at its source
    source: str  # THIS_PHARMACY or the source institution's code
    source_name: str
    drug_code: str | None = None
    atc: str | None = None
    dispensed_on: date | None = None

    def cause(self) -> Cause:
        return (("kind", self.kind), ("ingredient", self.ingredient),
                ("source", self.source), ("source_name", self.source_name),
                ("ref", self.ref), ("drug_code", self.drug_code), ("atc", self.atc),
                ("dispensed_on", self.dispensed_on.isoformat() if self.dispensed_on else None),
                ("supply_until", self.end.isoformat()))


@dataclass
class PatientHistory:
    """What the duplicate checks need to know about one patient."""

    # ingredient -> the supply of it (dispensed, imported or on order) that lasts longest
    supplies: dict[str, Supply]
    # drug codes this prescription was already filled (or is on order) for
    prescription_drugs: set[str]


# The patient's dispensed and open supply, excluding the order itself.
History = Callable[[Order], PatientHistory]
# Prescription provenance: (action, rule); the rule gives an order's holds and whether its
# prescription is registered (then fills are counted against it, and filling it again is
# no duplicate prescription).
Provenance = tuple[str, Callable[[Order], tuple[list[Hold], bool]]]


def ingredients_of(drug_code: str, drugs: Mapping[str, Drug] | None) -> tuple[str, ...]:
    """The ingredients of a drug; the drug code itself stands for a drug the formulary
    gives none for (so that the same product is still a duplicate of itself)."""
    drug = drugs.get(drug_code) if drugs is not None else None
    return drug.ingredients if drug is not None and drug.ingredients else (drug_code,)


def product_label(drug_code: str | None, drugs: Mapping[str, Drug] | None,
                  atc: str | None = None) -> str:
    """"acarbose 50 mg (Servier)" for a drug of the formulary, else its code."""
    drug = drugs.get(drug_code) if drugs is not None and drug_code else None
    if drug is not None:
        maker = f" ({drug.manufacturer})" if drug.manufacturer else ""
        return f"{drug.name} {drug.strength}{maker}"
    return drug_code or (f"ATC {atc}" if atc else "unknown product")


def _overlap_detail(drug_code: str, supply: Supply, drugs: Mapping[str, Drug] | None) -> str:
    """'acarbose 50 mg (Servier) overlaps acarbose dispensed 2026-12-02 by this pharmacy
    (Beijing Double-Crane), supply until 2027-01-01'."""
    drug = drugs.get(supply.drug_code) if drugs is not None and supply.drug_code else None
    if drug is not None:
        product = drug.manufacturer or drug.drug_code
    else:
        product = supply.drug_code or f"ATC {supply.atc}"
    if supply.kind == "order":
        what = f"on order {supply.ref}"
    else:
        day = supply.dispensed_on.isoformat() if supply.dispensed_on else "?"
        what = f"dispensed {day} by {supply.source_name}"
    return (f"{product_label(drug_code, drugs)} overlaps {supply.ingredient} {what} "
            f"({product}), supply until {supply.end.isoformat()}")


def run_checks(order: Order, policy: Policy, today: date, history: History, *,
               drugs: Mapping[str, Drug] | None = None,
               provenance: Provenance | None = None,
               now: datetime) -> list[CheckResult]:
    """Run every check the policy has on, for an order received at ``now`` (whose date
    is ``today``). ``drugs`` (the formulary) gives each drug's
    ingredients for the duplicate check (without it a drug is its own ingredient);
    ``provenance`` is the prescription provenance check's action and rule, when on."""
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
            for ingredient in ingredients_of(item.drug_code, drugs):
                supply = past.supplies.get(ingredient)
                if supply is not None and today < supply.end - grace:
                    holds.append(Hold(DUPLICATE_DISPENSING,
                                      _overlap_detail(item.drug_code, supply, drugs),
                                      item.drug_code, supply.cause()))
        add(DUPLICATE_DISPENSING, policy.duplicate_dispensing, holds)
    provenance_holds: list[Hold] | None = None
    registered = False
    if provenance is not None and provenance[0] != "off":
        provenance_holds, registered = provenance[1](order)
    if policy.duplicate_prescription != "off" and not registered:
        holds = [Hold(DUPLICATE_PRESCRIPTION, f"prescription {rx.id} already filled for this "
                      "drug", item.drug_code)
                 for item in order.items if item.drug_code in past.prescription_drugs]
        add(DUPLICATE_PRESCRIPTION, policy.duplicate_prescription, holds)
    if provenance is not None and provenance_holds is not None:
        add(PRESCRIPTION_PROVENANCE, provenance[0], provenance_holds)
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
