"""submit, orders, order, holds, release, reject, cancel against a running dispenserd."""

from __future__ import annotations

import json

from dispenser.testing import drugs, order
from dispenser.testing.cli import Machine

ROBOT_DRUG = drugs()["robot"][0]["drug_code"]
UNKNOWN_DRUG = "06900000099999"


def lines(*rows: object) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def test_submit_reports_every_refused_line_and_exits_4(machine: Machine, tmp_path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text(lines(
        order("SUB-1", "P-SUB1", [(ROBOT_DRUG, 1)]),
        "",  # blank lines are skipped but still counted, as an editor numbers them
        order("SUB-2", "P-SUB2", [(ROBOT_DRUG, 1)], diagnoses=("J45",)),  # held: eligibility
        '{"order_id": "SUB-3", ',  # malformed
        order("SUB-4", "P-SUB4", [(UNKNOWN_DRUG, 1)]),
    ))
    ran = machine.ctl("submit", str(path))
    assert ran.code == 4, ran
    assert "4 lines: 2 accepted (1 held for a pharmacist), 2 refused" in ran.out
    assert "line 3 (SUB-2): held" in ran.out
    assert "line 4: not valid JSON" in ran.out
    assert "line 5 (SUB-4): " in ran.out and "(unknown_drug)" in ran.out
    assert f"unknown drug codes: {UNKNOWN_DRUG}" in ran.out

    # The same file again: accepted orders are idempotent, refusals reported again.
    again = machine.ctl("submit", str(path), "--json")
    assert again.code == 4
    report = json.loads(again.out)
    assert report["accepted"] == 2 and report["refused"] == 2
    by_line = {row["line"]: row for row in report["results"]}
    assert by_line[1]["order_id"] == "SUB-1" and "error" not in by_line[1]
    assert by_line[3]["state"] == "held"
    assert by_line[4]["error"]["code"] == -32700
    assert by_line[5]["error"]["code"] == -32002
    assert by_line[5]["error"]["codes"] == [UNKNOWN_DRUG]


def test_submit_from_stdin_lists_each_field_error(machine: Machine) -> None:
    bad = order("SUB-5", "P-SUB5", [(ROBOT_DRUG, 0)])
    del bad["delivery"]
    ran = machine.ctl("submit", "-", stdin=lines(bad, order("SUB-6", "P-SUB6",
                                                            [(ROBOT_DRUG, 1)])))
    assert ran.code == 4, ran
    assert "line 1 (SUB-5)" in ran.out and "(invalid_order)" in ran.out
    assert "  delivery: required field is missing" in ran.out
    assert "  items.0.quantity: " in ran.out


def test_submit_all_accepted_exits_0(machine: Machine) -> None:
    ran = machine.ctl("submit", "-", "--chunk", "1", stdin=lines(
        order("SUB-7", "P-SUB7", [(ROBOT_DRUG, 1)]), order("SUB-8", "P-SUB8", [(ROBOT_DRUG, 1)])))
    assert ran.code == 0, ran
    assert "2 lines: 2 accepted, 0 refused" in ran.out


def test_orders_json_is_the_raw_page_without_patient_data(machine: Machine) -> None:
    machine.ctl("submit", "-", stdin=lines(order("LST-1", "P-LST1", [(ROBOT_DRUG, 1)])))
    ran = machine.ctl("orders", "--json", "--limit", "1000")
    assert ran.code == 0, ran
    page = json.loads(ran.out)
    assert set(page) == {"items", "next"}
    listed = {o["order_id"]: o for o in page["items"]}
    assert "LST-1" in listed
    assert "patient" not in listed["LST-1"] and "+86" not in ran.out

    table = machine.ctl("orders")
    assert "LST-1" in table.out and "+86" not in table.out and "Test Patient" not in table.out

    detail = machine.ctl("order", "LST-1")
    assert detail.code == 0
    assert "Test Patient P-LST1" in detail.out  # the full view is where patient data is
    # Only what order.get returns: no "updated" row that could only ever show "-".
    assert "updated" not in detail.out and "updated_at" not in json.loads(
        machine.ctl("order", "LST-1", "--json").out)


def test_holds_release_and_reject(machine: Machine) -> None:
    machine.ctl("submit", "-", stdin=lines(
        order("HLD-1", "P-HLD1", [(ROBOT_DRUG, 1)], diagnoses=("J45",)),
        order("HLD-2", "P-HLD2", [(ROBOT_DRUG, 1)], diagnoses=("J45",))))
    holds = machine.ctl("holds")
    assert holds.code == 0
    assert "HLD-1" in holds.out and "not_eligible" in holds.out

    released = machine.ctl("release", "HLD-1", "--reason", "checked with prescriber")
    assert released.code == 0, released
    assert "order HLD-1 is now" in released.out
    rejected = machine.ctl("reject", "HLD-2", "--reason", "not in the programme", "--json")
    assert rejected.code == 0
    assert json.loads(rejected.out)["state"] == "rejected"

    again = machine.ctl("reject", "HLD-2", "--reason", "twice")
    assert again.code == 1
    assert "(wrong_state)" in again.err and again.out == ""
    # Released: no longer held for eligibility (it may wait for stock, which is not a hold a
    # pharmacist clears).
    reasons = json.loads(machine.ctl("order", "HLD-1", "--json").out)["hold_reasons"]
    assert "not_eligible" not in {r["code"] for r in reasons}


def test_cancel_and_not_found(machine: Machine) -> None:
    machine.ctl("submit", "-", stdin=lines(order("CNL-1", "P-CNL1", [(ROBOT_DRUG, 1)])))
    ran = machine.ctl("cancel", "CNL-1", "--reason", "patient request")
    assert ran.code == 0 and "order CNL-1 is now cancelled" in ran.out

    missing = machine.ctl("order", "NO-SUCH-ORDER")
    assert missing.code == 1
    assert "(not_found)" in missing.err

    as_json = machine.ctl("order", "NO-SUCH-ORDER", "--json")
    assert as_json.code == 1 and as_json.out == ""
    error = json.loads(as_json.err)
    assert error["exit_code"] == 1
    assert error["error"]["code"] == -32003 and error["error"]["name"] == "not_found"
