"""API params are taken as JSON gives them; text that cannot be stored is refused, and the
audit row of a refused call survives broken text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.daemon import methods as m


@pytest.mark.parametrize(("model", "params"), [
    (m._Maintenance, {"on": "true"}),
    (m._Maintenance, {"on": 1}),
    (m._Registers, {"address": True, "count": 1}),
    (m._FaultAck, {"fault_id": True}),
    (m._FaultAck, {"fault_id": 2**64}),
    (m._FaultList, {"after": 2**64}),
    (m._StockList, {"after": 2**64}),
    (m._StockList, {"drug_code": "\ud800"}),
    (m._OrderList, {"after": "\ud800"}),
    (m._OrderList, {"limit": True}),
    (m._Load, {"scan": "x", "wait": "1"}),
    (m._Selftest, {"slot": "0"}),
    (m._Selftest, {"slot": 2**64}),
    (m._Pause, {"reason": 1}),
])
def test_wrong_types_and_unstorable_values_are_invalid_params(model: Any,
                                                              params: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as err:
        parse_params(model, params)
    assert err.value.code == ErrorCode.INVALID_PARAMS
    assert err.value.data["errors"]


def test_audit_summary_of_broken_text_is_storable() -> None:
    subject, safe = m.audit_summary("machine.pause", {"reason": 1, "order_id": "\ud800",
                                                      "fault_id": 2**70})
    text = json.dumps([subject, safe], ensure_ascii=False)
    text.encode("utf-8")  # does not raise
    assert safe["order_id"] == "\\ud800"
    assert safe["fault_id"] == str(2**70)


def test_orders_with_broken_text_are_invalid_orders_naming_the_field() -> None:
    assert m.broken_text({"patient": {"name": "ok", "phone": "x\ud800"}}) == "patient.phone"
    assert m.broken_text({"items": [{"drug_code": "1"}, {"\udcff": 1}]}) == "items.1.\udcff"
    assert m.broken_text({"a": ["fine", 1, None]}) is None
