"""The order contract: validation by field path, unknown drugs, idempotency."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispenser.core import Dispensary
from dispenser.core.errors import Conflict, InvalidOrder, UnknownDrug
from dispenser.core.states import OrderState
from dispenser.testing.core import API, Factory, make_order, robot_drugs


def count_rows(d: Dispensary, table: str) -> int:
    return int(d.journal.query_one(f"SELECT count(*) FROM {table}")[0])


def test_valid_order_is_received_and_joins_a_forming_shipment(disp: Dispensary) -> None:
    view = disp.submit(make_order(), API)
    assert view.state is OrderState.RECEIVED
    assert view.holds == []
    assert view.shipment_id is not None
    assert disp.get_order(view.order_id) == view


def test_issue_example_validates() -> None:
    from dispenser.core.orders import parse_order
    raw = json.loads("""{"order_id": "SO-20261123-000001", "patient": {"id": "P000123",
      "name": "王建国", "phone": "13800000000", "insurance_id": "120101195001011234"},
      "prescription": {"id": "RX-88231", "issued_on": "2026-11-01", "institution":
      "Tianjin Medical University General Hospital", "prescriber": "Dr. Li",
      "diagnoses": ["E11.9", "I10"]}, "items": [{"drug_code": "06901234567892",
      "quantity": 2, "days_supply": 30}], "delivery": {"address": "...", "window_start":
      "2026-11-24T09:00:00+08:00", "window_end": "2026-11-24T12:00:00+08:00"},
      "priority": "normal"}""")
    order = parse_order(raw)
    assert order.items[0].quantity == 2


def test_malformed_order_lists_every_problem_and_stores_nothing(disp: Dispensary) -> None:
    raw = make_order()
    raw["colour"] = "red"
    raw["patient"].pop("id")
    raw["items"][0]["quantity"] = "2"
    raw["items"].append({"drug_code": "123", "quantity": 0, "days_supply": 30})
    raw["delivery"]["window_end"] = "2026-11-24T08:00:00+08:00"
    raw["priority"] = "asap"
    raw["prescription"]["diagnoses"] = ["diabetes"]
    with pytest.raises(InvalidOrder) as info:
        disp.submit(raw, API)
    paths = {e.path for e in info.value.errors}
    assert paths == {"colour", "patient.id", "items.0.quantity", "items.1.drug_code",
                     "items.1.quantity", "delivery", "priority", "prescription.diagnoses.0"}
    assert all(e.message for e in info.value.errors)
    assert info.value.as_dict()["code"] == "invalid_order"
    assert count_rows(disp, "orders") == 0
    assert count_rows(disp, "audit") == 0


def test_not_an_object_is_refused(disp: Dispensary) -> None:
    with pytest.raises(InvalidOrder):
        disp.submit([], API)  # type: ignore[arg-type]


def test_same_drug_twice_is_refused(disp: Dispensary) -> None:
    code = robot_drugs()[0].drug_code
    with pytest.raises(InvalidOrder, match="more than one item"):
        disp.submit(make_order([(code, 1), (code, 2)]), API)


def test_unknown_drug_refuses_whole_order_naming_the_code(disp: Dispensary) -> None:
    good = robot_drugs()[0].drug_code
    raw = make_order([(good, 1), ("06999999999994", 1)])
    with pytest.raises(UnknownDrug) as info:
        disp.submit(raw, API)
    assert info.value.codes == ["06999999999994"]
    assert "06999999999994" in info.value.message
    assert count_rows(disp, "orders") == 0


def test_resubmit_same_content_is_harmless(disp: Dispensary) -> None:
    raw = make_order()
    first = disp.submit(raw, API)
    reordered = json.loads(json.dumps(raw, sort_keys=True))  # other key order, same content
    again = disp.submit(reordered, API)
    assert again == first
    assert count_rows(disp, "orders") == 1


def test_resubmit_other_content_is_a_conflict(disp: Dispensary) -> None:
    raw = make_order()
    disp.submit(raw, API)
    changed = copy.deepcopy(raw)
    changed["items"][0]["quantity"] = 3
    with pytest.raises(Conflict) as info:
        disp.submit(changed, API)
    assert info.value.code == "conflict"


def test_resubmit_after_completion_returns_current_state(make: Factory) -> None:
    d = make()
    raw = make_order()
    v = d.submit(raw, API)
    d.cancel(v.order_id, API, "patient changed mind")
    assert d.submit(raw, API).state is OrderState.CANCELLED


def test_submit_many_reports_each_result_in_one_transaction(disp: Dispensary) -> None:
    bad = make_order()
    bad["items"] = []
    raws = [make_order(patient=f"P{i}") for i in range(5)] + [bad]
    results = disp.submit_many(raws, API)
    assert [type(r).__name__ for r in results] == ["OrderView"] * 5 + ["InvalidOrder"]
    assert count_rows(disp, "orders") == 5


@settings(max_examples=25, deadline=None)
@given(quantity=st.integers(1, 5), other=st.integers(1, 5), repeat=st.integers(1, 3))
def test_idempotency_property(make_dispensary: Factory, quantity: int, other: int,
                              repeat: int) -> None:
    d = make_dispensary()
    raw = make_order([(robot_drugs()[1].drug_code, quantity)])
    first = d.submit(raw, API)
    for _ in range(repeat):
        assert d.submit(copy.deepcopy(raw), API) == first
    changed = copy.deepcopy(raw)
    changed["items"][0]["quantity"] = other
    if other == quantity:
        assert d.submit(changed, API) == first
    else:
        with pytest.raises(Conflict):
            d.submit(changed, API)
    assert count_rows(d, "orders") == 1


@pytest.mark.parametrize(("path", "value"), [
    # Before, pydantic took each of these as seconds since 1970.
    ("delivery.window_start", 1),
    ("delivery.window_start", 1764288000.5),
    ("delivery.window_end", "1764288000"),
    ("prescription.issued_on", 1764288000),
    ("prescription.issued_on", "20261101"),
])
def test_dates_and_times_are_iso_text_never_numbers(disp: Dispensary, path: str,
                                                   value: object) -> None:
    order = make_order()
    section, name = path.split(".")
    order[section][name] = value
    with pytest.raises(InvalidOrder) as caught:
        disp.submit(order, API)
    assert [e.path for e in caught.value.errors] == [path]
    assert "ISO 8601" in caught.value.errors[0].message
    assert count_rows(disp, "orders") == 0


# Text printed on labels and shown on staff terminals: a control character (C0, DEL, C1)
# could move the cursor, clear the screen or retitle the terminal of whoever reads it.
FREE_TEXT = ("patient.name", "prescription.institution", "prescription.prescriber",
             "delivery.address")
PATTERNED = ("order_id", "patient.id", "patient.phone", "patient.insurance_id",
             "prescription.id", "prescription.diagnoses.0", "items.0.drug_code")
CONTROLS = {"NUL": "\x00", "BEL": "\x07", "TAB": "\t", "LF": "\n", "CR": "\r",
            "ESC": "\x1b", "DEL": "\x7f", "CSI": "\x9b", "NEL": "\x85"}


def _with(order: dict[str, object], path: str, suffix: str) -> dict[str, object]:
    node: object = order
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
    if isinstance(node, list):
        node[int(last)] += suffix
    else:
        node[last] += suffix  # type: ignore[index]
    return order


@pytest.mark.parametrize("path", FREE_TEXT + PATTERNED)
@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_characters_are_refused_naming_the_field(disp: Dispensary, path: str,
                                                          name: str) -> None:
    char = CONTROLS[name]
    order = _with(make_order(), path, f"{char}[2Jx")
    with pytest.raises(InvalidOrder) as refused:
        disp.submit(order, API)
    [error] = refused.value.errors
    assert error.path == path
    assert f"control character U+{ord(char):04X}" in error.message
    assert count_rows(disp, "orders") == 0


def test_text_without_control_characters_is_kept(disp: Dispensary) -> None:
    order = make_order()
    order["patient"]["name"] = "Zoë O'Brien-王\u00a0建国"  # type: ignore[index]
    order["delivery"]["address"] = "No. 1 «Anshan» Road; 3/F — Heping, Tianjin"  # type: ignore[index]
    view = disp.submit(order, API)
    body = disp.order_body(view.order_id)
    assert body["patient"]["name"] == "Zoë O'Brien-王\u00a0建国"
    assert body["delivery"]["address"] == "No. 1 «Anshan» Road; 3/F — Heping, Tianjin"
