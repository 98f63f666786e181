"""The journal: migrations, append-only hash-chained audit, survival of SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispenser.core import Dispensary
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState, ShipmentState
from dispenser.core.stock import SlotGeometry
from dispenser.journal import CORE_MIGRATIONS, Journal, JournalError, Migration
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    PHARMACIST,
    Factory,
    FakeClock,
    load,
    make_order,
    robot_drugs,
)
from dispenser.testing.data import ROOT


def busy(d: Dispensary, clock: FakeClock) -> None:
    load(d, robot_drugs()[0], 3)
    a = d.submit(make_order([(robot_drugs()[0].drug_code, 1)]), API)
    d.submit(make_order(diagnoses=["I10"], patient="P2"), API)
    d.cancel(a.order_id, API, "x")
    d.quarantine_batch(robot_drugs()[0].drug_code, "B1", PHARMACIST, "recall")
    clock.advance(400)
    d.form_shipments()


def test_pragmas_and_migrations(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.db")
    assert j.query_one("PRAGMA journal_mode")[0] == "wal"
    assert j.query_one("PRAGMA synchronous")[0] == 2  # FULL
    assert j.query_one("PRAGMA foreign_keys")[0] == 1
    assert j.user_version == len(CORE_MIGRATIONS)
    j.close()
    extra = [Migration("daemon", 1, "robot tasks", "CREATE TABLE robot_tasks (id INTEGER);"),
             Migration("daemon", 2, "index", "CREATE INDEX robot_tasks_id ON robot_tasks(id);")]
    j = Journal(tmp_path / "j.db", extra_migrations=extra)
    assert j.user_version == len(CORE_MIGRATIONS) + 2
    j.close()
    j = Journal(tmp_path / "j.db", extra_migrations=extra)  # idempotent
    assert j.user_version == len(CORE_MIGRATIONS) + 2
    j.close()
    with pytest.raises(JournalError):
        Journal(tmp_path / "j.db", extra_migrations=[extra[0], extra[0]])


def test_audit_is_append_only(make: Factory, clock: FakeClock) -> None:
    d = make()
    busy(d, clock)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), d.journal.transaction():
        d.journal.write("UPDATE audit SET actor='x' WHERE id=1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"), d.journal.transaction():
        d.journal.write("DELETE FROM audit WHERE id=1")
    r = d.audit_verify()
    assert r.ok and r.rows > 10 and r.first_bad_row is None


@pytest.mark.parametrize("tamper", ["update", "delete", "insert"])
def test_verify_finds_the_first_tampered_row(make: Factory, clock: FakeClock,
                                             tamper: str) -> None:
    d = make()
    busy(d, clock)
    rows = d.audit_verify().rows
    raw = sqlite3.connect(d.journal.path)
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute("DROP TRIGGER audit_no_delete")
    if tamper == "update":
        raw.execute("UPDATE audit SET actor='mallory' WHERE id=7")
        expected = 7
    elif tamper == "delete":
        raw.execute("DELETE FROM audit WHERE id=5")
        expected = 6
    else:
        raw.execute("UPDATE audit SET id=id+1000 WHERE id>4")
        raw.execute("UPDATE audit SET id=id-999 WHERE id>1000")
        raw.execute("INSERT INTO audit SELECT 5, time, 'mallory', role, action, subject, "
                    "before, after, prev_hash, hash FROM audit WHERE id=4")
        expected = 5
    raw.commit()
    raw.close()
    r = d.audit_verify()
    assert not r.ok and r.first_bad_row == expected and r.reason
    assert r.rows <= rows + 1


def test_a_failed_call_leaves_memory_and_journal_as_before(make: Factory) -> None:
    d = make()
    load(d, robot_drugs()[0], 2)
    before = (dict(d.orders.live), d.audit_verify().rows)
    with pytest.raises(RuntimeError), d.batch():
        d.submit(make_order(), API)
        raise RuntimeError("power cut in the middle of a batch")
    assert (dict(d.orders.live), d.audit_verify().rows) == before


def test_a_caller_savepoint_rolled_back_after_a_call_is_undone_in_memory(
        make: Factory) -> None:
    d = make()
    with d.batch():
        kept = d.submit(make_order(patient="KEEP"), API)
        with pytest.raises(RuntimeError), d.journal.transaction():
            lost = d.submit(make_order(patient="LOSE"), API)
            raise RuntimeError("the caller's own step failed after the call")
    assert kept.order_id in d.orders.live and lost.order_id not in d.orders.live
    assert [o.order_id for o in d.list_orders()] == [kept.order_id]
    again = Dispensary(d.journal, d.formulary, d.policy, d.geometry, d.clock)
    assert again.orders.live == d.orders.live and again.shipments.live == d.shipments.live


def test_kill_at_random_moments_never_corrupts(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    rng = random.Random(1)
    reported: dict[str, set[str]] = {"pack": set(), "order": set(), "shipment": set()}
    start = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _round in range(5):
        proc = subprocess.Popen([sys.executable, "-m", "dispenser.testing.crash_writer",
                                 str(path), str(start)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # it is writing now
        assert first, proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        out = first + proc.stdout.read()
        proc.wait()
        for line in out.splitlines():
            kind, ident = line.split()
            reported[kind].add(ident)
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        j = Journal(path)
        d = Dispensary(j, DEMO_FORMULARY, Policy(), SlotGeometry(2, 10, 50, 10), FakeClock())
        assert d.audit_verify().ok
        orders = {r[0] for r in j.query("SELECT order_id FROM orders")}
        packs = {str(r[0]) for r in j.query("SELECT pack_id FROM packs")}
        shipments = {r[0] for r in j.query("SELECT shipment_id FROM shipments")}
        assert reported["order"] <= orders
        assert reported["pack"] <= packs
        assert reported["shipment"] <= shipments
        start = max(len(orders), len(packs)) + 1
        j.close()
    assert len(reported["order"]) > 5


def test_lists_page_in_arrival_order_and_filter_by_state(make: Factory,
                                                         clock: FakeClock) -> None:
    d = make()
    ids = [d.submit(make_order(patient=f"P{n}"), API).order_id for n in range(5)]
    held = d.submit(make_order(patient="P9", diagnoses=["I10"]), API).order_id
    first = d.list_orders(limit=2)
    assert [o.order_id for o in first] == ids[:2]
    assert [o.order_id for o in d.list_orders(limit=10, after=ids[1])] == [*ids[2:], held]
    assert [o.order_id for o in d.list_orders(state=OrderState.HELD)] == [held]
    clock.advance(d.policy.merge_window_s + 1)
    formed = [s.shipment_id for s in d.form_shipments()]
    assert len(formed) == 5
    assert [s.shipment_id for s in d.list_shipments(limit=2)] == formed[:2]
    assert [s.shipment_id for s in d.list_shipments(after=formed[2])] == formed[3:]
    short = d.list_shipments(state=ShipmentState.HELD)
    assert [s.shipment_id for s in short] == formed  # no stock loaded: all stock_short
    assert d.list_shipments(state=ShipmentState.QUEUED) == []
