"""Dispensing records from other channels: hospital pharmacies, other pharmacies and
insurance claims (``records.import``, docs/api.md).

A record says that a source (an institution, by code and name) dispensed a drug (by drug
code, or by ATC code when the source has no GTIN) to a patient on a day, for so many days.
Imported records count in the duplicate check exactly like this pharmacy's own dispenses
(``dispenser.core.history``) and show in the patient's record with their source.

``RecordBook.import_records`` takes a batch and answers each record on its own:
``imported``, ``unchanged`` (the same record again: harmless), ``conflict`` (the same
``(source, record_id)`` with other content: nothing changes) or ``refused`` (with the path
of each bad field); one bad record does not affect the others. Records live in the journal;
memory keeps only, per patient, the last day of each ingredient's current supply
(``dispenser.core.supply_index``), for the duplicate check.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from dispenser.core.books import Books
from dispenser.core.errors import FieldError
from dispenser.core.formulary import Formulary, is_valid_gtin14
from dispenser.core.orders import DrugCode, Ident, IsoDate, Text
from dispenser.core.supply_index import SupplyIndex
from dispenser.core.views import Actor

__all__ = ["MAX_BATCH", "Atc", "RecordBook", "RecordOutcome", "field_errors"]

MAX_BATCH = 10_000

Atc = Annotated[str, StringConstraints(
    strict=True, pattern=r"^[A-Z][0-9]{2}[A-Z]{2}(?:[0-9]{2}|-L[0-9]{2})$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    code: Ident
    name: Text


class DispensingRecord(_Strict):
    record_id: Ident
    source: Source
    patient_id: Ident
    dispensed_on: IsoDate
    drug_code: DrugCode | None = None
    atc: Atc | None = None
    quantity: StrictInt = Field(ge=1, le=1000, description="packs")
    days_supply: StrictInt = Field(ge=1, le=3650)


# -- the plain reading of a well-formed record ---------------------------------------------
# A feed sends hundreds of thousands of records a day, nearly all of them well formed, and
# the model's validation was the largest part of a record's import. A plain function reads
# a record when every field is plainly right (exact types and shapes) and hands everything
# else to the model, which then gives the answer, refusal or not: a sender is told exactly
# what the model says. Values a batch repeats (the source's name, the day) are validated
# by the model's own field types, once per distinct value; the identifiers and codes (one
# per record) by the patterns of the model's types; the bounds are the model's.
def _whole(kind: Any) -> Callable[[str], re.Match[str] | None]:
    """The pattern of a constrained text type, matched against the whole text."""
    (pattern,) = [m.pattern for m in kind.__metadata__ if isinstance(m, StringConstraints)]
    assert isinstance(pattern, str)
    return re.compile(pattern).fullmatch


_FIELDS = frozenset(DispensingRecord.model_fields)
_REQUIRED = frozenset(n for n, f in DispensingRecord.model_fields.items() if f.is_required())
_SOURCE_FIELDS = frozenset(Source.model_fields)
_IDENT, _DRUG_CODE, _ATC = _whole(Ident), _whole(DrugCode), _whole(Atc)
_TEXT: TypeAdapter[str] = TypeAdapter(Text)
_DAY: TypeAdapter[date] = TypeAdapter(IsoDate)

# A record as read: (source code, source name, record_id, patient_id, dispensed_on and its
# ISO text, drug_code, atc, quantity, days_supply).
_Fields = tuple[str, str, str, str, date, str, str | None, str | None, int, int]


class _Shared:
    """The values a batch's records repeat, each validated once: source names (as stored,
    or None when the model must answer) and days (date and ISO text, or None)."""

    def __init__(self) -> None:
        self.names: dict[str, str | None] = {}
        self.days: dict[str, tuple[date, str] | None] = {}

    def name(self, text: str) -> str | None:
        try:
            return self.names[text]
        except KeyError:
            try:
                out: str | None = _TEXT.validate_python(text)
            except ValidationError:
                out = None
            self.names[text] = out
            return out

    def day(self, text: str) -> tuple[date, str] | None:
        try:
            return self.days[text]
        except KeyError:
            try:
                on = _DAY.validate_python(text)
                out: tuple[date, str] | None = (on, on.isoformat())
            except ValidationError:
                out = None
            self.days[text] = out
            return out


def _plain(raw: dict[Any, Any], shared: _Shared) -> _Fields | None:
    """The fields of the record as the model would give them, when it is plainly well
    formed; None for anything else (a mistake, or a form the model takes but converts: a
    source that is a mapping but no dict, a subclass of str or int)."""
    keys = raw.keys()
    if not (keys <= _FIELDS and keys >= _REQUIRED):
        return None
    src, rid, pid = raw["source"], raw["record_id"], raw["patient_id"]
    quantity, days = raw["quantity"], raw["days_supply"]
    drug, atc = raw.get("drug_code"), raw.get("atc")
    if type(src) is not dict or src.keys() != _SOURCE_FIELDS:
        return None
    code, name, on = src["code"], src["name"], raw["dispensed_on"]
    if not (type(rid) is str and type(pid) is str and type(code) is str
            and type(name) is str and type(on) is str
            and type(quantity) is int and type(days) is int
            and 1 <= quantity <= 1000 and 1 <= days <= 3650  # DispensingRecord's bounds
            and _IDENT(rid) and _IDENT(pid) and _IDENT(code)
            and (drug is None or (type(drug) is str and _DRUG_CODE(drug)))
            and (atc is None or (type(atc) is str and _ATC(atc)))):
        return None
    stored_name, day = shared.name(name), shared.day(on)
    if stored_name is None or day is None:
        return None
    return (code, stored_name, rid, pid, day[0], day[1], drug, atc, quantity, days)


def _fields_of(rec: DispensingRecord) -> _Fields:
    return (rec.source.code, rec.source.name, rec.record_id, rec.patient_id,
            rec.dispensed_on, rec.dispensed_on.isoformat(), rec.drug_code, rec.atc,
            rec.quantity, rec.days_supply)


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """pydantic's errors as field paths and messages a person can act on."""
    out = []
    for e in exc.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; remove it"
        elif e["type"] == "missing":
            msg = "required field is missing"
        path = ".".join(str(p) for p in e["loc"])
        out.append(FieldError(prefix + path if path else prefix.rstrip(".") or "(record)",
                              msg))
    return out


