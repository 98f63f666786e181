"""Registered prescriptions and the prescription provenance check.

Institutions send prescriptions as they issued them (``prescriptions.register``: the
e-prescription feed or the programme's registry). An order's prescription is then checked
against the registered one (``PrescriptionBook.assess``): registered, for this patient,
as issued (institution, prescriber, issue date, diagnoses), from a designated institution,
each ordered item covered by a prescribed item of the same ingredients, and the quantity
within what the prescription has left. Orders draw fills from prescribed items when they
are accepted (held or received); a cancelled, rejected or failed order gives its fills
back. Fills never exceed what was prescribed (the journal's CHECK guards it too).

Registration is idempotent like orders: the same prescription again is harmless, the same
id with other content is a conflict. The prescriptions an order may still cite are also
kept in memory in a compact form (``PrescriptionIndex``), so that the check of an order that
passes reads nothing from the journal; every hold is worked out from the journal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydantic import Field, StrictInt, ValidationError

from dispenser.core.books import Books
from dispenser.core.checks import (
    INSTITUTION_NOT_DESIGNATED,
    PRESCRIPTION_EXHAUSTED,
    PRESCRIPTION_MISMATCH,
    PRESCRIPTION_UNREGISTERED,
    Hold,
    ingredients_of,
    product_label,
)
from dispenser.core.errors import Conflict, FieldError, InvalidOrder
from dispenser.core.formulary import Formulary, is_valid_gtin14
from dispenser.core.orders import DrugCode, Icd10, Ident, IsoDate, Order, Text
from dispenser.core.policy import Policy
from dispenser.core.prescription_index import PrescriptionIndex, normal_name
from dispenser.core.records import Atc, _Strict, field_errors
from dispenser.core.views import Actor

__all__ = ["Assessment", "InvalidPrescription", "PrescribedItem", "PrescriptionBook",
           "Registered", "normal_name"]


class InvalidPrescription(InvalidOrder):
    """A prescription refused for registration, every problem by field path."""

    code = "invalid_prescription"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(errors)
        listing = "; ".join(f"{e.path}: {e.message}" for e in self.errors)
        self.message = f"prescription refused, fix these fields and send it again: {listing}"
        self.args = (self.message,)


class _Item(_Strict):
    drug_code: DrugCode | None = None
    atc: Atc | None = None
    quantity: StrictInt = Field(ge=1, le=1000, description="packs, all fills together")
    days_supply: StrictInt = Field(ge=1, le=3650)


class _Prescription(_Strict):
    id: Ident
    institution: Ident
    prescriber: Text
    patient_id: Ident
    issued_on: IsoDate
    diagnoses: list[Icd10] = Field(min_length=1, max_length=20)
    items: list[_Item] = Field(min_length=1, max_length=50)


@dataclass(frozen=True, slots=True)
class PrescribedItem:
    item_no: int
    drug_code: str | None
    atc: str | None
    ingredients: tuple[str, ...]
    quantity: int
    days_supply: int
    filled: int

    @property
    def left(self) -> int:
        return self.quantity - self.filled


@dataclass(frozen=True, slots=True)
class Registered:
    seq: int
    prescription_id: str
    institution: str
    prescriber: str
    patient_id: str
    issued_on: date
    diagnoses: tuple[str, ...]
    items: tuple[PrescribedItem, ...]


@dataclass(slots=True)
class Assessment:
    """The provenance check's answer for an order: its holds, whether the prescription is
    registered, and the fills the order draws if it is accepted."""

    holds: list[Hold]
    registered: bool
    fills: list[tuple[int, int, int]]  # (prescription seq, item no, packs)


_FIND = (
    "SELECT p.seq, p.institution, p.prescriber, p.patient_id, p.issued_on, p.diagnoses, "
    "i.item_no, i.drug_code, i.atc, i.ingredients, i.quantity, i.days_supply, i.filled "
    "FROM prescriptions p JOIN prescription_items i ON i.prescription_seq = p.seq "
    "WHERE p.prescription_id = ? ORDER BY i.item_no")


class PrescriptionBook:
    """Prescriptions registered by the institutions, and the fills orders draw."""

    def __init__(self, books: Books, formulary: Formulary,
                 institutions: Mapping[str, str], keep_days: int = 91,
                 warm: bool = True) -> None:
        self.books = books
        self.journal = books.journal
        self.formulary = formulary
        self.institutions = dict(institutions)
        # Built once: it follows the journal by itself, rollbacks included.
        self.index = PrescriptionIndex(self.journal, formulary, self.institutions, keep_days,
                                       books.today(), warm)
        self.load()

    def load(self) -> None:
        self.any_registered = self.journal.query_one(
            "SELECT 1 FROM prescriptions LIMIT 1") is not None

    def action(self, policy: Policy) -> str:
        """What the provenance check does: the policy's setting; "auto" holds once any
        prescription is registered or any institution is configured, and is off before
        (so that a new install without a feed works as before)."""
        setting = policy.prescription_provenance
        if setting != "auto":
            return setting
        return "hold" if self.any_registered or self.institutions else "off"

    # ------------------------------------------------------------------ registration
    def _parse(self, raw: object) -> _Prescription:
        if not isinstance(raw, Mapping):
            raise InvalidPrescription([FieldError("(prescription)",
                                                  "a prescription must be a JSON object")])
        try:
            rx = _Prescription.model_validate(dict(raw))
        except ValidationError as exc:
            raise InvalidPrescription(field_errors(exc)) from None
        errors = []
        for n, item in enumerate(rx.items):
            drug = self.formulary.get(item.drug_code) if item.drug_code else None
            if item.drug_code is None and item.atc is None:
                errors.append(FieldError(f"items.{n}.drug_code",
                                         "give drug_code (GTIN-14) or atc"))
            elif item.drug_code is not None and not is_valid_gtin14(item.drug_code):
                errors.append(FieldError(f"items.{n}.drug_code",
                                         "not a valid GTIN-14 (check digit)"))
            elif item.drug_code is not None and drug is None and item.atc is None:
                errors.append(FieldError(f"items.{n}.drug_code", "not in the formulary; "
                                         "send the product's atc code with it (or instead)"))
            if drug is not None and item.atc is not None and drug.atc != item.atc:
                errors.append(FieldError(f"items.{n}.atc", f"does not match drug_code "
                                         f"{drug.drug_code} ({drug.name}, {drug.atc})"))
        if errors:
            raise InvalidPrescription(errors)
        return rx

    def register(self, raw: object, actor: Actor) -> dict[str, Any]:
        """Register one prescription; the same again answers it as it stands, the same id
        with other content raises ``Conflict``. Call inside a transaction."""
        rx = self._parse(raw)
        canon = json.dumps(rx.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canon.encode()).hexdigest()
        row = self.journal.query_one(
            "SELECT content_hash FROM prescriptions WHERE prescription_id = ?", (rx.id,))
        if row is not None:
            if row[0] != digest:
                raise Conflict(f"prescription {rx.id} was already registered with different "
                               "content; nothing changed (a new prescription needs a new id)")
            return {"id": rx.id, "status": "unchanged"}
        cur = self.journal.write(
            "INSERT INTO prescriptions (prescription_id, content_hash, institution, "
            "prescriber, patient_id, issued_on, diagnoses, registered_at) VALUES "
            "(?,?,?,?,?,?,?,?)",
            (rx.id, digest, rx.institution, rx.prescriber, rx.patient_id,
             rx.issued_on.isoformat(), ",".join(rx.diagnoses), self.books.stamp()))
        seq = cur.lastrowid
        assert seq is not None
        ingredients = [self.formulary.ingredients_of(i.drug_code, i.atc) for i in rx.items]
        self.journal.write_many(
            "INSERT INTO prescription_items (prescription_seq, item_no, drug_code, atc, "
            "ingredients, quantity, days_supply) VALUES (?,?,?,?,?,?,?)",
            [(seq, n, i.drug_code, i.atc, ";".join(ingredients[n]), i.quantity,
              i.days_supply) for n, i in enumerate(rx.items)])
        self.index.add(rx.id, seq, rx.institution, rx.prescriber, rx.patient_id, rx.issued_on,
                       rx.diagnoses, [(";".join(ingredients[n]), i.quantity)
                                      for n, i in enumerate(rx.items)])
        self.books.audit(actor, "prescription.registered", rx.id, None, {
            "patient_id": rx.patient_id, "institution": rx.institution,
            "issued_on": rx.issued_on.isoformat(), "items": len(rx.items)})
        self.any_registered = True
        return {"id": rx.id, "status": "registered"}

    # ------------------------------------------------------------------ lookups
    def find(self, prescription_id: str) -> Registered | None:
        """The registered prescription with its items and fills (one query)."""
        rows = self.journal.query(_FIND, (prescription_id,))
        if not rows:
            return None
        head = rows[0]
        return Registered(
            head[0], prescription_id, head[1], head[2], head[3],
            date.fromisoformat(head[4]), tuple(head[5].split(",")),
            tuple(PrescribedItem(r[6], r[7], r[8], tuple(r[9].split(";")) if r[9] else (),
                                 r[10], r[11], r[12]) for r in rows))

    def for_patient(self, patient_id: str, limit: int = 20) -> list[Registered]:
        """The patient's registered prescriptions, newest first."""
        ids = [r[0] for r in self.journal.query(
            "SELECT prescription_id FROM prescriptions WHERE patient_id = ? "
            "ORDER BY issued_on DESC, seq DESC LIMIT ?", (patient_id, limit))]
        return [rx for rx in (self.find(i) for i in ids) if rx is not None]

    def renewals(self, today: date, within_days: int, max_age_days: int, limit: int,
                 after: str | None) -> list[dict[str, Any]]:
        """Patients whose latest registered prescription reaches its age limit (issued on +
        ``max_age_days``) between today and ``within_days`` from now, soonest first.
        ``after`` is the ``cursor`` of the last entry of the previous page."""
        first = (today - timedelta(days=max_age_days)).isoformat()
        last = (today + timedelta(days=within_days - max_age_days)).isoformat()
        after_day, after_pid = ("", "")
        if after:
            after_day, _, after_pid = after.partition("/")
        out = []
        for pid, rx_id, issued, institution in self.journal.iterate(
                "SELECT p.patient_id, p.prescription_id, p.issued_on, p.institution "
                "FROM prescriptions p WHERE p.issued_on BETWEEN ? AND ? "
                "AND (p.issued_on, p.patient_id) > (?, ?) "
                "AND NOT EXISTS (SELECT 1 FROM prescriptions q WHERE q.patient_id = "
                "p.patient_id AND (q.issued_on > p.issued_on OR (q.issued_on = p.issued_on "
                "AND q.seq > p.seq))) ORDER BY p.issued_on, p.patient_id LIMIT ?",
                (first, last, after_day, after_pid, limit)):
            limit_day = date.fromisoformat(issued) + timedelta(days=max_age_days)
            out.append({"patient_id": pid, "prescription_id": rx_id, "issued_on": issued,
                        "institution": institution,
                        "institution_name": self.institutions.get(institution),
                        "limit_on": limit_day.isoformat(),
                        "days_left": (limit_day - today).days,
                        "cursor": f"{issued}/{pid}"})
        return out

    # ------------------------------------------------------------------ the check
    def assess(self, order: Order) -> Assessment:
        """The provenance check's holds for an order (one query) and the fills it would
        draw."""
        self.index.forget_older(self.books.today())
        passed = self.index.passes(order)
        if passed is not None:
            return Assessment([], True, passed)
        return self.assess_in_journal(order)

    def assess_in_journal(self, order: Order) -> Assessment:
        """``assess`` from the journal alone: every hold and its wording comes from here
        (the index only passes orders this would pass, with the same fills)."""
        ordered = order.prescription
        reg = self.find(ordered.id)
        if reg is None:
            return Assessment([Hold(
                PRESCRIPTION_UNREGISTERED, f"prescription {ordered.id} is not registered "
                "by any institution", None, (("prescription_id", ordered.id),))], False, [])
        base = (("prescription_id", reg.prescription_id), ("institution", reg.institution),
                ("issued_on", reg.issued_on.isoformat()))
        holds: list[Hold] = []

        def mismatch(path: str, detail: str, drug_code: str | None = None) -> None:
            holds.append(Hold(PRESCRIPTION_MISMATCH, f"{path}: {detail}", drug_code,
                              (*base, ("field", path))))

        if reg.patient_id != order.patient.id:
            mismatch("patient.id", f"prescription {reg.prescription_id} is registered for "
                     f"another patient ({reg.patient_id})")
            return Assessment(holds, True, [])
        name = self.institutions.get(reg.institution)
        said = normal_name(ordered.institution)
        if said not in (normal_name(reg.institution), normal_name(name or reg.institution)):
            mismatch("prescription.institution", f"the order says {ordered.institution!r}; "
                     f"registered by {reg.institution}" + (f" ({name})" if name else ""))
        if normal_name(ordered.prescriber) != normal_name(reg.prescriber):
            mismatch("prescription.prescriber", f"the order says {ordered.prescriber!r}; "
                     f"registered {reg.prescriber!r}")
        if ordered.issued_on != reg.issued_on:
            mismatch("prescription.issued_on", f"the order says {ordered.issued_on}; "
                     f"registered {reg.issued_on}")
        extra = [d for d in ordered.diagnoses if d not in reg.diagnoses]
        if extra:
            mismatch("prescription.diagnoses", f"{', '.join(extra)} not among the "
                     f"registered diagnoses ({', '.join(reg.diagnoses)})")
        if name is None:
            holds.append(Hold(INSTITUTION_NOT_DESIGNATED, f"prescription "
                              f"{reg.prescription_id} was issued by {reg.institution}, "
                              "not a designated institution of the programme"
                              + ("" if self.institutions else
                                 " (no institution is configured: [[institutions]])"),
                              None, base))
        fills: list[tuple[int, int, int]] = []
        drawn: dict[int, int] = {}
        for n, item in enumerate(order.items):
            wanted = ingredients_of(item.drug_code, self.formulary)
            same = [p for p in reg.items if p.ingredients == wanted]
            # (The product's label only for a hold's message: most orders have none.)
            if not same:
                label = product_label(item.drug_code, self.formulary)
                prescribed = sorted({"+".join(p.ingredients) or f"ATC {p.atc}"
                                     for p in reg.items})
                mismatch(f"items.{n}.drug_code", f"{label} ({'+'.join(wanted)}) is not "
                         f"prescribed on {reg.prescription_id} (prescribed: "
                         f"{', '.join(prescribed)})", item.drug_code)
                continue
            best = max(same, key=lambda p: p.left - drawn.get(p.item_no, 0))
            left = best.left - drawn.get(best.item_no, 0)
            if item.quantity > left:
                label = product_label(item.drug_code, self.formulary)
                holds.append(Hold(
                    PRESCRIPTION_EXHAUSTED, f"{label}: prescription {reg.prescription_id} "
                    f"has {left} of {best.quantity} packs of {'+'.join(wanted)} left "
                    f"({best.filled} filled); ordered {item.quantity}", item.drug_code,
                    (*base, ("item_no", best.item_no), ("prescribed", best.quantity),
                     ("filled", best.filled), ("left", left))))
                continue
            drawn[best.item_no] = drawn.get(best.item_no, 0) + item.quantity
            fills.append((reg.seq, best.item_no, item.quantity))
        return Assessment(holds, True, fills)

    # ------------------------------------------------------------------ fills
    def record_fills(self, order_id: str, prescription_id: str,
                     fills: list[tuple[int, int, int]]) -> None:
        """The accepted order draws its fills from its prescription (inside the order's
        transaction)."""
        self.index.fill(prescription_id, [(n, q) for _, n, q in fills])
        self.journal.write_many(
            "UPDATE prescription_items SET filled = filled + ? WHERE prescription_seq = ? "
            "AND item_no = ?", [(q, seq, n) for seq, n, q in fills])
        self.journal.write_many(
            "INSERT INTO prescription_fills (order_id, prescription_seq, item_no, quantity) "
            "VALUES (?,?,?,?) ON CONFLICT DO UPDATE SET quantity = quantity + "
            "excluded.quantity", [(order_id, seq, n, q) for seq, n, q in fills])

    def give_back(self, order_id: str) -> list[list[int]]:
        """An order that will not be dispensed gives its fills back; returns them as
        ``[prescription seq, item no, packs]``."""
        rows = self.journal.query(
            "SELECT f.prescription_seq, f.item_no, f.quantity, p.prescription_id "
            "FROM prescription_fills f JOIN prescriptions p ON p.seq = f.prescription_seq "
            "WHERE f.order_id = ?", (order_id,))
        if not rows:
            return []
        for rx_id in {r[3] for r in rows}:
            self.index.fill(rx_id, [(n, -q) for _, n, q, i in rows if i == rx_id])
        rows = [r[:3] for r in rows]
        self.journal.write_many(
            "UPDATE prescription_items SET filled = filled - ? WHERE prescription_seq = ? "
            "AND item_no = ?", [(q, seq, n) for seq, n, q in rows])
        self.journal.write("DELETE FROM prescription_fills WHERE order_id = ?", (order_id,))
        return [list(r) for r in rows]
