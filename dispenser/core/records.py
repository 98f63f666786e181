"""Dispensing records from other channels: hospital pharmacies, other pharmacies and
insurance claims (``records.import``, docs/api.md).

A record says that a source (an institution, by code and name) dispensed a drug (by drug
code, or by ATC code when the source has no GTIN) to a patient on a day, for so many days.
Imported records count in the duplicate check exactly like this pharmacy's own dispenses
(``dispenser.core.history``) and show in the patient's record with their source.

``RecordBook.import_records`` takes a batch and answers each record on its own:
``imported``, ``unchanged`` (the same record again: harmless), ``conflict`` (the same
``(source, record_id)`` with other content: nothing changes) or ``refused`` (with the path
of each bad field); one bad record does not affect the others. Records live in the journal
only: nothing is kept in memory per record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

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

    def _check(self, rec: DispensingRecord, today: date) -> list[FieldError]:
        errors = []
        drug = None
        if rec.drug_code is None and rec.atc is None:
            errors.append(FieldError("drug_code", "give drug_code (GTIN-14) or atc"))
        if rec.drug_code is not None:
            drug = self.formulary.get(rec.drug_code)
            if not is_valid_gtin14(rec.drug_code):
                errors.append(FieldError("drug_code", "not a valid GTIN-14 (check digit)"))
            elif drug is None and rec.atc is None:
                errors.append(FieldError("drug_code", "not in the formulary; send the "
                                         "product's atc code with it (or instead)"))
        if drug is not None and rec.atc is not None and drug.atc != rec.atc:
            errors.append(FieldError("atc", f"does not match drug_code {drug.drug_code} "
                                     f"({drug.name}, {drug.atc})"))
        if rec.dispensed_on > today:
            errors.append(FieldError("dispensed_on", "is in the future"))
        return errors

    def import_records(self, raws: Sequence[object], actor: Actor) -> list[RecordOutcome]:
        """Import a batch (at most ``MAX_BATCH``); one outcome per record, in order. Call
        inside a transaction: the imported records and one audit row of the batch (counts,
        sources and a digest of what was imported) are written together."""
        today = self.books.today()
        stamp = self.books.stamp()
        outcomes: list[RecordOutcome] = []
        good: list[tuple[int, DispensingRecord, str]] = []
        for raw in raws:
            src, rid = _key_of(raw)
            if not isinstance(raw, Mapping):
                outcomes.append(RecordOutcome("refused", rid, src, [FieldError(
                    "(record)", "a record must be a JSON object")]))
                continue
            try:
                rec = DispensingRecord.model_validate(dict(raw))
            except ValidationError as exc:
                outcomes.append(RecordOutcome("refused", rid, src, field_errors(exc)))
                continue
            errors = self._check(rec, today)
            if errors:
                outcomes.append(RecordOutcome("refused", rid, src, errors))
                continue
            digest = hashlib.sha256("|".join((
                rec.source.name, rec.patient_id, rec.dispensed_on.isoformat(),
                rec.drug_code or "", rec.atc or "", str(rec.quantity),
                str(rec.days_supply))).encode()).hexdigest()[:32]
            good.append((len(outcomes), rec, digest))
            outcomes.append(RecordOutcome("imported", rid, src))

        known = self._known([(rec.source.code, rec.record_id) for _, rec, _ in good])
        rows = []
        batch_digest = hashlib.sha256()
        for i, rec, digest in good:
            key = (rec.source.code, rec.record_id)
            seen = known.get(key)
            if seen is not None:
                if seen == digest:
                    outcomes[i].status = "unchanged"
                else:
                    outcomes[i].status = "conflict"
                    outcomes[i].message = (
                        f"record {rec.record_id} of {rec.source.code} was already imported "
                        "with different content; nothing changed (send a correction under "
                        "a new record_id)")
                continue
            known[key] = digest
            end = rec.dispensed_on + timedelta(days=rec.days_supply)
            ingredients = self.formulary.ingredients_of(rec.drug_code, rec.atc)
            rows.append((rec.source.code, rec.record_id, digest, rec.source.name,
                         rec.patient_id, rec.dispensed_on.isoformat(), rec.drug_code,
                         rec.atc, ";".join(ingredients), rec.quantity, rec.days_supply,
                         end.isoformat(), stamp))
            if self.supplies is not None:
                self.supplies.add(rec.patient_id, ingredients, end)
            batch_digest.update(f"{rec.source.code}/{rec.record_id}:{digest}\n".encode())
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
