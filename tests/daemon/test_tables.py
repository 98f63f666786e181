"""The daemon's journal tables: intents and the completion cursor, totes, faults."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dispenser.daemon.faults import FaultLog
from dispenser.daemon.ledger import Intent, IntentLog
from dispenser.daemon.robot import Motion
from dispenser.daemon.schema import DAEMON_MIGRATIONS
from dispenser.daemon.totes import ToteLog
from dispenser.journal import Journal, Migration

NOW = "2026-11-28T04:00:00+00:00"


def _journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j.sqlite", extra_migrations=DAEMON_MIGRATIONS)


def test_intents_void_complete_and_cursor(tmp_path: Path) -> None:
    rl = IntentLog(_journal(tmp_path))
    assert rl.max_seq() == 0 and rl.applied_completion() == 0
    with rl.journal.transaction():
        rl.add([Intent(s, Motion.PICK, 10 + s, 1, 1, shipment_id="SH-1") for s in (1, 2, 3)],
               NOW)
    assert [i.seq for i in rl.planned()] == [1, 2, 3]
    with rl.journal.transaction():
        voided = rl.void_above(1, NOW)
    assert [i.seq for i in voided] == [2, 3]
    with rl.journal.transaction():
        rl.complete(1, 7, 0, 1, NOW)
    assert rl.planned() == [] and rl.applied_completion() == 7
    assert rl.max_seq() == 3  # void seqs are never reused
    with rl.journal.transaction():
        rl.advance(5)  # the cursor never goes back
    assert rl.applied_completion() == 7
    assert rl.history("SH-1") == [(1, "pick", 1, 0, 1), (2, "pick", 1, None, None),
                                  (3, "pick", 1, None, None)]


def test_migration_survives_reopen(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    with j.transaction():
        IntentLog(j).add([Intent(1, Motion.HOME, 0, 0, 0)], NOW)
    j.close()
    again = IntentLog(_journal(tmp_path))
    assert [i.motion for i in again.planned()] == [Motion.HOME]


def test_journal_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    """A journal written when a tote was 'released' opens with hand-ons."""
    path = tmp_path / "old.sqlite"
    Journal(path, extra_migrations=DAEMON_MIGRATIONS[:1]).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO robot_intents (seq, opcode, slot, output, count, purpose, "
                 "shipment_id, state, planned_at) VALUES (1, 4, 0, 2, 0, 'release', 'SH-1', "
                 "'planned', ?)", (NOW,))
    conn.execute("INSERT INTO totes VALUES ('SH-1', 2, ?, ?, ?)", (NOW, NOW, NOW))
    conn.commit()
    conn.close()
    j = Journal(path, extra_migrations=DAEMON_MIGRATIONS)
    assert [(i.seq, i.motion) for i in IntentLog(j).planned()] == [(1, Motion.HAND_ON)]
    record = ToteLog(j).get("SH-1")
    assert record is not None and record.handed_on and record.printed
    assert isinstance(DAEMON_MIGRATIONS[1], Migration)


def test_totes_and_faults(tmp_path: Path) -> None:
    j = _journal(tmp_path)
    totes, faults = ToteLog(j), FaultLog(j)
    with j.transaction():
        totes.assign("SH-1", 2, NOW)
        totes.assign("SH-2", 3, NOW)
        totes.mark_printed("SH-1", NOW)
        totes.mark_handed_on("SH-2", NOW)
    assert [(t.shipment_id, t.output, t.printed) for t in totes.open()] == [("SH-1", 2, True)]
    with j.transaction():
        totes.move("SH-1", 4)
    tote = totes.get("SH-1")
    assert tote is not None and tote.output == 4 and not tote.handed_on
    with j.transaction():
        ids = [faults.add(k, "m", {"slot": 5}, NOW) for k in ("jam", "estop", "door_open")]
        faults.ack(ids[0], "alice", "staff", "cleared", NOW)
    active = faults.page(active=True)
    assert [f.kind for f in active] == ["door_open", "estop"]
    first = faults.get(ids[0])
    assert first is not None and not first.active and first.acked_role == "staff"
    assert first.context == {"slot": 5}
    page = faults.page(limit=2)
    assert [f.fault_id for f in page] == [ids[2], ids[1]]
    assert [f.fault_id for f in faults.page(limit=2, after=ids[1])] == [ids[0]]
