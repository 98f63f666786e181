"""The journal at its edges, with the real dispenserd and dispenser-sim processes: a disk
that fills up during a burst of orders, a second daemon on the same journal, a journal that
cannot be opened."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError
from dispenser.daemon.schema import DAEMON_MIGRATIONS
from dispenser.journal import AuditKey, Journal
from dispenser.testing import (
    BIN,
    TOKENS,
    Daemon,
    Sim,
    check_invariant,
    drugs,
    load_packs,
    order,
    pack,
    wait_for,
)
from dispenser.testing.small_disk import MODES, SmallDisk, can_mount, small_disk
from dispenser.testing.tools import under_ci

JOURNAL_UNAVAILABLE = -32010
NOT_FOUND = -32003


@pytest.fixture(params=MODES)
def disk(request: pytest.FixtureRequest, workdir: Path) -> Iterator[SmallDisk]:
    # Room for a whole day of this test once space is freed: the journal's WAL grows to
    # SQLite's autocheckpoint size (1,000 pages, 4 MB) before it is folded into the
    # database, and folding it needs room for the database's pages as well.
    with small_disk(request.param, workdir, size="12m") as d:
        yield d


async def _submit(client: ApiClient, o: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    try:
        return o, await client.call("order.submit", {"order": o})
    except ApiError as exc:
        return o, exc


async def _fault(client: ApiClient, kind: str) -> dict[str, Any] | None:
    page = await client.call("fault.list", {"active": True})
    return next((f for f in page["items"] if f["kind"] == kind), None)


async def _gone(client: ApiClient, order_id: str) -> bool:
    try:
        await client.call("order.get", {"order_id": order_id})
    except ApiError as exc:
        return int(exc.code) == NOT_FOUND
    return False


async def test_a_burst_into_a_full_disk_keeps_exactly_what_was_acknowledged(
        workdir: Path, sim: Sim, disk: SmallDisk) -> None:
    d = Daemon(workdir, sim, journal=disk.path / "journal.sqlite", merge_window_s=0.5)
    code = drugs()["robot"][60]["drug_code"]
    d.start()
    try:
        staff = await d.client("staff")
        await d.wait_ready(staff)
        exp = date.today() + timedelta(days=300)
        await load_packs(sim, staff, [pack(code, "DF1", exp, f"DF1-{i:02d}")
                                      for i in range(20)])
        await staff.close()
        if disk.mode == "max_page_count":
            d.stop()
            with sqlite3.connect(d.journal_path) as raw:
                pages = raw.execute("PRAGMA page_count").fetchone()[0]
            d.env["DISPENSERD_JOURNAL_MAX_PAGES"] = str(pages + 12)
            d.start()
        else:
            disk.fill(leave_bytes=160 * 1024)
        staff = await d.client("staff")
        await d.wait_ready(staff)
        accepted_before = (await sim.ledger())["robot"]["last_accepted_seq"]

        # A burst from three order-system connections into the filling disk.
        senders = [await d.client("order_system") for _ in range(3)]
        acked: list[dict[str, Any]] = []
        refused: list[tuple[dict[str, Any], ApiError]] = []
        n = 0
        while len(refused) < 15 and n < 600:
            wave = [order(f"DF-{n + i:04d}", f"PDF{n + i:04d}", [(code, 1)])
                    for i in range(6)]
            n += len(wave)
            for o, r in await asyncio.gather(*(_submit(senders[i % 3], o)
                                               for i, o in enumerate(wave))):
                if isinstance(r, ApiError):
                    assert int(r.code) == JOURNAL_UNAVAILABLE, r  # never -32603
                    refused.append((o, r))
                else:
                    acked.append(o)
        print(f"{disk.describe()}: {len(acked)} orders acknowledged, {len(refused)} refused")
        assert acked and len(refused) >= 15
        first = refused[0][1]
        if disk.mode == "tmpfs":
            assert first.message.startswith("the journal's disk is full: free space on "
                                            f"{disk.path}"), first
            assert first.data["cause"] == "disk_full"
        else:
            assert "could not grow" in first.message and first.data["cause"] == "size_limit"

        # Nothing refused lives on in memory; a re-send is refused again, not "accepted".
        for o, _ in refused:
            assert await _gone(staff, o["order_id"]), o["order_id"]
        _, again = await _submit(senders[0], refused[0][0])
        assert isinstance(again, ApiError) and int(again.code) == JOURNAL_UNAVAILABLE
        for o in acked:
            got = await staff.call("order.get", {"order_id": o["order_id"]})
            assert got["state"] == "received"

        # A latched fault says what to do; nothing new is picked.
        status = await staff.call("machine.status")
        assert status["state"] == "fault" and not status["journal"]["writable"], status
        fault = await _fault(staff, "journal")
        assert fault is not None and "acknowledge" in fault["message"], fault
        assert status["fault"]["kind"] == "journal"
        shown = subprocess.run([str(BIN / "dispenserctl"), "--socket", str(d.socket),
                                "--token", TOKENS["staff"], "status"], capture_output=True,
                               text=True, timeout=60, env={**os.environ, "COLUMNS": "1000"})
        assert "NOT WRITABLE: " + first.message.split(" (it holds")[0] in shown.stdout, shown
        await asyncio.sleep(1.0)
        assert (await sim.ledger())["robot"]["last_accepted_seq"] == accepted_before

        # Space comes back; the fault is acknowledged; dispensing goes on.
        if disk.mode == "tmpfs":
            disk.free()
        else:
            for c in senders:
                await c.close()
            await staff.close()
            assert d.stop() == 0, d.log_tail()
            d.env.pop("DISPENSERD_JOURNAL_MAX_PAGES")
            d.start()
            staff = await d.client("staff")
            senders = [await d.client("order_system")]

        async def writable() -> bool:
            st = await staff.call("machine.status")
            held = st["journal"]["held_faults"]
            return bool(st["journal"]["writable"] and not held)
        await wait_for(writable, 20, what="the journal writable again")
        fault = await _fault(staff, "journal")
        if fault is not None:  # (a restart forgets a fault that was never journaled)
            assert fault["journaled"] is True
            await staff.call("fault.ack", {"fault_id": fault["fault_id"],
                                           "note": "freed space"})
        await d.wait_ready(staff)
        resent = [o for o, _ in refused[:3]]
        short = len(acked) + len(resent) - 20
        if short > 0:  # enough stock for every order that is to be dispensed
            await load_packs(sim, staff, [pack(code, "DF2", exp, f"DF2-{i:03d}")
                                          for i in range(short)])
        for o in resent:
            _, r = await _submit(senders[0], o)
            assert not isinstance(r, ApiError), r

        async def all_done() -> bool:
            for o in acked + resent:
                got = await staff.call("order.get", {"order_id": o["order_id"]})
                if got["state"] != "completed":
                    return False
            return True
        await wait_for(all_done, 60, what="the acknowledged orders dispensed")
        await check_invariant(staff, sim, require_final=False)
        for c in senders:
            await c.close()
        await staff.close()

        # After a restart: every acknowledged order, no other; the chain verifies.
        assert d.stop() == 0, d.log_tail()
        d.start()
        tech = await d.client("technician")
        for o in acked + resent:
            got = await tech.call("order.get", {"order_id": o["order_id"]})
            assert got["state"] == "completed"
        for o, _ in refused[3:]:
            assert await _gone(tech, o["order_id"]), o["order_id"]
        audit = await tech.call("audit.verify")
        assert audit["ok"] and audit["keyed"], audit
        await tech.close()
        log = d.log_path.read_text()
        for bad in ("api handler failed", "audit hook failed", "working loop error",
                    "Traceback", "printed label could not be recorded"):
            assert bad not in log, f"{bad!r} in the daemon's log"
    finally:
        d.stop()


async def test_a_second_daemon_on_the_same_journal_exits_2_naming_the_first(
        workdir: Path, sim: Sim, daemon: Daemon) -> None:
    daemon.start()
    other_dir = workdir / "other"
    other_dir.mkdir()
    other_sim = Sim(other_dir, instant=True)
    other_sim.start()
    try:
        second = Daemon(workdir, other_sim, name="second")  # same journal, own robot
        assert second.journal_path == daemon.journal_path
        code, out = second.run_to_exit()
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 2, out
        assert len(lines) == 1, out
        assert daemon.proc is not None
        assert f"in use by process {daemon.proc.pid}" in lines[0], lines[0]
        assert str(daemon.journal_path) in lines[0]
        assert (await other_sim.ledger())["robot"]["last_accepted_seq"] == 0
    finally:
        other_sim.stop()
    # The first one never noticed.
    tech = await daemon.client("technician")
    await daemon.wait_ready(tech)
    code = drugs()["robot"][61]["drug_code"]
    sent = await tech.call("order.submit", {"order": order("SD-1", "PSD1", [(code, 1)])})
    assert sent["state"] in ("received", "held")
    assert (await tech.call("audit.verify"))["ok"]
    await tech.close()


def _read_only(directory: Path) -> None:
    """Make ``directory`` read-only for the daemon: a read-only remount of a tmpfs when
    root may mount (root ignores file modes), else the directory's mode."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True, timeout=10)


