"""API params are taken as JSON gives them; text that cannot be stored is refused, and the
audit row of a refused call survives broken text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.daemon.methods import params as pm
from dispenser.daemon.methods.audit import audit_summary


@pytest.mark.parametrize(("model", "params"), [
    (pm.Maintenance, {"on": "true"}),
    (pm.Maintenance, {"on": 1}),
    (pm.Registers, {"address": True, "count": 1}),
    (pm.FaultAck, {"fault_id": True}),
    (pm.FaultAck, {"fault_id": 2**64}),
    (pm.FaultList, {"after": 2**64}),
    (pm.StockList, {"after": 2**64}),
    (pm.StockList, {"drug_code": "\ud800"}),
    (pm.OrderList, {"after": "\ud800"}),
    (pm.OrderList, {"limit": True}),
    (pm.Load, {"scan": "x", "wait": "1"}),
    (pm.Selftest, {"slot": "0"}),
    (pm.Selftest, {"slot": 2**64}),
    (pm.Pause, {"reason": 1}),
])
def test_wrong_types_and_unstorable_values_are_invalid_params(model: Any,
                                                              params: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as err:
        parse_params(model, params)
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert err.value.data["errors"]


def test_audit_summary_of_broken_text_is_storable() -> None:
    subject, safe = audit_summary("machine.pause", {"reason": 1, "order_id": "\ud800",
                                                      "fault_id": 2**70})
    text = json.dumps([subject, safe], ensure_ascii=False)
    text.encode("utf-8")  # does not raise
    assert safe["order_id"] == "\\ud800"
    assert safe["fault_id"] == str(2**70)


def test_orders_with_broken_text_are_invalid_orders_naming_the_field() -> None:
    assert pm.broken_text({"patient": {"name": "ok", "phone": "x\ud800"}}) == "patient.phone"
    assert pm.broken_text({"items": [{"drug_code": "1"}, {"\udcff": 1}]}) == "items.1.\udcff"
    assert pm.broken_text({"a": ["fine", 1, None]}) is None


@pytest.mark.parametrize(("model", "params", "field"), [
    (pm.OrderAction, {"order_id": "A-1", "reason": "r" * 501}, "reason"),
    (pm.Quarantine, {"drug_code": "06900000010006", "batch": "B1", "reason": "r" * 501}, "reason"),
    (pm.Pause, {"reason": "r" * 501}, "reason"),
    (pm.FaultAck, {"fault_id": 1, "note": "n" * 501}, "note"),
    (pm.Load, {"scan": "s" * 501}, "scan"),
    (pm.ConfirmManual, {"shipment_id": "SH-1", "scan": "s" * 501}, "scan"),
])
def test_free_text_longer_than_the_limit_is_refused_naming_the_field(
        model: Any, params: dict[str, Any], field: str) -> None:
    assert pm.MAX_TEXT == 500
    with pytest.raises(ApiError) as err:
        parse_params(model, params)
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert [e["path"] for e in err.value.data["errors"]] == [field]
    assert "500 characters" in err.value.message
    parse_params(model, {**params, field: params[field][:500]})  # the limit itself is fine


def test_audit_summary_keeps_a_bounded_part_of_long_values_and_says_so() -> None:
    subject, safe = audit_summary("order.cancel", {"order_id": "o" * 100_000,
                                                     "reason": "r" * 500_000,
                                                     "note": "fine"})
    assert subject == "o" * 500
    assert safe["order_id"] == "o" * 500 and safe["reason"] == "r" * 500
    assert safe["note"] == "fine"
    assert safe["truncated"] == {"order_id": 100_000, "reason": 500_000}
    assert len(json.dumps(safe)) < 2_000
    subject, safe = audit_summary("order.submit", {"order": {"order_id": "x" * 9000}})
    assert subject == "x" * 500 and safe["truncated"] == {"order.order_id": 9000}
    _, safe = audit_summary("machine.pause", {"reason": "short"})
    assert "truncated" not in safe


# Every free text a person reads back (reasons, notes; docs/api.md, Limits): a control
# character (C0, DEL, C1) could clear, move or retitle the screen of whoever reads it, as
# in an order's text (docs/orders.md).
FREE_TEXT_FIELDS = [
    (pm.OrderAction, {"order_id": "A-1"}, "reason"),
    (pm.Quarantine, {"drug_code": "06900000010006", "batch": "B1"}, "reason"),
    (pm.Pause, {}, "reason"),
    (pm.FaultAck, {"fault_id": 1}, "note"),
    (pm.RobotAdopt, {}, "note"),
]
CONTROLS = {"NUL": "\x00", "BEL": "\x07", "TAB": "\t", "LF": "\n", "CR": "\r",
            "ESC": "\x1b", "DEL": "\x7f", "CSI": "\x9b", "NEL": "\x85"}


@pytest.mark.parametrize(("model", "params", "field"), FREE_TEXT_FIELDS)
@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_control_characters_in_free_text_are_refused_naming_the_field(
        model: Any, params: dict[str, Any], field: str, name: str) -> None:
    char = CONTROLS[name]
    with pytest.raises(ApiError) as err:
        parse_params(model, {**params, field: f"jam{char}[2J cleared"})
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert err.value.data["errors"] == [
        {"path": field, "message": f"control character U+{ord(char):04X} at character 4 "
                                   "is not allowed in text; remove it"}]
    assert char not in err.value.message
    parse_params(model, {**params, field: "jam at output 2 \u2014 cleared, Zo\u00eb"})


QUARANTINE = {"batch": "B1", "reason": "recall R-1"}


@pytest.mark.parametrize("given", [{"drug_code": "06900000010006"}, {"gtin": "06900000010006"},
                                   {"drug_code": "06900000010006", "gtin": "06900000010006"}])
def test_quarantine_takes_drug_code_and_its_old_name_gtin(given: dict[str, str]) -> None:
    p = parse_params(pm.Quarantine, {**given, **QUARANTINE})
    assert (p.drug_code, p.batch) == ("06900000010006", "B1")


def test_quarantine_with_drug_code_and_gtin_differing_is_refused() -> None:
    with pytest.raises(ApiError) as err:
        parse_params(pm.Quarantine, {"drug_code": "06900000010006", "gtin": "06900000020005",
                                     **QUARANTINE})
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert err.value.data["errors"] == [{"path": "(params)", "message": (
        "drug_code and gtin differ: gtin is the old name of drug_code, give drug_code only")}]


def test_quarantine_without_a_drug_code_names_drug_code() -> None:
    with pytest.raises(ApiError) as err:
        parse_params(pm.Quarantine, QUARANTINE)
    assert [e["path"] for e in err.value.data["errors"]] == ["drug_code"]
    with pytest.raises(ApiError) as err:
        parse_params(pm.Quarantine, {"gtin": "0690000001000", **QUARANTINE})
    assert [e["path"] for e in err.value.data["errors"]] == ["drug_code"]


def test_audit_summary_keeps_the_drug_code_under_the_name_given() -> None:
    assert audit_summary("stock.quarantine", {"drug_code": "06900000010006", **QUARANTINE}) == (
        "06900000010006", {"drug_code": "06900000010006", **QUARANTINE})
    assert audit_summary("stock.quarantine", {"gtin": "06900000010006", **QUARANTINE}) == (
        "06900000010006", {"gtin": "06900000010006", **QUARANTINE})
