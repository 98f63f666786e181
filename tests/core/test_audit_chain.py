"""The keyed audit chain and its checkpoint: what an intruder with the database (but not
the key) does is found, each kind of damage on its own with its first bad row."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from dispenser.journal import AuditKey, AuditKeyError, Journal, verify_journal
from dispenser.journal.audit import GENESIS, payload, plain_hash
from dispenser.journal.checkpoint import End, read

DATA = Path(__file__).parent / "data"


def _rows(j: Journal, n: int, start: int = 0) -> None:
    with j.transaction():
        for i in range(start, start + n):
            j.audit(f"2026-11-23T09:{i // 60:02d}:{i % 60:02d}+08:00", "li.pharm", "staff",
                    "order.released", f"SO-{i:04d}", {"state": "held"}, {"state": "received"})


def _keyed(tmp_path: Path, key: AuditKey, rows: int = 30) -> Path:
    path = tmp_path / "journal.sqlite"
    j = Journal(path, audit_key=key)
    _rows(j, rows)
    j.close()
    return path


def _raw(path: Path) -> sqlite3.Connection:
    raw = sqlite3.connect(path)
    raw.execute("DROP TRIGGER IF EXISTS audit_no_update")
    raw.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    raw.execute("DROP TRIGGER IF EXISTS audit_keys_no_update")
    raw.execute("DROP TRIGGER IF EXISTS audit_keys_no_delete")
    return raw


def _rehash_from(raw: sqlite3.Connection, first: int, mac: AuditKey | None) -> None:
    """What an intruder does: change row ``first`` and compute every later hash again."""
    raw.execute("UPDATE audit SET actor = 'mallory' WHERE id = ?", (first,))
    before = raw.execute("SELECT hash FROM audit WHERE id = ?", (first - 1,)).fetchone()
    prev = before[0] if before else GENESIS
    for row in raw.execute("SELECT id, time, actor, role, action, subject, before, after "
                           "FROM audit WHERE id >= ? ORDER BY id", (first,)).fetchall():
        data = payload(*row, prev)
        h = mac.mac(data) if mac is not None else plain_hash(data)
        raw.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev, h, row[0]))
        prev = h
    raw.commit()


def _kinds(findings: object) -> dict[str, int | None]:
    return {f.kind: f.first_bad_row for f in findings}  # type: ignore[attr-defined]


@pytest.fixture
def key() -> AuditKey:
    return AuditKey.generate()


def test_an_intact_keyed_chain_verifies_and_its_checkpoint_follows_each_commit(
        tmp_path: Path, key: AuditKey) -> None:
    j = Journal(tmp_path / "journal.sqlite", audit_key=key)
    assert j.tail_findings == [] and j.epochs[0].first_row == 1
    for n in range(5):
        _rows(j, 3, start=3 * n)
    assert j.flush_checkpoint()
    cp = read(j.checkpoint_path, key)
    assert cp is not None and cp["last_id"] == 16 and cp["first_keyed_row"] == 1
    assert cp["head"] == j.query_one("SELECT hash FROM audit WHERE id = 16")[0]
    result = j.verify()
    assert result.ok and result.keyed and result.rows == 16, result
    j.close()
    again = Journal(tmp_path / "journal.sqlite", audit_key=key)
    assert again.tail_findings == []
    again.close()


def test_a_journal_written_before_keying_keeps_verifying(tmp_path: Path,
                                                         key: AuditKey) -> None:
    path = tmp_path / "journal.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript((DATA / "journal-v0.1.0.sql").read_text())
    raw.execute("PRAGMA user_version = 2")
    raw.close()
    j = Journal(path, audit_key=key)
    assert j.tail_findings == []
    assert [(e.first_row, e.key_id) for e in j.epochs] == [(15, key.key_id)]
    keyed = j.query_one("SELECT action, after FROM audit WHERE id = 15")
    assert keyed[0] == "audit.keyed" and json.loads(keyed[1])["rows_before"] == 14
    _rows(j, 5)
    result = j.verify()
    assert result.ok and result.rows == 20 and result.keyed_from == 15, result
    j.close()
    # The plain rows are still checked as plain SHA-256 rows.
    raw = _raw(path)
    raw.execute("UPDATE audit SET actor = 'mallory' WHERE id = 3")
    raw.commit()
    raw.close()
    result = verify_journal(path, key)
    assert _kinds(result.findings) == {"altered": 3}, result


def test_a_cut_tail_is_a_missing_tail(tmp_path: Path, key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    intact = verify_journal(path, key)
    assert intact.ok, intact
    raw = _raw(path)
    raw.execute("DELETE FROM audit WHERE id > 21")  # the last 10 rows
    raw.commit()
    raw.close()
    result = verify_journal(path, key)
    assert _kinds(result.findings) == {"missing_tail": 22}, result
    assert "rows 22..31 are missing at the end" in result.reason  # type: ignore[operator]
    j = Journal(path, audit_key=key)
    assert _kinds(j.tail_findings) == {"missing_tail": 22}
    j.close()


@pytest.mark.parametrize("how", ["without a key", "with another key"])
def test_a_rehashed_chain_is_found_from_the_changed_row(tmp_path: Path, key: AuditKey,
                                                       how: str) -> None:
    path = _keyed(tmp_path, key)
    raw = _raw(path)
    _rehash_from(raw, 20, None if how == "without a key" else AuditKey.generate())
    raw.close()
    result = verify_journal(path, key)
    kinds = _kinds(result.findings)
    assert kinds["rehashed"] == 20 and result.first_bad_row == 20, result
    assert "gap" not in kinds and "missing_tail" not in kinds and "wrong_key" not in kinds
    j = Journal(path, audit_key=key)
    # At start only the tail is read: the head no longer matches the checkpoint.
    assert _kinds(j.tail_findings) == {"checkpoint": 31}, j.tail_findings
    j.close()


def test_a_wrong_key_is_named_as_such(tmp_path: Path, key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    other = AuditKey.generate()
    result = verify_journal(path, other)
    kinds = _kinds(result.findings)
    assert kinds["wrong_key"] == 1 and "rehashed" not in kinds, result
    with pytest.raises(AuditKeyError, match=f"key {other.key_id}.*keyed with \\(key "
                                            f"{key.key_id}\\)"):
        Journal(path, audit_key=other)
    # A key lost for good: a new epoch, in the audit trail; the old rows cannot be
    # authenticated any more and say so.
    j = Journal(path, audit_key=other, new_audit_key=True)
    assert [e.key_id for e in j.epochs] == [key.key_id, other.key_id]
    _rows(j, 2)
    j.close()
    result = verify_journal(path, other)
    assert _kinds(result.findings) == {"wrong_key": 1}, result
    assert result.rows == 34  # 31, the epoch row, 2 more


def test_a_gap_is_a_gap(tmp_path: Path, key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    raw = _raw(path)
    raw.execute("DELETE FROM audit WHERE id IN (12, 13)")
    raw.commit()
    raw.close()
    result = verify_journal(path, key)
    assert _kinds(result.findings) == {"gap": 14}, result
    assert "rows 12..13 are missing" in (result.reason or "")


def test_one_changed_row_is_an_altered_row(tmp_path: Path, key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    raw = _raw(path)
    raw.execute("UPDATE audit SET subject = 'SO-9999' WHERE id = 7")
    raw.commit()
    raw.close()
    assert _kinds(verify_journal(path, key).findings) == {"altered": 7}


def test_keying_record_removed_and_chain_rehashed_plain_is_found(tmp_path: Path,
                                                                 key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    raw = _raw(path)
    raw.execute("DELETE FROM audit_keys")
    _rehash_from(raw, 2, None)  # every row looks like a plain row of an old journal
    raw.close()
    result = verify_journal(path, key)
    assert not result.ok and "checkpoint" in _kinds(result.findings), result
    with pytest.raises(AssertionError):
        assert Journal(path, audit_key=key).tail_findings == []


def test_a_mismatch_holds_the_checkpoint_until_released(tmp_path: Path,
                                                         key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    raw = _raw(path)
    raw.execute("DELETE FROM audit WHERE id > 25")
    raw.commit()
    raw.close()
    j = Journal(path, audit_key=key)
    assert j.checkpoint_held
    _rows(j, 3)
    j.flush_checkpoint()
    assert read(j.checkpoint_path, key)["last_id"] == 31  # type: ignore[index]
    j.release_checkpoint()
    j.flush_checkpoint()
    assert read(j.checkpoint_path, key)["last_id"] == 28  # type: ignore[index]
    assert j.verify().ok
    j.close()


def test_an_altered_checkpoint_is_refused(tmp_path: Path, key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    cp_path = Path(str(path) + ".checkpoint")
    body = json.loads(cp_path.read_text())
    body["last_id"] = 20
    cp_path.write_text(json.dumps(body))
    j = Journal(path, audit_key=key)
    assert [f.kind for f in j.tail_findings] == ["checkpoint"]
    assert "altered" in j.tail_findings[0].message
    j.close()


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    made = AuditKey.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert AuditKey.load(path).key_id == made.key_id
    with pytest.raises(FileExistsError):
        AuditKey.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(AuditKeyError, match="may be read or written by others"):
        AuditKey.load(path)
    os.chmod(path, 0o640)
    with pytest.raises(AuditKeyError, match="mode 0640"):
        AuditKey.load(path)
    assert AuditKey.load(path, group_readable=True).key_id == made.key_id
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(AuditKeyError, match="is not a key"):
        AuditKey.load(bad)
    with pytest.raises(AuditKeyError, match="init-key"):
        AuditKey.load(tmp_path / "missing.key")


def test_checkpoints_are_written_in_order(tmp_path: Path, key: AuditKey) -> None:
    from dispenser.journal.checkpoint import CheckpointWriter

    cp = tmp_path / "x.checkpoint"
    writer = CheckpointWriter(cp, key)
    for n in range(1, 400):
        writer.post(End(n, f"{n:064x}", 1))
    writer.close()
    assert read(cp, key)["last_id"] == 399  # type: ignore[index]


# -- what is not detected (docs/reliability.md says so; these tests keep it honest) ----------


def test_limit_whoever_holds_the_key_can_rewrite_everything(tmp_path: Path,
                                                            key: AuditKey) -> None:
    from dispenser.journal.checkpoint import write

    path = _keyed(tmp_path, key)
    raw = _raw(path)
    _rehash_from(raw, 10, key)  # with the key itself
    top, head = raw.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    raw.close()
    write(str(path) + ".checkpoint", End(top, head, 1), key)
    assert verify_journal(path, key).ok
    j = Journal(path, audit_key=key)
    assert j.tail_findings == []
    j.close()


def test_limit_a_rollback_of_journal_and_checkpoint_together(tmp_path: Path,
                                                             key: AuditKey) -> None:
    import shutil

    path = _keyed(tmp_path, key)
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in (path.name, path.name + ".checkpoint"):
        shutil.copy(tmp_path / name, saved / name)
    j = Journal(path, audit_key=key)
    _rows(j, 10, start=100)
    j.close()
    for name in (path.name, path.name + ".checkpoint"):
        shutil.copy(saved / name, tmp_path / name)
    j = Journal(path, audit_key=key)
    assert j.tail_findings == [] and j.verify().ok
    j.close()


def test_limit_a_journal_made_to_look_unkeyed(tmp_path: Path, key: AuditKey) -> None:
    path = _keyed(tmp_path, key)
    raw = _raw(path)
    raw.execute("DELETE FROM audit_keys")
    _rehash_from(raw, 1, None)
    raw.close()
    Path(str(path) + ".checkpoint").unlink()
    j = Journal(path, audit_key=key)
    assert j.tail_findings == []
    keyed = j.query_one("SELECT id, after FROM audit WHERE action = 'audit.keyed' "
                        "ORDER BY id DESC LIMIT 1")
    assert keyed[0] == 32 and json.loads(keyed[1])["rows_before"] == 31  # what a person sees
    assert j.verify().ok
    j.close()


def test_a_missing_checkpoint_is_found_unless_keying_just_began(tmp_path: Path,
                                                                key: AuditKey) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, audit_key=key).close()  # a crash before the first checkpoint, say
    Path(str(path) + ".checkpoint").unlink()
    j = Journal(path, audit_key=key)
    assert j.tail_findings == []
    _rows(j, 3)
    j.close()
    Path(str(path) + ".checkpoint").unlink()
    j = Journal(path, audit_key=key)
    assert [f.kind for f in j.tail_findings] == ["checkpoint"]
    assert "is missing" in j.tail_findings[0].message
    j.close()
