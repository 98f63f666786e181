"""``records.import`` in the core (``dispenser.core.records``): the answer a sender gets for
each kind of bad record (field path and message, exactly), what is stored for a good one,
and the content hash that makes a record sent again ``unchanged``, in journals that already
hold records."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dispenser.core import Dispensary
from dispenser.core.records import DispensingRecord, _fields_of, _plain, _Shared
from dispenser.testing.core import API, HOSPITAL, Factory

CRANE = "06900000010006"  # acarbose 50 mg, Beijing Double-Crane (ATC A10BF01)
IDENT = "String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'"
ATC = "String should match pattern '^[A-Z][0-9]{2}[A-Z]{2}(?:[0-9]{2}|-L[0-9]{2})$'"
ISO = "must be ISO 8601 text such as 2026-11-01"
STRING = "Input should be a valid string"
INTEGER = "Input should be a valid integer"


def rec(**changes: Any) -> dict[str, Any]:
    """A good record, with fields changed (``...``: the field left out)."""
    out: dict[str, Any] = {"record_id": "R-1", "source": dict(HOSPITAL),
                           "patient_id": "P000123", "dispensed_on": "2026-11-20",
                           "drug_code": CRANE, "quantity": 1, "days_supply": 30}
    for k, v in changes.items():
        if v is ...:
            out.pop(k)
        else:
            out[k] = v
    return out


def source(name: object) -> dict[str, object]:
    return {"code": "TMUGH", "name": name}


# What a sender is told, by kind of mistake: (record, [(path, message), ...]).
REFUSED: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {
    "record_id a number": (rec(record_id=17), [("record_id", STRING)]),
    "record_id pattern": (rec(record_id="-R1"), [("record_id", IDENT)]),
    "record_id too long": (rec(record_id="R" * 65), [("record_id", IDENT)]),
    "source a text": (rec(source="TMUGH"), [
        ("source", "Input should be a valid dictionary or instance of Source")]),
    "source extra field": (rec(source={**HOSPITAL, "city": "Tianjin"}), [
        ("source.city", "unknown field; remove it")]),
    "source name missing": (rec(source={"code": "TMUGH"}), [
        ("source.name", "required field is missing")]),
    "source name blank": (rec(source=source("   ")), [
        ("source.name", "String should have at least 1 character")]),
    "source name too long": (rec(source=source("x" * 201)), [
        ("source.name", "String should have at most 200 characters")]),
    "source name control": (rec(source=source("Tianjin\x1b[2J")), [
        ("source.name", "control character U+001B at character 8 is not allowed in text; "
                        "remove it")]),
    "source name lone surrogate": (rec(source=source("Tianjin \ud800")), [
        ("source.name", "Input should be a valid string, unable to parse raw data as a "
                        "unicode string")]),
    "source name a number": (rec(source=source(3)), [("source.name", STRING)]),
    "patient_id a list": (rec(patient_id=["P1"]), [("patient_id", STRING)]),
    "extra field": (rec(colour="red"), [("colour", "unknown field; remove it")]),
    "nothing": ({}, [(f, "required field is missing") for f in (
        "record_id", "source", "patient_id", "dispensed_on", "quantity", "days_supply")]),
    "date a number": (rec(dispensed_on=20261120), [("dispensed_on", ISO)]),
    "date not ISO": (rec(dispensed_on="20.11.2026"), [("dispensed_on", ISO)]),
    "date with a time": (rec(dispensed_on="2026-11-20T10:00:00"), [("dispensed_on", ISO)]),
    "date impossible": (rec(dispensed_on="2026-02-30"), [
        ("dispensed_on", "Input should be a valid date or datetime, day value is outside "
                         "expected range")]),
    "date not a leap year": (rec(dispensed_on="2025-02-29"), [
        ("dispensed_on", "Input should be a valid date or datetime, day value is outside "
                         "expected range")]),
    "date with a newline": (rec(dispensed_on="2026-11-20\n"), [
        ("dispensed_on", "Input should be a valid date or datetime, invalid datetime "
                         "separator, expected `T`, `t`, `_` or space")]),
    "date year 0": (rec(dispensed_on="0000-01-01"), [
        ("dispensed_on", "Input should be a valid date in the format YYYY-MM-DD, year 0 is "
                         "out of range")]),
    "date in the future": (rec(dispensed_on="2026-11-24"), [
        ("dispensed_on", "is in the future")]),
    "date far in the future": (rec(dispensed_on="9999-12-31", days_supply=3650), [
        ("dispensed_on", "is in the future")]),
    "quantity a bool": (rec(quantity=True), [("quantity", INTEGER)]),
    "quantity a text": (rec(quantity="1"), [("quantity", INTEGER)]),
    "days_supply a float": (rec(days_supply=30.0), [("days_supply", INTEGER)]),
    "days_supply a bool": (rec(days_supply=False), [("days_supply", INTEGER)]),
    "quantity 0": (rec(quantity=0), [
        ("quantity", "Input should be greater than or equal to 1")]),
    "quantity 1001": (rec(quantity=1001), [
        ("quantity", "Input should be less than or equal to 1000")]),
    "days_supply 0": (rec(days_supply=0), [
        ("days_supply", "Input should be greater than or equal to 1")]),
    "days_supply 3651": (rec(days_supply=3651), [
        ("days_supply", "Input should be less than or equal to 3650")]),
    "atc lower case": (rec(drug_code=..., atc="a10bf01"), [("atc", ATC)]),
    "atc too short": (rec(drug_code=..., atc="A10BF1"), [("atc", ATC)]),
    "atc a number": (rec(drug_code=..., atc=1), [("atc", STRING)]),
    "gtin check digit": (rec(drug_code="06900000010007"), [
        ("drug_code", "not a valid GTIN-14 (check digit)")]),
    "gtin 13 digits": (rec(drug_code="0690000001000"), [
        ("drug_code", "String should match pattern '^[0-9]{14}$'")]),
    "gtin a letter": (rec(drug_code="0690000001000X"), [
        ("drug_code", "String should match pattern '^[0-9]{14}$'")]),
    "gtin a number": (rec(drug_code=6900000010006), [("drug_code", STRING)]),
    "neither drug_code nor atc": (rec(drug_code=None), [
        ("drug_code", "give drug_code (GTIN-14) or atc")]),
    "gtin not in the formulary": (rec(drug_code="00000000000000"), [
        ("drug_code", "not in the formulary; send the product's atc code with it (or "
                      "instead)")]),
    "atc not the product's": (rec(atc="C09CA03"), [
        ("atc", "does not match drug_code 06900000010006 (acarbose, A10BF01)")]),
    "many mistakes": ({"record_id": 5, "source": {"code": "", "name": 3}, "patient_id": "P1",
                       "dispensed_on": "x", "quantity": False, "days_supply": 9999,
                       "atc": "x", "extra": 1}, [
        ("record_id", STRING), ("source.code", IDENT), ("source.name", STRING),
        ("dispensed_on", ISO), ("atc", ATC), ("quantity", INTEGER),
        ("days_supply", "Input should be less than or equal to 3650"),
        ("extra", "unknown field; remove it")]),
}


@pytest.fixture
def disp(make: Factory) -> Dispensary:
    return make()


@pytest.mark.parametrize("kind", REFUSED)
def test_a_bad_record_is_refused_with_its_paths_and_messages(disp: Dispensary,
                                                             kind: str) -> None:
    raw, expected = REFUSED[kind]
    (out,) = disp.import_records([raw], API)
    assert out.status == "refused"
    assert [(e.path, e.message) for e in out.errors] == expected
    assert disp.journal.query_one("SELECT count(*) FROM dispensing_records")[0] == 0


def test_every_bad_record_of_a_batch_is_answered_alone(disp: Dispensary) -> None:
    raws = [raw for raw, _ in REFUSED.values()]
    out = disp.import_records([rec(record_id="OK-1"), *raws, rec(record_id="OK-2")], API)
    assert [o.status for o in out] == ["imported", *["refused"] * len(raws), "imported"]
    assert [[(e.path, e.message) for e in o.errors] for o in out[1:-1]] == [
        expected for _, expected in REFUSED.values()]
    # Key of each answer: as far as the record gives it.
    assert (out[1].source, out[1].record_id) == ("TMUGH", None)  # record_id a number
    assert (out[4].source, out[4].record_id) == (None, "R-1")  # source a text
    assert out[-2].source == "" and out[-2].record_id is None  # many mistakes


class Record(Mapping[str, object]):
    """A record that is a mapping but no dict (the core takes any mapping)."""

    def __init__(self, data: dict[str, object]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> object:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


ROW = ("SELECT source, record_id, content_hash, source_name, patient_id, dispensed_on, "
       "drug_code, atc, ingredients, quantity, days_supply, supply_end, imported_at "
       "FROM dispensing_records ORDER BY id")


def test_what_is_stored_of_good_records(disp: Dispensary) -> None:
    out = disp.import_records([
        rec(),
        rec(record_id="R-2", source=source("  Tianjin Medical University General Hospital"
                                           "\u3000 "), drug_code=None, atc="A10BF01",
            quantity=1000, days_supply=3650, dispensed_on="2016-11-23"),
        Record(rec(record_id="R-3", source=MappingProxyType(source("Heping")),
                   atc="A10BF01", dispensed_on="2026-11-23")),
        rec(record_id="R-4", drug_code=None, atc="A10XA-L01"),  # a local ATC code
        rec(record_id="R-5", source=source("天津医科大学总医院"), patient_id="p.1_x-Y"),
        rec(record_id="R-6", drug_code=None, atc="V99XX01"),  # an ATC code unknown here
    ], API)
    assert [o.status for o in out] == ["imported"] * 6
    stamp = "2026-11-23T09:00:00+08:00"
    assert disp.journal.query(ROW) == [
        ("TMUGH", "R-1", "5c1a59e0ccd501a2cd227752eb65595b",
         "Tianjin Medical University General Hospital", "P000123", "2026-11-20", CRANE,
         None, "acarbose", 1, 30, "2026-12-20", stamp),
        ("TMUGH", "R-2", "1d91f0d340a588afa82938628a357239",
         "Tianjin Medical University General Hospital", "P000123", "2016-11-23", None,
         "A10BF01", "acarbose", 1000, 3650, "2026-11-21", stamp),
        ("TMUGH", "R-3", "a7153b9a498a7d8d0780a0fb51fbff5a", "Heping", "P000123",
         "2026-11-23", CRANE, "A10BF01", "acarbose", 1, 30, "2026-12-23", stamp),
        ("TMUGH", "R-4", "46862660ea1b91e56dffcbbf14188b8c",
         "Tianjin Medical University General Hospital", "P000123", "2026-11-20", None,
         "A10XA-L01", "epalrestat", 1, 30, "2026-12-20", stamp),
        ("TMUGH", "R-5", "214bb895d16e5eefd8342113a22f943e", "天津医科大学总医院", "p.1_x-Y",
         "2026-11-20", CRANE, None, "acarbose", 1, 30, "2026-12-20", stamp),
        ("TMUGH", "R-6", "2968db69bae3fda6bb43b0aa691d5a81",
         "Tianjin Medical University General Hospital", "P000123", "2026-11-20", None,
         "V99XX01", "", 1, 30, "2026-12-20", stamp),
    ]


def test_a_record_imported_before_is_unchanged_when_sent_again(disp: Dispensary) -> None:
    # A journal holds the content hash of each record imported so far: a record sent again
    # must hash the same, or a harmless resend would be answered "conflict". The hash is
    # sha256 over the record's content (the source's name as stored, patient, day, drug
    # code, ATC code, quantity, days), as it was when the first journals were written.
    assert disp.import_records([rec()], API)[0].status == "imported"
    assert disp.journal.query_one("SELECT content_hash FROM dispensing_records")[0] == (
        "5c1a59e0ccd501a2cd227752eb65595b")
    again = [rec(), rec(source=source(" Tianjin Medical University General Hospital ")),
             Record(rec()), rec(quantity=2)]
    assert [o.status for o in disp.import_records(again, API)] == [
        "unchanged", "unchanged", "unchanged", "conflict"]


# ---------------------------------------------------------------- the plain reading
# Well-formed records are read by a plain function (``_plain``) instead of the pydantic
# model, for speed; anything it does not take is answered by the model. So it must never
# take a record the model refuses, and must read exactly the values the model gives.

GOOD_TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=202)
IDENTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)


@st.composite
def good_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records the model takes (nearly all), of the right types and shapes."""
    raw: dict[str, Any] = {
        "record_id": draw(IDENTS), "patient_id": draw(IDENTS),
        "source": {"code": draw(IDENTS), "name": draw(st.one_of(GOOD_TEXT, st.sampled_from(
            [HOSPITAL["name"], "天津医科大学总医院", " Heping ", "\u3000Heping\u2028",
             "x" * 200, " " + "x" * 200])).filter(str.strip))},
        "dispensed_on": draw(st.dates()).isoformat(),
        "quantity": draw(st.integers(min_value=1, max_value=1000)),
        "days_supply": draw(st.integers(min_value=1, max_value=3650))}
    if draw(st.booleans()):
        raw["drug_code"] = draw(st.one_of(st.none(), st.just(CRANE), st.from_regex(
            r"[0-9]{14}", fullmatch=True)))
    if draw(st.booleans()):
        raw["atc"] = draw(st.one_of(st.none(), st.from_regex(
            r"[A-Z][0-9]{2}[A-Z]{2}(?:[0-9]{2}|-L[0-9]{2})", fullmatch=True)))
    return raw


