"""status, top, pause/resume, faults and ack, diagnostics, audit verify."""

from __future__ import annotations

import json

from dispenser.testing import wait_until
from dispenser.testing.cli import Machine


def test_status_and_top_once(machine: Machine) -> None:
    ran = machine.ctl("status")
    assert ran.code == 0, ran
    assert "machine" in ran.out and "ready" in ran.out and "link up" in ran.out
    status = json.loads(machine.ctl("status", "--json").out)
    assert status["state"] == "ready"

    top = machine.ctl("top", "--once", role="technician")
    assert top.code == 0, top
    assert "picks/h" in top.out and "ready" in top.out and "Open faults" not in top.err
    frame = json.loads(machine.ctl("top", "--json", role="technician").out)
    assert frame["status"]["state"] == "ready" and frame["faults"] == []
    assert isinstance(frame["picks_per_hour"], float)

    # An order system may watch too; what its role may not read is said, not an error.
    limited = machine.ctl("top", "--once", role="order_system")
    assert limited.code == 0, limited
    assert "needs the staff role" in limited.out and "needs the technician role" in limited.out


def test_pause_and_resume(machine: Machine) -> None:
    paused = machine.ctl("pause", "--reason", "tote change")
    try:
        assert paused.code == 0 and "machine is paused: tote change" in paused.out
        twice = machine.ctl("pause")
        assert twice.code == 1 and "(wrong_state)" in twice.err
        # status says why and who paused the machine
        status = json.loads(machine.ctl("status", "--json").out)
        assert status["state"] == "paused"
        assert status["pause"]["reason"] == "tote change"
        assert status["pause"]["by"] == "staff-test" and status["pause"]["at"]
        shown = machine.ctl("status").out
        assert "paused: tote change (by staff-test since " in shown, shown
    finally:
        resumed = machine.ctl("resume")  # the other tests need a ready machine
    assert resumed.code == 0 and "machine is ready" in resumed.out
    assert json.loads(machine.ctl("status", "--json").out)["pause"] is None


def _open_faults(machine: Machine) -> list[dict[str, object]]:
    items: list[dict[str, object]] = json.loads(machine.ctl("faults", "--json").out)["items"]
    return items


def test_fault_shown_then_acknowledged_once_cleared(machine: Machine) -> None:
    machine.sim_call("sim.inject", {"fault": "door_open"})
    try:
        [fault] = wait_until(lambda: _open_faults(machine), "the door fault")
        assert fault["kind"] == "door_open"
        shown = machine.ctl("faults")
        assert "door_open" in shown.out and "open" in shown.out

        # The door is still open: the robot refuses the RESET and the fault stays.
        early = machine.ctl("ack", str(fault["fault_id"]))
        assert early.code == 1 and "(hardware)" in early.err, early
    finally:
        machine.sim_call("sim.clear", {"fault": "door_open"})
    acked = machine.ctl("ack", str(fault["fault_id"]), "--note", "door closed")
    assert acked.code == 0, acked
    assert f"fault {fault['fault_id']} (door_open) acknowledged by staff-test" in acked.out
    assert _open_faults(machine) == []
    history = machine.ctl("faults", "--all", "--json")
    [record] = [f for f in json.loads(history.out)["items"]
                if f["fault_id"] == fault["fault_id"]]
    assert record["note"] == "door closed" and record["acked_by"] == "staff-test"
    wait_until(lambda: json.loads(machine.ctl("status", "--json").out)["state"] == "ready",
               "ready after the acknowledgement")
    assert machine.ctl("ack", str(fault["fault_id"])).code == 1  # already acknowledged


def test_diagnostics_as_technician(machine: Machine) -> None:
    regs = machine.ctl("diag", "registers", "0", "4", "--json", role="technician")
    assert regs.code == 0, regs
    result = json.loads(regs.out)
    assert result["address"] == 0 and len(result["values"]) == 4
    assert "0x" in machine.ctl("diag", "registers", "0x0", "2", role="technician").out
    assert machine.ctl("diag", "printer", role="technician").out.startswith("printer ready")
    assert "transactions" in machine.ctl("diag", "stats", role="technician").out
    selftest = machine.ctl("diag", "selftest", role="technician")
    assert selftest.code == 1 and "maintenance" in selftest.err  # not in maintenance mode
    # The refusal names the command to type, not the API method behind it.
    assert "dispenserctl maintenance on" in selftest.err, selftest
    assert "machine.maintenance" not in selftest.err


def test_bad_register_address_is_said_once(machine: Machine) -> None:
    ran = machine.ctl("diag", "registers", "99999", "4", role="technician")
    assert ran.code == 1
    assert ran.err.count("65535") == 1, ran.err
    assert ran.err.splitlines() == ["dispenserctl: invalid params (invalid_params)",
                                    "  address: Input should be less than or equal to 65535"]


def test_selftest_in_maintenance(machine: Machine) -> None:
    assert machine.ctl("maintenance", "on", role="staff").code == 1  # technicians only
    entered = machine.ctl("maintenance", "on", role="technician")
    try:
        assert entered.code == 0 and entered.out == "machine is in maintenance mode\n", entered
        ran = machine.ctl("diag", "selftest", "--slot", "5", role="technician")
        assert ran.code == 0, ran
        assert "self-test passed" in ran.out and "home" in ran.out and "scan_slot" in ran.out
    finally:
        left = machine.ctl("maintenance", "off", role="technician")
    assert left.code == 0, left
    wait_until(lambda: json.loads(machine.ctl("status", "--json").out)["state"] == "ready",
               "ready after maintenance")


def test_audit_verify(machine: Machine) -> None:
    ran = machine.ctl("audit", "verify", role="technician")
    assert ran.code == 0, ran
    assert "audit trail intact" in ran.out
    result = json.loads(machine.ctl("audit", "verify", "--json", role="technician").out)
    assert result["ok"] is True and result["records"] > 0
