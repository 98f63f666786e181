"""The keyed audit trail with the real processes: rows cut or rewritten while the daemon was
stopped are found when it starts (a latched ``audit`` fault, no picking unless the policy
says so), and ``audit verify`` names each kind of damage; a wrong key stops the start."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from datetime import date, timedelta
from pathlib import Path

from dispenser.api.client import ApiClient
from dispenser.daemon.schema import DAEMON_MIGRATIONS
from dispenser.journal import AuditKey, Journal
from dispenser.journal.audit import payload, plain_hash
from dispenser.testing import BIN, TOKENS, Daemon, Sim, drugs, load_packs, order, pack, wait_for


async def _dispense_one(d: Daemon, sim: Sim, client: ApiClient, tag: str) -> None:
    code = drugs()["robot"][70]["drug_code"]
    exp = date.today() + timedelta(days=300)
    await load_packs(sim, client, [pack(code, tag, exp, f"{tag}-1")])
    await client.call("order.submit", {"order": order(tag, f"P{tag}", [(code, 1)])})
    await _completed(client, tag)


async def _completed(client: ApiClient, order_id: str) -> None:
    async def done() -> bool:
        got = await client.call("order.get", {"order_id": order_id})
        return bool(got["state"] == "completed")
    await wait_for(done, 30, what=f"order {order_id} completed")


def _tamper(path: Path) -> sqlite3.Connection:
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute("DROP TRIGGER audit_no_delete")
    return raw


def _ctl(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "dispenserctl"), "--socket", str(d.socket), "--token",
                           TOKENS["technician"], *args], capture_output=True, text=True,
                          timeout=60)


async def _audit_fault(client: ApiClient) -> dict[str, object]:
    status = await client.call("machine.status")
    faults = (await client.call("fault.list", {"active": True}))["items"]
    (fault,) = [f for f in faults if f["kind"] == "audit"]
    return {"status": status, "fault": fault}


async def test_a_cut_tail_latches_an_audit_fault_and_nothing_is_picked(
        workdir: Path, sim: Sim, daemon: Daemon) -> None:
    daemon.start()
    tech = await daemon.client("technician")
    await daemon.wait_ready(tech)
    await _dispense_one(daemon, sim, tech, "AT1")
    await tech.close()
    assert daemon.stop() == 0
    with _tamper(daemon.journal_path) as raw:
        top = raw.execute("SELECT max(id) FROM audit").fetchone()[0]
        raw.execute("DELETE FROM audit WHERE id > ?", (top - 5,))  # the last 5 rows

    daemon.start()
    tech = await daemon.client("technician")
    seen = await _audit_fault(tech)
    assert seen["status"]["state"] == "fault", seen  # type: ignore[index]
    # No [journal] audit_key here: the key beside the journal is named at every start.
    assert daemon.log_path.read_text().count("audit key kept beside the journal") == 2
    assert "rows " in str(seen["fault"]) and "missing at the end" in str(seen["fault"])
    verify = await tech.call("audit.verify")
    kinds = {f["kind"]: f["first_bad_row"] for f in verify["findings"]}
    assert not verify["ok"] and kinds == {"missing_tail": top - 4}, verify
    ran = _ctl(daemon, "audit", "verify")
    assert ran.returncode == 5 and f"missing tail from record {top - 4}" in ran.stdout, ran

    # Nothing is picked while the fault is latched.
    code = drugs()["robot"][70]["drug_code"]
    accepted = (await sim.ledger())["robot"]["last_accepted_seq"]
    await tech.call("order.submit", {"order": order("AT2", "PAT2", [(code, 1)])})
    await asyncio.sleep(1.5)
    assert (await sim.ledger())["robot"]["last_accepted_seq"] == accepted
    assert (await tech.call("order.get", {"order_id": "AT2"}))["state"] == "received"

    # A person looked: acknowledged, the checkpoint follows the journal again.
    fault_id = seen["fault"]["fault_id"]  # type: ignore[index]
    await tech.call("fault.ack", {"fault_id": fault_id, "note": "restored from backup"})
    await daemon.wait_ready(tech)
    exp = date.today() + timedelta(days=300)
    await load_packs(sim, tech, [pack(code, "AT2", exp, "AT2-1")])
    await _completed(tech, "AT2")
    assert (await tech.call("audit.verify"))["ok"]
    await tech.close()
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.journal_path) as raw:
        actions = [r[0] for r in raw.execute(
            "SELECT action FROM audit WHERE action LIKE 'audit.%' ORDER BY id")]
    assert actions == ["audit.keyed", "audit.mismatch", "audit.mismatch_acknowledged"]


async def test_with_policy_continue_the_fault_is_latched_but_dispensing_goes_on(
        workdir: Path, sim: Sim) -> None:
    daemon = Daemon(workdir, sim, audit_mismatch="continue")
    daemon.start()
    try:
        tech = await daemon.client("technician")
        await daemon.wait_ready(tech)
        await _dispense_one(daemon, sim, tech, "AC1")
        await tech.close()
        assert daemon.stop() == 0
        with _tamper(daemon.journal_path) as raw:
            raw.execute("DELETE FROM audit WHERE id > (SELECT max(id) - 3 FROM audit)")
        daemon.start()
        tech = await daemon.client("technician")
        await daemon.wait_ready(tech)
        seen = await _audit_fault(tech)
        assert seen["fault"]["active"]  # type: ignore[index]
        await _dispense_one(daemon, sim, tech, "AC2")
        await tech.close()
    finally:
        assert daemon.stop() == 0


async def test_a_rehashed_chain_is_found_at_start_and_by_verify(
        workdir: Path, sim: Sim, daemon: Daemon) -> None:
    daemon.start()
    tech = await daemon.client("technician")
    await daemon.wait_ready(tech)
    await _dispense_one(daemon, sim, tech, "AR1")
    await tech.close()
    assert daemon.stop() == 0
    with _tamper(daemon.journal_path) as raw:
        # Change a row in the middle and compute every later hash again, without the key.
        middle = raw.execute("SELECT max(id) / 2 FROM audit").fetchone()[0]
        raw.execute("UPDATE audit SET actor = 'mallory' WHERE id = ?", (middle,))
        prev = raw.execute("SELECT hash FROM audit WHERE id = ?", (middle - 1,)).fetchone()[0]
        for row in raw.execute("SELECT id, time, actor, role, action, subject, before, after "
                               "FROM audit WHERE id >= ? ORDER BY id", (middle,)).fetchall():
            h = plain_hash(payload(*row, prev))
            raw.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
                        (prev, h, row[0]))
            prev = h
    daemon.start()
    tech = await daemon.client("technician")
    seen = await _audit_fault(tech)
    assert seen["status"]["state"] == "fault"  # type: ignore[index]
    verify = await tech.call("audit.verify")
    kinds = {f["kind"]: f["first_bad_row"] for f in verify["findings"]}
    assert kinds["rehashed"] == middle and verify["first_bad_row"] == middle, verify
    assert "missing_tail" not in kinds and "gap" not in kinds, verify
    await tech.close()


async def test_a_gap_is_reported_as_a_gap(workdir: Path, sim: Sim, daemon: Daemon) -> None:
    daemon.start()
    tech = await daemon.client("technician")
    await daemon.wait_ready(tech)
    await _dispense_one(daemon, sim, tech, "AG1")
    await tech.close()
    assert daemon.stop() == 0
    with _tamper(daemon.journal_path) as raw:
        raw.execute("DELETE FROM audit WHERE id IN (5, 6, 7)")
    daemon.start()
    ran = _ctl(daemon, "audit", "verify", "--json")
    assert ran.returncode == 5, ran
    result = json.loads(ran.stdout)
    assert [(f["kind"], f["first_bad_row"]) for f in result["findings"]] == [("gap", 8)]


def test_a_wrong_key_or_a_key_others_may_read_stops_the_start(workdir: Path) -> None:
    key = workdir / "audit.key"
    made = subprocess.run([str(BIN / "dispenserctl"), "audit", "init-key", str(key)],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0 and "key id" in made.stdout, made
    robot = Sim(workdir, port=1502)  # never started: the daemon stops before it
    d = Daemon(workdir, robot, audit_key=key)
    Journal(d.journal_path, extra_migrations=DAEMON_MIGRATIONS,
            audit_key=AuditKey.load(key)).close()
    again = subprocess.run([str(BIN / "dispenserctl"), "audit", "init-key", str(key)],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "never overwritten" in again.stderr, again
    other = workdir / "other.key"
    AuditKey.create(other)
    d.audit_key = other
    code, out = d.run_to_exit()
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, out
    assert (f"(key {AuditKey.load(other).key_id}) is not the key the audit trail"
            in lines[0]), lines[0]
    other.chmod(0o644)
    code, out = d.run_to_exit()
    assert code == 2 and "may be read or written by others (mode 0644)" in out, out