# Values of the right type the model may still refuse: out of range, blank, too long.
EDGE_BY_FIELD: dict[str, st.SearchStrategy[Any]] = {
    "quantity": st.sampled_from([0, 1, 1000, 1001]),
    "days_supply": st.sampled_from([0, 1, 3650, 3651]),
    "dispensed_on": st.from_regex(r"[0-9]{4}-[01][0-9]-[0-3][0-9]", fullmatch=True),
    "source.name": st.one_of(GOOD_TEXT, st.text(" \t\u3000\u2028\u00a0x", max_size=4),
                             st.sampled_from(["x" * 201, " " + "x" * 200 + " "])),
}


@st.composite
def typed_records(draw: st.DrawFn) -> dict[str, Any]:
    """Good records, some with a value at or past an edge."""
    raw = draw(good_records())
    for name in draw(st.lists(st.sampled_from(sorted(EDGE_BY_FIELD)), max_size=2)):
        value = draw(EDGE_BY_FIELD[name])
        if name == "source.name":
            raw["source"]["name"] = value
        else:
            raw[name] = value
    return raw


class Str(str):
    pass


# Values of each field of the wrong type or form.
ODD = st.one_of(st.none(), st.integers(), st.booleans(), st.floats(), st.text(max_size=70),
                st.text(max_size=3).map(Str), st.lists(st.integers(), max_size=1),
                st.dictionaries(st.text(max_size=4), st.integers(), max_size=1))
