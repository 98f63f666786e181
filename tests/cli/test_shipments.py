"""A shipment from order to label: shipments, shipment, confirm-manual, reprint."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from dispenser.testing import drugs, order, pack, scan, wait_until
from dispenser.testing.cli import Machine

ROBOT_DRUG = drugs()["robot"][2]["drug_code"]
FRIDGE_DRUG = drugs()["fridge"][0]["drug_code"]


def _order(machine: Machine, order_id: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(machine.ctl("order", order_id, "--json").out)
    return result


def test_manual_pick_confirmed_by_scan_then_label_reprinted(machine: Machine) -> None:
    robot_pack = pack(ROBOT_DRUG, "SH01", date.today() + timedelta(days=400), "CLI-SH-1")
    machine.sim_call("sim.put_input", {"packs": [robot_pack]})
    assert machine.ctl("load", stdin=scan(robot_pack) + "\n").code == 0
    body = order("SHP-1", "P-SHP1", [(ROBOT_DRUG, 1), (FRIDGE_DRUG, 1)], priority="urgent")
    assert machine.ctl("submit", "-", stdin=json.dumps(body) + "\n").code == 0

    waiting = wait_until(lambda: (o := _order(machine, "SHP-1"))["state"] == "labelling" and o,
                         "the robot part picked")
    shipment_id = waiting["shipment_id"]
    listed = machine.ctl("shipments", "--state", "labelling")
    assert shipment_id in listed.out and "SHP-1" in listed.out
    assert "Test Patient" not in listed.out

    shown = machine.ctl("shipment", shipment_id)
    assert shown.code == 0, shown
    assert "Manual picks" in shown.out and FRIDGE_DRUG in shown.out
    assert "Test Patient P-SHP1" in shown.out and "CLI-SH-1" in shown.out

    wrong = machine.ctl("confirm-manual", shipment_id, scan(robot_pack))
    assert wrong.code == 1 and "(load_refused)" in wrong.err, wrong
    assert "reason: " in wrong.err

    fridge_pack = pack(FRIDGE_DRUG, "FR1", date.today() + timedelta(days=90), "CLI-FR-1")
    confirmed = machine.ctl("confirm-manual", shipment_id, scan(fridge_pack))
    assert confirmed.code == 0, confirmed
    assert f"{FRIDGE_DRUG}: 1/1 confirmed" in confirmed.out

    wait_until(lambda: _order(machine, "SHP-1")["state"] == "completed", "SHP-1 completed")
    reprint = machine.ctl("reprint", shipment_id, "--what", "label")
    assert reprint.code == 0, reprint
    assert f"label of {shipment_id} printed" in reprint.out

    missing = machine.ctl("reprint", "SH-NOPE")
    assert missing.code == 1 and "(not_found)" in missing.err
