"""The words a person gets when the journal cannot be written: each cause its own message,
naming the filesystem that holds the journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dispenser.journal import Journal
from dispenser.journal.health import mount_point, unavailable


def _sqlite_error(tmp_path: Path, name: str, code: int) -> sqlite3.Error:
    # The library sets these on the errors it raises; the I/O error of a failing disk
    # cannot be caused at will, so its reading is checked on an error shaped like it.
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    return exc


def test_a_read_only_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("INSERT INTO journal_probe (id, at) VALUES (1, 'x')")
    except sqlite3.Error as exc:
        health = unavailable(exc, str(path))
    finally:
        conn.close()
    assert health is not None and health.cause == "read_only"
    assert health.message == (f"the journal {path} cannot be written: check the "
                              f"permissions of {tmp_path} and of the journal's files")


def test_an_io_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    health = unavailable(_sqlite_error(tmp_path, "SQLITE_IOERR_WRITE", 778), str(path))
    assert health is not None and health.cause == "io_error"
    assert health.message == (f"I/O error writing the journal {path}: check the disk that "
                              f"holds {mount_point(tmp_path)} (kernel log: dmesg)")


def test_errors_that_are_not_about_the_disk_are_left_alone(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    try:
        with j.transaction():
            j.write("DELETE FROM audit")  # allowed (no rows): the trigger fires per row
            j.audit("t", "a", "r", "x", "s")
        with j.transaction():
            j.write("UPDATE audit SET actor = 'x'")
    except sqlite3.Error as exc:
        assert unavailable(exc, j.path) is None
        assert "append-only" in str(exc)
    else:
        raise AssertionError("the append-only trigger did not refuse")
    finally:
        j.close()