@dataclass(slots=True)
class RecordOutcome:
    """The answer for one record of a batch."""

    status: str  # imported | unchanged | conflict | refused
    record_id: str | None
    source: str | None
    errors: list[FieldError] = field(default_factory=list)
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"record_id": self.record_id, "source": self.source,
                               "status": self.status}
        if self.errors:
            out["errors"] = [e.as_dict() for e in self.errors]
        if self.message:
            out["message"] = self.message
        return out


def _key_of(raw: object) -> tuple[str | None, str | None]:
    """(source code, record id) of a raw record, as far as they can be read."""
    if not isinstance(raw, Mapping):
        return None, None
    rid = raw.get("record_id")
    src = raw.get("source")
    code = src.get("code") if isinstance(src, Mapping) else None
    return (code if isinstance(code, str) else None, rid if isinstance(rid, str) else None)


_INSERT = ("INSERT INTO dispensing_records (source, record_id, content_hash, source_name, "
           "patient_id, dispensed_on, drug_code, atc, ingredients, quantity, days_supply, "
           "supply_end, imported_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")


class RecordBook:
    """Imported dispensing records (journal table ``dispensing_records``)."""

    def __init__(self, books: Books, formulary: Formulary) -> None:
        self.books = books
        self.journal = books.journal
        self.formulary = formulary
        self.supplies: SupplyIndex | None = None  # wired by the Dispensary

    def _check_product(self, drug_code: str | None, atc: str | None) -> list[FieldError]:
        """What is wrong with the product of a record (drug code, ATC code or both)."""
        errors = []
        drug = None
        if drug_code is None and atc is None:
            errors.append(FieldError("drug_code", "give drug_code (GTIN-14) or atc"))
        if drug_code is not None:
            drug = self.formulary.get(drug_code)
            if not is_valid_gtin14(drug_code):
                errors.append(FieldError("drug_code", "not a valid GTIN-14 (check digit)"))
            elif drug is None and atc is None:
                errors.append(FieldError("drug_code", "not in the formulary; send the "
                                         "product's atc code with it (or instead)"))
        if drug is not None and atc is not None and drug.atc != atc:
            errors.append(FieldError("atc", f"does not match drug_code {drug.drug_code} "
                                     f"({drug.name}, {drug.atc})"))
        return errors

    def import_records(self, raws: Sequence[object], actor: Actor) -> list[RecordOutcome]:
        """Import a batch (at most ``MAX_BATCH``); one outcome per record, in order. Call
        inside a transaction: the imported records and one audit row of the batch (counts,
        sources and a digest of what was imported) are written together."""
        today = self.books.today()
        stamp = self.books.stamp()
        shared = _Shared()
        # By product (drug code, ATC code): what is wrong with it, or its ingredients as
        # stored. A batch names a few hundred products at most.
        products: dict[tuple[str | None, str | None], list[FieldError] | str] = {}
        outcomes: list[RecordOutcome] = []
        # (index of the outcome, the row to insert: source, record_id, content_hash, ...)
        good: list[tuple[int, tuple[Any, ...]]] = []
        ends: dict[int, date] = {}  # supply end of each good record, by its place
        for raw in raws:
            if type(raw) is not dict and not isinstance(raw, Mapping):
                src, rid = _key_of(raw)
                outcomes.append(RecordOutcome("refused", rid, src, [FieldError(
                    "(record)", "a record must be a JSON object")]))
                continue
            fields = _plain(raw, shared) if type(raw) is dict else None
            if fields is None:
                src, rid = _key_of(raw)
                try:
                    fields = _fields_of(DispensingRecord.model_validate(dict(raw)))
                except ValidationError as exc:
                    outcomes.append(RecordOutcome("refused", rid, src, field_errors(exc)))
                    continue
            else:
                src, rid = fields[0], fields[2]
            code, name, record_id, patient_id, on, on_text, drug_code, atc, quantity, \
                days = fields
            product = products.get((drug_code, atc))
            if product is None:
                errors = self._check_product(drug_code, atc)
                product = products[drug_code, atc] = errors or ";".join(
                    self.formulary.ingredients_of(drug_code, atc))
            if isinstance(product, list):
                errors = list(product)
                if on > today:
                    errors.append(FieldError("dispensed_on", "is in the future"))
                outcomes.append(RecordOutcome("refused", rid, src, errors))
                continue
            if on > today:
                outcomes.append(RecordOutcome("refused", rid, src, [
                    FieldError("dispensed_on", "is in the future")]))
                continue
            # The content hash as journals hold it: a record sent again must hash the same.
            digest = hashlib.sha256("|".join((
                name, patient_id, on_text, drug_code or "", atc or "", str(quantity),
                str(days))).encode()).hexdigest()[:32]
            end = on + timedelta(days=days)
            ends[len(outcomes)] = end
            good.append((len(outcomes), (
                code, record_id, digest, name, patient_id, on_text, drug_code, atc, product,
                quantity, days, end.isoformat(), stamp)))
            outcomes.append(RecordOutcome("imported", rid, src))

        known = self._known([(row[0], row[1]) for _, row in good])
        rows = []
        batch_digest = hashlib.sha256()
        for i, row in good:
            code, record_id, digest = row[0], row[1], row[2]
            key = (code, record_id)
            seen = known.get(key)
            if seen is not None:
                if seen == digest:
                    outcomes[i].status = "unchanged"
                else:
                    outcomes[i].status = "conflict"
                    outcomes[i].message = (
                        f"record {record_id} of {code} was already imported "
                        "with different content; nothing changed (send a correction under "
                        "a new record_id)")
                continue
            known[key] = digest
            rows.append(row)
            if self.supplies is not None and row[8]:
                self.supplies.add(row[4], row[8].split(";"), ends[i])
            batch_digest.update(f"{code}/{record_id}:{digest}\n".encode())
        if rows:
            self.journal.write_many(_INSERT, rows)
        counts = {s: 0 for s in ("imported", "unchanged", "conflict", "refused")}
        for o in outcomes:
            counts[o.status] += 1
        # One row per batch (not per record: a day's feed is hundreds of thousands): the
        # counts, the sources and a digest of every record written, so that the rows of
        # the table can be matched against the trail.
        self.books.audit(actor, "records.imported", f"{len(outcomes)} records", None, {
            **counts, "sources": sorted({r[0] for r in rows}),
            "digest": batch_digest.hexdigest() if rows else None,
            "conflicts": [f"{o.source}/{o.record_id}" for o in outcomes
                          if o.status == "conflict"][:100]})
        return outcomes

    def _known(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Content hashes of the records already imported under these keys."""
        out: dict[tuple[str, str], str] = {}
        by_source: dict[str, list[str]] = {}
        for src, rid in keys:
            by_source.setdefault(src, []).append(rid)
        for src, rids in by_source.items():
            for i in range(0, len(rids), 500):
                chunk = rids[i:i + 500]
                for rid, digest in self.journal.iterate(
                        "SELECT record_id, content_hash FROM dispensing_records WHERE "
                        f"source = ? AND record_id IN ({','.join('?' * len(chunk))})",
                        (src, *chunk)):
                    out[(src, rid)] = digest
        return out
