"""The daemon's journal tables: intents, the completion cursor, totes and faults."""

from __future__ import annotations

from pathlib import Path

from dispenser.daemon.robotlog import DAEMON_MIGRATIONS, Intent, RobotLog
from dispenser.journal import Journal

NOW = "2026-11-28T04:00:00+00:00"


def _log(tmp_path: Path) -> RobotLog:
    return RobotLog(Journal(tmp_path / "j.sqlite", extra_migrations=DAEMON_MIGRATIONS))


def test_intents_void_complete_and_cursor(tmp_path: Path) -> None:
    rl = _log(tmp_path)
    assert rl.max_seq() == 0 and rl.applied_completion() == 0
    with rl.journal.transaction():
        rl.add([Intent(s, 3, 10 + s, 1, 1, "pick", shipment_id="SH-1") for s in (1, 2, 3)],
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
    assert rl.history("SH-1") == [(1, 3, 1, 0, 1), (2, 3, 1, None, None), (3, 3, 1, None, None)]


def test_migration_survives_reopen(tmp_path: Path) -> None:
    rl = _log(tmp_path)
    with rl.journal.transaction():
        rl.add([Intent(1, 1, 0, 0, 0, "home")], NOW)
    rl.journal.close()
    again = _log(tmp_path)
    assert [i.purpose for i in again.planned()] == ["home"]


def test_totes_and_faults(tmp_path: Path) -> None:
    rl = _log(tmp_path)
    with rl.journal.transaction():
        rl.assign_tote("SH-1", 2, NOW)
        rl.assign_tote("SH-2", 3, NOW)
        rl.mark_printed("SH-1", NOW)
        rl.mark_released("SH-2", NOW)
    assert [(t.shipment_id, t.output, t.printed) for t in rl.open_totes()] == [("SH-1", 2, True)]
    with rl.journal.transaction():
        rl.move_tote("SH-1", 4)
    tote = rl.tote("SH-1")
    assert tote is not None and tote.output == 4 and not tote.released
    with rl.journal.transaction():
        ids = [rl.raise_fault(k, "m", {"slot": 5}, NOW) for k in ("jam", "estop", "door_open")]
        rl.ack_fault(ids[0], "alice", "staff", "cleared", NOW)
    active = rl.faults(active=True)
    assert [f.kind for f in active] == ["door_open", "estop"]
    first = rl.fault(ids[0])
    assert first is not None and not first.active and first.acked_role == "staff"
    assert first.context == {"slot": 5}
    page = rl.faults(limit=2)
    assert [f.fault_id for f in page] == [ids[2], ids[1]]
    assert [f.fault_id for f in rl.faults(limit=2, after=ids[1])] == [ids[0]]
