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

from dispenser.core.formulary import Formulary
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


# Frozen: the result of a check that passed is one shared object per (check, action)
# (``_passed``), built once; only a failed check builds its own.
@dataclass(frozen=True, slots=True)
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


class PatientHistory:
    """What the duplicate checks need to know about one patient: ``supplies`` (ingredient
    -> the supply of it, dispensed, imported or on order, that lasts longest) and
    ``prescription_drugs`` (drug codes this prescription was already filled, or is on
    order, for; given as a set, or as a function that finds it when first asked)."""

    __slots__ = ("_filled", "_find", "supplies")

    def __init__(self, supplies: dict[str, Supply],
                 prescription_drugs: set[str] | Callable[[], set[str]]) -> None:
        self.supplies = supplies
        self._filled = prescription_drugs if isinstance(prescription_drugs, set) else None
        self._find = None if isinstance(prescription_drugs, set) else prescription_drugs

    @property
    def prescription_drugs(self) -> set[str]:
        if self._filled is None:
            assert self._find is not None
            self._filled = self._find()
        return self._filled


# The patient's dispensed and open supply, excluding the order itself.
History = Callable[[Order], PatientHistory]
# Prescription provenance: (action, rule); the rule gives an order's holds and whether its
# prescription is registered (then fills are counted against it, and filling it again is
# no duplicate prescription).
Provenance = tuple[str, Callable[[Order], tuple[list[Hold], bool]]]


def ingredients_of(drug_code: str, drugs: Mapping[str, Drug] | None) -> tuple[str, ...]:
    """The ingredients of a drug; the drug code itself stands for a drug the formulary
    gives none for (so that the same product is still a duplicate of itself)."""
    if isinstance(drugs, Formulary):
        return drugs.ingredients.get(drug_code) or (drug_code,)
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


_PASSED: tuple[Hold, ...] = ()
_PASSED_RESULTS: dict[tuple[str, str], CheckResult] = {}


def _result(check: str, action: str, holds: tuple[Hold, ...]) -> CheckResult:
    if holds:
        return CheckResult(check, False, action, holds)
    passed = _PASSED_RESULTS.get((check, action))
    if passed is None:
        passed = _PASSED_RESULTS[(check, action)] = CheckResult(check, True, action)
    return passed


def run_checks(order: Order, policy: Policy, today: date, history: History, *,
               drugs: Mapping[str, Drug] | None = None,
               provenance: Provenance | None = None,
               now: datetime) -> list[CheckResult]:
    """Run every check the policy has on, for an order received at ``now`` (whose date
    is ``today``). ``drugs`` (the formulary) gives each drug's
    ingredients for the duplicate check (without it a drug is its own ingredient);
    ``provenance`` is the prescription provenance check's action and rule, when on."""
    # Written for the common order, which passes: each check appends its result once, and
    # a hold's message is built only when there is a hold (20,000 orders a day pass here).
    results: list[CheckResult] = []
    rx = order.prescription
    action = policy.eligibility
    if action != "off":
        wanted = policy.programme_diagnoses
        holds: tuple[Hold, ...] = _PASSED
        for d in rx.diagnoses:
            if d.startswith(wanted):
                break
        else:
            holds = (Hold(NOT_ELIGIBLE, "no programme diagnosis (" + ", ".join(wanted)
                          + ") on the prescription"),)
        results.append(_result(NOT_ELIGIBLE, action, holds))
    action = policy.prescription_age
    if action != "off":
        age = (today - rx.issued_on).days
        holds = _PASSED
        if age > policy.prescription_max_age_days:
            holds = (Hold(PRESCRIPTION_EXPIRED, f"prescription issued {age} days ago; "
                          f"limit {policy.prescription_max_age_days} days"),)
        elif age < 0:
            holds = (Hold(PRESCRIPTION_EXPIRED, "prescription issued in the future"),)
        results.append(_result(PRESCRIPTION_EXPIRED, action, holds))
    action = policy.quantity_limit
    if action != "off":
        found: list[Hold] = []
        for item in order.items:
            if item.quantity > policy.max_quantity:
                found.append(Hold(QUANTITY_LIMIT, f"quantity {item.quantity} packs over the "
                                  f"limit of {policy.max_quantity}", item.drug_code))
            if not policy.min_days_supply <= item.days_supply <= policy.max_days_supply:
                found.append(Hold(QUANTITY_LIMIT, f"days_supply {item.days_supply} outside "
                                  f"{policy.min_days_supply}-{policy.max_days_supply}",
                                  item.drug_code))
        results.append(_result(QUANTITY_LIMIT, action, tuple(found)))
    action = policy.delivery_window
    if action != "off":
        # A window that is over when the order arrives cannot be met: queued silently, the
        # order would be picked and sent late. A window that ends exactly now is over too.
        window_end = order.delivery.window_end
        holds = _PASSED if window_end > now else (Hold(
            DELIVERY_WINDOW_PASSED, f"the delivery window ended {window_end.isoformat()}, "
            "before the order arrived; arrange another delivery and release, or reject"),)
        results.append(_result(DELIVERY_WINDOW_PASSED, action, holds))
    duplicates = policy.duplicate_dispensing
    if duplicates != "off" or policy.duplicate_prescription != "off":
        past = history(order)
    if duplicates != "off":
        found = []
        supplies = past.supplies
        if supplies:
            grace = timedelta(days=policy.refill_grace_days)
            for item in order.items:
                for ingredient in ingredients_of(item.drug_code, drugs):
                    supply = supplies.get(ingredient)
                    if supply is not None and today < supply.end - grace:
                        found.append(Hold(DUPLICATE_DISPENSING,
                                          _overlap_detail(item.drug_code, supply, drugs),
                                          item.drug_code, supply.cause()))
        results.append(_result(DUPLICATE_DISPENSING, duplicates, tuple(found)))
    provenance_holds: list[Hold] | None = None
    registered = False
    if provenance is not None and provenance[0] != "off":
        provenance_holds, registered = provenance[1](order)
    action = policy.duplicate_prescription
    if action != "off" and not registered:
        filled = past.prescription_drugs
        holds = tuple(Hold(DUPLICATE_PRESCRIPTION, f"prescription {rx.id} already filled "
                           "for this drug", item.drug_code)
                      for item in order.items if item.drug_code in filled) if filled else _PASSED
        results.append(_result(DUPLICATE_PRESCRIPTION, action, holds))
    if provenance is not None and provenance_holds is not None:
        results.append(_result(PRESCRIPTION_PROVENANCE, provenance[0],
                               tuple(provenance_holds)))
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
