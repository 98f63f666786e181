"""load from stdin (as a barcode scanner types), stock, quarantine, discrepancies."""

from __future__ import annotations

import json
from datetime import date, timedelta

from dispenser.testing import GS, drugs, pack, scan
from dispenser.testing.cli import Machine

DRUG = drugs()["robot"][1]["drug_code"]


def test_load_from_stdin_reports_each_line(machine: Machine) -> None:
    good = pack(DRUG, "LD01", date.today() + timedelta(days=400), "CLI-LD-1")
    expired = pack(DRUG, "LD02", date.today() - timedelta(days=1), "CLI-LD-2")
    machine.sim_call("sim.put_input", {"packs": [good]})
    typed = [
        scan(good).replace(GS, "<GS>"),  # a scanner that cannot type the control character
        "not a scan",
        scan(expired),
    ]
    ran = machine.ctl("load", stdin="\r\n".join(typed) + "\r\n")
    assert ran.code == 4, ran
    out = ran.out.splitlines()
    assert out[0].startswith("line 1: pack ") and f"{DRUG} batch LD01" in out[0]
    assert "-> slot " in out[0] and "(in_stock)" in out[0]
    assert out[1].startswith("line 2 (not a scan): ") and out[1].endswith("(load_refused)")
    assert out[2] == "  reason: unreadable"
    assert out[3].startswith(f"line 3 (]d201{DRUG}") and "<GS>21CLI-LD-2" in out[3]
    assert "reason: expired" in ran.out
    assert "3 scans: 1 loaded, 2 refused" in ran.out

    stock = machine.ctl("stock", "--drug", DRUG, "--json")
    assert stock.code == 0
    [stored] = [p for p in json.loads(stock.out)["items"] if p["serial"] == "CLI-LD-1"]
    assert stored["state"] == "in_stock" and stored["batch"] == "LD01"
    assert "CLI-LD-1" in machine.ctl("stock", "--drug", DRUG).out


def test_load_json_and_no_pack_at_input(machine: Machine, tmp_path) -> None:
    absent = pack(DRUG, "LD03", date.today() + timedelta(days=400), "CLI-LD-3")
    path = tmp_path / "scans.txt"
    path.write_text(scan(absent) + "\n")
    ran = machine.ctl("load", str(path), "--json")
    assert ran.code == 4
    report = json.loads(ran.out)
    assert report["accepted"] == 0 and report["refused"] == 1
    [row] = report["results"]
    assert row["line"] == 1 and row["scan"] == scan(absent)
    assert row["error"]["code"] == -32008 and row["error"]["reason"] == "no_pack_at_input"


def test_quarantine_and_discrepancies(machine: Machine) -> None:
    batch = pack(DRUG, "QR01", date.today() + timedelta(days=300), "CLI-QR-1")
    machine.sim_call("sim.put_input", {"packs": [batch]})
    assert machine.ctl("load", stdin=scan(batch) + "\n").code == 0
    ran = machine.ctl("quarantine", "--drug", DRUG, "--batch", "QR01", "--reason", "recall R-1")
    assert ran.code == 0, ran
    assert f"1 pack of {DRUG} batch QR01 quarantined" in ran.out
    listed = machine.ctl("stock", "--drug", DRUG, "--state", "quarantined")
    assert "CLI-QR-1" in listed.out and "quarantined" in listed.out

    assert machine.ctl("discrepancies").code == 0


def test_quarantine_takes_the_old_spelling_gtin_hidden(machine: Machine) -> None:
    batch = pack(DRUG, "QR02", date.today() + timedelta(days=300), "CLI-QR-2")
    machine.sim_call("sim.put_input", {"packs": [batch]})
    assert machine.ctl("load", stdin=scan(batch) + "\n").code == 0
    shown = machine.ctl("quarantine", "--help").out
    assert "--drug CODE" in shown and "--gtin" not in shown
    both = machine.ctl("quarantine", "--drug", DRUG, "--gtin", DRUG, "--batch", "QR02",
                       "--reason", "recall R-2")
    assert both.code == 2, both
    ran = machine.ctl("quarantine", "--gtin", DRUG, "--batch", "QR02", "--reason", "recall R-2")
    assert ran.code == 0, ran
    assert f"1 pack of {DRUG} batch QR02 quarantined" in ran.out
