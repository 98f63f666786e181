"""A journal whose disk fills up: nothing acknowledged is lost, nothing refused is kept.

Each test runs twice: on a tmpfs of a few MB (``[tmpfs]``, a real ENOSPC) and with SQLite's
``max_page_count`` (``[max_page_count]``, where no tmpfs can be mounted); see
``tests/helpers/small_disk.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import NotFound
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.journal import Journal, JournalUnavailable
from dispenser.testing.core import API, DEMO_FORMULARY, FakeClock, load, make_order, robot_drugs
from dispenser.testing.small_disk import MODES, SmallDisk, small_disk


@pytest.fixture(params=MODES)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(request.param, tmp_path) as d:
        yield d


def _open(path: Path, clock: FakeClock, retry_s: float = 0.0) -> Dispensary:
    # retry_s=0: after a failure the journal probes again on the next transaction.
    j = Journal(path, retry_s=retry_s)
    return Dispensary(j, DEMO_FORMULARY, Policy(), SlotGeometry(2, 25, 200, 10), clock)


def _check_message(exc: JournalUnavailable, disk: SmallDisk) -> None:
    if disk.mode == "tmpfs":
        assert exc.cause == "disk_full", exc
        assert exc.message.startswith("the journal's disk is full: free space on "), exc
        assert str(disk.path) in exc.message, exc
    else:
        assert exc.cause == "size_limit", exc
        assert "could not grow" in exc.message, exc
    assert exc.path.endswith("journal.sqlite")


def test_a_burst_into_a_full_disk_keeps_exactly_what_was_acknowledged(
        disk: SmallDisk, clock: FakeClock) -> None:
    path = disk.path / "journal.sqlite"
    d = _open(path, clock)
    drug = robot_drugs()[0]
    load(d, drug, 5)
    disk.fill(d.journal.conn)
    acked: list[dict[str, Any]] = []
    refused: list[tuple[dict[str, Any], JournalUnavailable]] = []
    for i in range(2000):
        o = make_order([(drug.drug_code, 1)], patient=f"PF{i:04d}")
        try:
            d.submit(o, API)
        except JournalUnavailable as exc:
            refused.append((o, exc))
            if len(refused) == 15:
                break
        else:
            acked.append(o)
    assert len(refused) == 15, "the disk never filled up"
    print(f"{len(acked)} orders acknowledged before the disk was full, "
          f"{len(refused)} refused")
    for o, exc in refused:
        _check_message(exc, disk)
        # Memory was rolled back with the journal: the order does not exist.
        with pytest.raises(NotFound):
            d.get_order(o["order_id"])
    # Sent again while the disk is still full: refused again, not answered from memory.
    with pytest.raises(JournalUnavailable):
        d.submit(refused[0][0], API)
    for o in acked:
        assert d.get_order(o["order_id"]).state.value == "received"
    assert d.audit_verify().ok

    disk.free(d.journal.conn)
    resent = [o for o, _ in refused[:10]]
    for o in resent:
        assert d.submit(o, API).state.value == "received"
    result = d.audit_verify()
    assert result.ok, result  # no gap where the refused rows would have been
    d.journal.close()

    again = _open(path, clock)
    for o in acked + resent:
        assert again.get_order(o["order_id"]).state.value == "received"
    for o, _ in refused[10:]:  # never acknowledged: not in the journal
        with pytest.raises(NotFound):
            again.get_order(o["order_id"])
    assert again.audit_verify().ok
    again.journal.close()


def test_a_failure_inside_a_savepoint_dooms_the_whole_transaction(
        disk: SmallDisk, clock: FakeClock) -> None:
    """A caller that swallows the failure of a nested call cannot commit the rest: after
    SQLITE_FULL the transaction may already be gone, and later statements would otherwise
    be committed one by one outside of it."""
    j = Journal(disk.path / "journal.sqlite", retry_s=0.0)
    with j.transaction():
        j.audit("t0", "test", "technician", "test.before", "x")
    disk.fill(j.conn, leave_bytes=16 * 1024, leave_pages=2)
    reloads: list[int] = []
    j.on_rollback.append(lambda: reloads.append(1))
    big = "x" * (4 * 1024 * 1024)
    with pytest.raises(JournalUnavailable), j.transaction():
        j.audit("t1", "test", "technician", "test.first", "x")
        with pytest.raises(JournalUnavailable), j.transaction():
            j.audit("t2", "test", "technician", "test.big", "x", None, {"blob": big})
            j.audit("t3", "test", "technician", "test.big2", "x", None, {"blob": big})
        j.audit("t4", "test", "technician", "test.after", "x")
    assert reloads, "memory holders were not told to reload"
    assert [r[0] for r in j.query("SELECT action FROM audit ORDER BY id")] == ["test.before"]
    disk.free(j.conn)
    with j.transaction():
        j.audit("t5", "test", "technician", "test.later", "x")
    assert [r[0] for r in j.query("SELECT id FROM audit ORDER BY id")] == [1, 2]
    assert j.verify().ok
    j.close()


def test_while_the_disk_is_full_writes_fail_fast_until_a_probe_passes(
        disk: SmallDisk, clock: FakeClock) -> None:
    d = _open(disk.path / "journal.sqlite", clock, retry_s=3600.0)
    j = d.journal
    load(d, robot_drugs()[0], 2)
    disk.fill(j.conn)
    seen: list[JournalUnavailable] = []
    j.on_unavailable.append(seen.append)
    with pytest.raises(JournalUnavailable):
        for i in range(2000):
            d.submit(make_order(patient=f"PG{i:04d}"), API)
    assert len(seen) == 1 and j.check_available() is not None
    reloads: list[int] = []
    j.on_rollback.append(lambda: reloads.append(1))
    writes = j.writes
    with pytest.raises(JournalUnavailable):
        d.submit(make_order(patient="PG-fast"), API)
    # Refused before anything was written: no statement, no reload of the memory.
    assert j.writes == writes and not reloads
    disk.free(j.conn)
    assert j.check_available() is not None  # the next probe is not due yet
    j.retry_s = 0.0
    back: list[int] = []
    j.on_available.append(lambda: back.append(1))
    assert j.check_available() is None and back == [1]
    assert d.submit(make_order(patient="PG-after"), API).state.value == "received"
    assert d.audit_verify().ok
    j.close()