@pytest.mark.parametrize("case", ["directory", "corrupt", "newer_schema", "read_only"])
def test_a_journal_that_cannot_be_opened_stops_the_start_with_one_line(
        workdir: Path, case: str) -> None:
    key = workdir / "audit.key"
    AuditKey.create(key)
    where = workdir / "j"
    where.mkdir()
    mounted = False
    journal = where / "journal.sqlite"
    expected = {"directory": "it is a directory",
                "corrupt": "is not a dispenser journal or is damaged",
                "newer_schema": "written by a newer version of dispenser (its migration "
                                "core 99 'a later release'",
                "read_only": "read-only" if os.geteuid() == 0
                else "is not writable for this user"}[case]
    if case == "read_only" and os.geteuid() == 0:
        why = can_mount(workdir)
        if why is not None:
            if under_ci():
                pytest.fail(why)
            pytest.skip(why)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                       check=True, timeout=10)
        mounted = True
    try:
        if case == "directory":
            journal.mkdir()
        elif case == "corrupt":
            journal.write_bytes(b"not a journal, a shopping list\n" * 200)
        else:
            j = Journal(journal, extra_migrations=DAEMON_MIGRATIONS,
                        audit_key=AuditKey.load(key))
            if case == "newer_schema":
                with j.transaction():
                    j.write("INSERT INTO schema_migrations VALUES ('core', 99, "
                            "'a later release')")
            j.close()
            if case == "read_only":
                _read_only(where)
        robot = Sim(workdir, port=1502)  # never started: the daemon stops before it
        d = Daemon(workdir, robot, journal=journal, audit_key=key)
        code, out = d.run_to_exit()
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 2, out
        assert len(lines) == 1 and "Traceback" not in out, out
        assert f"cannot open the journal {journal}" in lines[0], lines[0]
        assert expected in lines[0], lines[0]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False, timeout=10)
        elif case == "read_only":
            where.chmod(0o755)
