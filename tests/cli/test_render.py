"""What people see: values shown as they are, every error detail, the pick rate."""

from __future__ import annotations

from rich.console import Console

from dispenser.cli.commands.stock import scan_text
from dispenser.cli.commands.top import Frame, PickRate, Screen
from dispenser.cli.render import error_lines, fault_table, order_table, status_view, when
from dispenser.cli.sheet import Sheet


def shown(renderable: object) -> str:
    """As a terminal 200 columns wide shows it."""
    console = Console(width=200, force_terminal=True, color_system=None, record=True,
                      file=open("/dev/null", "w"))  # noqa: SIM115
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
    # A message that lists the field errors itself: each error is said once, on its line.
    errors = [{"path": "address", "message": "Input should be less than or equal to 65535"}]
    assert error_lines(-32602, "invalid params: address: Input should be less than or equal "
                       "to 65535", {"errors": errors}) == [
        "invalid params (invalid_params)",
        "  address: Input should be less than or equal to 65535"]


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


def on_terminal(renderable: object, width: int = 80, height: int = 24) -> list[str]:
    console = Console(width=width, height=height, force_terminal=True, color_system=None,
                      record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


def in_pipe(renderable: object) -> list[str]:
    console = Console(width=80, force_terminal=False, record=True,
                      file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable, soft_wrap=True)
    return console.export_text().splitlines()


FAULT = {"fault_id": 1207, "kind": "unrecorded_move", "raised_at": "2026-11-28T04:31:02+00:00",
         "acked_at": None, "acked_by": None, "note": None,
         "context": {"seq": 4402, "command": "pick", "slot": 812, "output": 3,
                     "shipment_id": "SH-00000430", "robot_state": "FAULT",
                     "fault_code": "JAM"}}


def test_fault_list_at_80_columns_keeps_ids_whole_and_wraps_the_context() -> None:
    acked = {**FAULT, "fault_id": 1206, "kind": "door_open",
             "acked_at": "2026-11-28T04:02:00Z", "acked_by": "desk-1",
             "note": "door closed after a tote change"}
    lines = on_terminal(fault_table({"items": [FAULT, acked], "next": None}))
    assert all(len(line) <= 80 for line in lines)
    words = {w for line in lines for w in line.replace("│", " ").replace(",", " ").split()}
    assert {"1207", "unrecorded_move", "1206", "door_open", "open",
            "shipment_id=SH-00000430"} <= words, "\n".join(lines)
    assert not any("…" in line for line in lines)


def test_least_important_columns_go_first() -> None:
    sheet = order_table({"items": [{
        "order_id": "DEMO-20261128102816-0001", "state": "labelling", "patient_id": "P10281600",
        "shipment_id": "SH-00000001", "received_at": "2026-11-28T04:10:00+00:00",
        "items": [{"quantity": 2}, {"quantity": 1}],
        "hold_reasons": []}], "next": None})
    assert isinstance(sheet, Sheet)
    header = [on_terminal(sheet, width)[1].replace("│", " ").split() for width in (160, 95, 80,
                                                                                    60)]
    assert header[0] == ["order", "state", "patient", "shipment", "received", "lines", "packs",
                         "holds"]
    assert header[1] == ["order", "state", "patient", "shipment", "lines", "packs", "holds"]
    assert header[2] == ["order", "state", "shipment", "lines", "packs", "holds"]
    assert header[3] == ["order", "state", "shipment", "holds"]


def test_a_terminal_too_narrow_folds_an_id_but_cuts_nothing() -> None:
    lines = on_terminal(order_table({"items": [{"order_id": "DEMO-20261128102816-0001",
                                                "state": "labelling"}], "next": None}), 30)
    assert all(len(line) <= 30 for line in lines)
    assert "DEMO-20261128102816-0001" in "".join(line.split("│")[0].strip() for line in lines)
    assert not any("…" in line for line in lines)


def test_plain_output_is_one_word_per_cell() -> None:
    lines = in_pipe(fault_table({"items": [FAULT], "next": 1207}))
    assert lines[0].split() == ["fault", "kind", "raised", "acked", "by", "context", "note"]
    assert lines[1].split() == ["1207", "unrecorded_move", "2026-11-28T04:31:02Z", "open", "-",
                                "seq=4402,command=pick,slot=812,output=3,shipment_id=SH-00000430,"
                                "robot_state=FAULT,fault_code=JAM", "-"]
    assert len(lines) == 2  # the page hint goes to stderr (Context.print), not here


def _shipment(n: int) -> dict[str, object]:
    return {"shipment_id": f"SH-{n:08d}", "state": "picking", "patient_id": f"P{n:05d}",
            "order_ids": [f"DEMO-20261128-{n:04d}"], "output": n % 4 + 1, "fridge": False,
            "item_count": 3, "picked": 1, "created_at": "2026-11-28T04:10:00+00:00"}


STATUS = {"state": "ready", "robot": {"link": "up", "machine_state": "BUSY", "queue_depth": 3,
                                     "queue_capacity": 32},
          "printer": {"waiting": [], "reasons": []},
          "outputs": [{"output": k, "shipment_id": None} for k in range(1, 5)],
          "shipments": {"picking": 30}, "orders": {"picking": 30, "held": 3},
          "held_orders": {"checks": 1, "stock_short": 2}}


def test_top_fits_the_terminal_height_and_says_what_is_left_out() -> None:
    frame = Frame(STATUS, [_shipment(n) for n in range(1, 31)], [FAULT], 412.0, "last 5 min")
    lines = on_terminal(Screen(frame, "2026-11-28 04:10:00Z"), 80, 24)
    assert len(lines) <= 23 and all(len(line) <= 80 for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    assert "orders     picking 30, held 3 (checks 1, stock_short 2)" in text
    assert "SH-00000001" in text and "SH-00000030" not in text
    shown = sum("SH-000000" in line.split("│")[0] for line in lines)
    assert f"+ {30 - shown} more shipments (dispenserctl shipments)" in text, text
    assert "1207" in text and "unrecorded_move" in text  # the open fault is always shown

    everything = in_pipe(Screen(frame, "2026-11-28 04:10:00Z"))
    assert sum("SH-000000" in line for line in everything) == 30  # a pipe gets all of it


def test_top_cuts_shipments_before_open_faults() -> None:
    faults = [{**FAULT, "fault_id": 1207 - k} for k in range(6)]
    frame = Frame(STATUS, [_shipment(n) for n in range(1, 31)], faults, None, "measuring")
    lines = on_terminal(Screen(frame, "2026-11-28 04:10:00Z"), 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 23, text
    assert "+ 30 more shipments (dispenserctl shipments)" in text
    assert "1207" in text and "more open faults (dispenserctl faults)" in text


def test_status_tells_staff_to_take_a_refused_pack_off_the_input_point() -> None:
    status = {"state": "ready", "input_blocked": {
        "pack_id": 7, "drug_code": "06900000014349", "batch": "L1", "serial": "S0042",
        "expiry": "2027-09-29", "reason": "robot: mixed_slot",
        "action": "take the pack off the input point, then scan the next one"}}
    text = shown(status_view(status))
    assert "take the pack off the input point: serial S0042, batch L1 (robot: mixed_slot)" \
        in text
    assert "input point" not in shown(status_view({"state": "ready", "input_blocked": None}))


def test_status_says_a_robot_waits_to_be_adopted_and_then_counts() -> None:
    waiting = shown(status_view({"state": "maintenance", "robot_adoption": {
        "state": "waiting", "robot": {}, "action": "..."}}))
    assert "dispenserctl robot adopt" in waiting
    counting = shown(status_view({"state": "maintenance", "robot_adoption": {
        "state": "counting", "adoption_id": 1, "slots_to_count": [3, 5, 8],
        "counted": [3]}}))
    assert "1 of 3 counted" in counting