ODD_BY_FIELD: dict[str, st.SearchStrategy[Any]] = {
    "record_id": ODD, "patient_id": ODD, "source.code": ODD,
    "source.name": st.one_of(ODD, st.text(max_size=205)),
    "dispensed_on": st.one_of(ODD, st.datetimes().map(datetime.isoformat), st.from_regex(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}\n?", fullmatch=True)),
    "drug_code": st.one_of(ODD, st.from_regex(r"[0-9]{13,15}", fullmatch=True),
                           st.text("0123456789 \n", min_size=14, max_size=15)),
    "atc": st.one_of(ODD, st.from_regex(r"[A-Za-z0-9-]{5,10}\n?", fullmatch=True)),
    "quantity": st.one_of(ODD, st.integers(min_value=-2, max_value=4000)),
    "days_supply": st.one_of(ODD, st.integers(min_value=-2, max_value=4000)),
    "source": st.one_of(ODD, st.just(MappingProxyType({"code": "TMUGH", "name": "H"}))),
}


@st.composite
def raw_records(draw: st.DrawFn) -> dict[Any, Any]:
    """Typed records with one field (sometimes two) odd or missing, or a field too many."""
    raw: dict[Any, Any] = draw(good_records())
    changes = draw(st.lists(st.sampled_from([*ODD_BY_FIELD, "extra"]), min_size=1,
                            max_size=2))
    for name in changes:
        src = raw.get("source")
        where, key = (src, name[7:]) if name.startswith("source.") and \
            isinstance(src, dict) else (raw, name)
        if name == "extra":
            where = src if isinstance(src, dict) and draw(st.booleans()) else raw
            where[draw(st.sampled_from(["colour", "Source", 1]))] = draw(st.integers())
        elif draw(st.integers(min_value=0, max_value=4)) == 0:
            where.pop(key, None)
        else:
            where[key] = draw(ODD_BY_FIELD[name])
    return raw


def model_reading(raw: dict[Any, Any]) -> tuple[Any, ...] | None:
    try:
        return _fields_of(DispensingRecord.model_validate(dict(raw)))
    except ValidationError:
        return None


@settings(max_examples=600, deadline=None)
@given(raw=typed_records())
def test_the_plain_reading_takes_every_typed_record_the_model_takes(
        raw: dict[str, Any]) -> None:
    assert _plain(raw, _Shared()) == model_reading(raw)


@settings(max_examples=1000, deadline=None)
@given(raw=raw_records())
def test_the_plain_reading_takes_only_what_the_model_takes_and_reads_it_alike(
        raw: dict[Any, Any]) -> None:
    plain = _plain(raw, _Shared())
    if plain is not None:
        assert plain == model_reading(raw)


def test_the_plain_reading_reads_a_feeds_records() -> None:
    # What a feed sends: each of these must take the fast way (the model is not asked).
    shared = _Shared()
    for raw in (rec(), rec(drug_code=None, atc="A10BF01"), rec(atc="A10XA-L01"),
                rec(source=source(" Heping ")), rec(source=source("天津医科大学总医院")),
                rec(record_id="a" * 64, quantity=1000, days_supply=3650)):
        assert _plain(raw, shared) == model_reading(raw), raw
