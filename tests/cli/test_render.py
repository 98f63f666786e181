"""What people see: values shown as they are, every error detail, the pick rate."""

from __future__ import annotations

from rich.console import Console

from dispenser.cli.commands.stock import scan_text
from dispenser.cli.commands.top import PickRate
from dispenser.cli.render import error_lines, fault_table, order_table, when


def shown(renderable: object) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_values_are_never_read_as_markup() -> None:
    page = {"items": [{"order_id": "[bold]ORD-1[/bold]", "state": "held",
                       "hold_reasons": [{"code": "not_eligible"}]}], "next": "ORD-1"}
    text = shown(order_table(page))
    assert "[bold]ORD-1[/bold]" in text
    assert "more: repeat with --after ORD-1" in text


def test_error_lines_name_the_code_and_list_every_detail() -> None:
    lines = error_lines(-32001, "order refused", {"errors": [
        {"path": "items.0.quantity", "message": "must be at least 1"},
        {"path": "delivery", "message": "required field is missing"}]})
    assert lines == ["order refused (invalid_order)", "  items.0.quantity: must be at least 1",
                     "  delivery: required field is missing"]
    assert error_lines(-32005, "no", {"role": "order_system",
                                      "allowed_roles": ["staff", "technician"]}) == [
        "no (forbidden)", "  role: order_system", "  allowed roles: staff, technician"]
    assert error_lines("unknown_drug", "x", {"codes": ["1", "2"]})[1] == \
        "  unknown drug codes: 1, 2"


def test_open_and_acknowledged_faults() -> None:
    text = shown(fault_table({"items": [
        {"fault_id": 7, "kind": "jam", "raised_at": "2026-11-28T04:31:02.123+00:00",
         "acked_at": None, "context": {"slot": 812, "output": 3, "seq": None}},
        {"fault_id": 6, "kind": "door_open", "raised_at": "2026-11-28T04:01:00Z",
         "acked_at": "2026-11-28T04:02:00Z", "acked_by": "desk-1"}], "next": None}))
    assert "2026-11-28 04:31:02Z" in text and "open" in text and "slot=812, output=3" in text
    assert "desk-1" in text and "seq" not in text


def test_times_shortened_to_seconds() -> None:
    assert str(when("2026-11-28T04:10:00.5+00:00")) == "2026-11-28 04:10:00Z"
    assert str(when(None)) == "-"


def test_scanner_spellings_of_the_group_separator() -> None:
    gs = "\x1d"
    assert scan_text("]d2010690000001000617270630102311<GS>21A1") == \
        f"]d2010690000001000617270630102311{gs}21A1"
    assert scan_text("0106900000010006172706301023^]21A1 ") == \
        f"0106900000010006172706301023{gs}21A1"
    assert scan_text("01069000000100061727063010B\\x1d21A") == f"01069000000100061727063010B{gs}21A"


def test_pick_rate_since_start_then_over_the_window() -> None:
    rate = PickRate(window_s=60)
    assert rate.add(0.0, 100, uptime_s=3600.0) == (100.0, "since start")
    assert rate.add(5.0, 101, uptime_s=None) == (101 * 3600 / 3605, "since start")
    assert rate.add(30.0, 110, uptime_s=None) == (1200.0, "last 30 s")
    # The first sample is dropped once the next one is a whole window old.
    assert rate.add(120.0, 130, uptime_s=None) == ((130 - 110) * 3600 / 90, "last 90 s")
    assert rate.add(200.0, 140, uptime_s=None) == ((140 - 130) * 3600 / 80, "last 80 s")
    rate = PickRate(window_s=600)
    assert rate.add(0.0, 0, uptime_s=None) == (None, "measuring")
    assert rate.add(300.0, 50, uptime_s=None) == (600.0, "last 5 min")
