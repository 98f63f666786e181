"""The pharmacist's desk end to end (issue 10): dispenserd with designated institutions
and a records feed, driven through its socket API and through dispenserctl."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.api.auth import hash_token
from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.testing import TOKENS, Daemon, order
from dispenser.testing.cli import run_in_terminal

CTL = Path(sys.executable).parent / "dispenserctl"
RECORDS_TOKEN = "tok-records"
HOSPITAL = {"code": "TMUGH", "name": "Tianjin Medical University General Hospital"}
ACARBOSE_CRANE = "06900000010006"
ACARBOSE_SERVIER = "06900000010143"


class FeedDaemon(Daemon):
    """dispenserd with two designated institutions and a token of the records role."""

    def write_config(self) -> Path:
        path = super().write_config()
        path.write_text(path.read_text() + f"""
[[api.tokens]]
role = "records"
hash = "{hash_token(RECORDS_TOKEN)}"
label = "hospital-feed"

[[institutions]]
code = "TMUGH"
name = "{HOSPITAL['name']}"

[[institutions]]
code = "TJ-DC1"
name = "Tianjin Diabetes Centre"
""")
        return path


@pytest.fixture
def feed(workdir: Path, sim: Any) -> Any:
    d = FeedDaemon(workdir, sim)
    yield d
    assert d.stop() == 0, d.log_tail()


def ctl(d: Daemon, *args: str, role: str = "staff") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPENSER_")}
    env.update({"DISPENSER_SOCKET": str(d.socket), "DISPENSER_TOKEN": TOKENS[role],
                "COLUMNS": "80"})
    return subprocess.run([str(CTL), *args], capture_output=True, text=True, env=env,
                          timeout=60, cwd=d.workdir)


def rx(rx_id: str, patient: str, atc: str, quantity: int = 3,
       institution: str = "TMUGH") -> dict[str, Any]:
    return {"id": rx_id, "institution": institution, "prescriber": "Dr Test",
            "patient_id": patient, "issued_on": (date.today() - timedelta(days=5)).isoformat(),
            "diagnoses": ["E11.9"], "items": [{"atc": atc, "quantity": quantity,
                                               "days_supply": 90}]}


def citing(order_id: str, patient: str, items: list[tuple[str, int]],
           prescription: str) -> dict[str, Any]:
    o = order(order_id, patient, items, prescription=prescription)
    o["prescription"].update(institution="TMUGH", prescriber="Dr Test")
    return o


async def test_feeds_checks_and_the_patients_record(feed: FeedDaemon) -> None:
    feed.start()
    records = await ApiClient.connect(str(feed.socket), token=RECORDS_TOKEN)
    shop = await feed.client("order_system")
    staff = await feed.client("staff")
    try:
        # The roles: the feed registers and imports, and may do nothing else.
        with pytest.raises(ApiError) as err:
            await records.call("order.list")
        assert err.value.code == ErrorCode.FORBIDDEN
        for client in (shop, staff):
            with pytest.raises(ApiError) as err:
                await client.call("prescriptions.register", {"prescriptions": [rx(
                    "RX-X", "P1", "A10BF01")]})
            assert err.value.code == ErrorCode.FORBIDDEN
        with pytest.raises(ApiError) as err:
            await shop.call("patient.get", {"patient_id": "P1"})
        assert err.value.code == ErrorCode.FORBIDDEN

        # Records: each answered; the order system may send them too.
        today = date.today()
        last_week = (today - timedelta(days=7)).isoformat()
        rec = {"record_id": "H-1", "source": HOSPITAL, "patient_id": "P1",
               "dispensed_on": last_week, "drug_code": ACARBOSE_CRANE, "quantity": 1,
               "days_supply": 30}
        out = await records.call("records.import", {"records": [
            rec, {**rec, "record_id": "H-2", "quantity": "1"}, {**rec, "source": 7}]})
        assert [r["status"] for r in out["results"]] == ["imported", "refused", "refused"]
        assert out["results"][1]["errors"][0]["path"] == "quantity"
        assert out["results"][2]["errors"][0]["path"] == "source"
        again = await shop.call("records.import", {"records": [rec]})
        assert again["results"][0]["status"] == "unchanged"

        # Prescriptions.
        reg = await records.call("prescriptions.register", {"prescriptions": [
            rx("RX-1", "P1", "A10BF01"), rx("RX-2", "P2", "A10BF01", quantity=1),
            rx("RX-3", "P3", "A10BF01", institution="CLINIC-9"), {"id": "RX-4"}]})
        assert [r.get("status") for r in reg["results"]] == [
            "registered", "registered", "registered", None]
        assert reg["results"][3]["error"]["code"] == int(ErrorCode.INVALID_ORDER)

        # Orders: the hospital's acarbose holds another maker's; provenance holds.
        v = await shop.call("order.submit", {"order": citing("O-1", "P1", [
            (ACARBOSE_SERVIER, 1)], "RX-1")})
        assert [h["code"] for h in v["hold_reasons"]] == ["duplicate_dispensing"]
        hold = v["hold_reasons"][0]
        assert f"dispensed {last_week} by {HOSPITAL['name']} (Beijing Double-Crane)" in \
            hold["detail"]
        assert hold["cause"]["ref"] == "H-1" and hold["cause"]["source"] == "TMUGH"
        v = await shop.call("order.submit", {"order": citing("O-2", "P2", [
            (ACARBOSE_SERVIER, 2)], "RX-2")})
        assert [h["code"] for h in v["hold_reasons"]] == ["prescription_exhausted"]
        v = await shop.call("order.submit", {"order": citing("O-3", "P3", [
            (ACARBOSE_SERVIER, 1)], "RX-3")})
        codes = [h["code"] for h in v["hold_reasons"]]
        assert "institution_not_designated" in codes
        v = await shop.call("order.submit", {"order": citing("O-4", "P4", [
            (ACARBOSE_SERVIER, 1)], "RX-404")})
        assert [h["code"] for h in v["hold_reasons"]] == ["prescription_unregistered"]

        # The patient's record, read by staff and audited with who read it.
        record = await staff.call("patient.get", {"patient_id": "P1"})
        assert record["history"][0]["record_id"] == "H-1"
        assert record["open_orders"][0]["order_id"] == "O-1"
        assert record["prescriptions"][0]["items"][0]["left"] == 2
        due = await staff.call("patient.renewals", {"within_days": 90})
        assert {r["patient_id"] for r in due["items"]} == {"P1", "P2", "P3"}

        # dispenserctl: the record on one 80-column screen, the holds with their causes.
        shown = ctl(feed, "patient", "P1")
        assert shown.returncode == 0, shown.stderr
        assert "Current supply" in shown.stdout and "acarbose" in shown.stdout
        assert "TMUGH" in shown.stdout and "O-1" in shown.stdout
        screen = run_in_terminal("patient", "P1", columns=80, lines=40, env={
            "DISPENSER_SOCKET": str(feed.socket), "DISPENSER_TOKEN": TOKENS["staff"]})
        assert screen.code == 0, screen.err
        assert max(len(line) for line in screen.out.splitlines()) <= 80
        assert "Current supply" in screen.out and "Open orders" in screen.out
        print(screen.out)
        holds = ctl(feed, "holds")
        assert holds.returncode == 0, holds.stderr
        assert "record H-1 of TMUGH" in holds.stdout
        assert "prescription RX-2 of TMUGH" in holds.stdout
        detail = ctl(feed, "order", "O-1")
        assert "record H-1 of TMUGH" in detail.stdout
        due_cli = ctl(feed, "renewals", "--within", "90")
        assert due_cli.returncode == 0 and "RX-1" in due_cli.stdout

        # import-records from CSV: summary, refused reasons in a file, exit 4.
        csv_file = feed.workdir / "claims.csv"
        csv_file.write_text(
            "record_id,source_code,source_name,patient_id,dispensed_on,drug_code,atc,"
            "quantity,days_supply\n"
            f"C-1,CLAIMS,Insurance claims,P5,{last_week},,A10BA02,2,30\n"
            f"C-2,CLAIMS,Insurance claims,P5,{last_week},06900000010007,,2,30\n"
            f"C-3,CLAIMS,Insurance claims,P6,{last_week},{ACARBOSE_CRANE},,two,30\n")
        ran = ctl(feed, "import-records", str(csv_file))
        assert ran.returncode == 4, ran.stderr
        assert "3 records: 1 imported, 0 unchanged, 2 refused" in ran.stdout
        refused = [json.loads(line) for line in
                   Path(f"{csv_file}.refused.jsonl").read_text().splitlines()]
        assert [(r["line"], r["errors"][0]["path"]) for r in refused] == [
            (3, "drug_code"), (4, "quantity")]
        ran = ctl(feed, "import-records", str(csv_file), "--json")
        assert json.loads(ran.stdout)["unchanged"] == 1
    finally:
        for client in (records, shop, staff):
            await client.close()
    # Every read of a patient's record is in the audit trail, with who read it.
    with sqlite3.connect(feed.journal_path) as db:
        reads = db.execute("SELECT actor, role, subject FROM audit "
                           "WHERE action = 'patient.read'").fetchall()
    assert reads == [("staff-test", "staff", "P1")] * 3


async def test_after_a_restart_the_checks_answer_while_the_indexes_are_built(
        feed: FeedDaemon) -> None:
    feed.start()
    records = await ApiClient.connect(str(feed.socket), token=RECORDS_TOKEN)
    try:
        last_week = (date.today() - timedelta(days=7)).isoformat()
        await records.call("records.import", {"records": [
            {"record_id": "H-1", "source": HOSPITAL, "patient_id": "P1",
             "dispensed_on": last_week, "drug_code": ACARBOSE_CRANE, "quantity": 1,
             "days_supply": 30}]})
        await records.call("prescriptions.register", {"prescriptions": [
            rx("RX-1", "P1", "A10BF01"), rx("RX-2", "P2", "A10BF01")]})
    finally:
        await records.close()
    assert feed.stop() == 0, feed.log_tail()
    feed.start()
    shop = await feed.client("order_system")
    try:
        # At once after the start, built or not: the same answers as before the restart.
        v = await shop.call("order.submit", {"order": citing("O-1", "P1", [
            (ACARBOSE_SERVIER, 1)], "RX-1")})
        assert [h["code"] for h in v["hold_reasons"]] == ["duplicate_dispensing"]
        v = await shop.call("order.submit", {"order": citing("O-2", "P2", [
            (ACARBOSE_SERVIER, 1)], "RX-2")})
        assert v["hold_reasons"] == []
    finally:
        await shop.close()
    # The indexes were built after the start, from the journal.
    logged = feed.log_path.read_text()
    for _ in range(100):
        if "check indexes built" in logged:
            break
        await asyncio.sleep(0.1)
        logged = feed.log_path.read_text()
    built = [line for line in logged.splitlines() if "check indexes built" in line]
    assert len(built) == 2, logged[-2000:]  # once per start
    last = json.loads(built[-1])
    assert (last["prescriptions"], last["patients_with_supply"]) == (2, 1)
