"""A journal directory on a disk that tests can fill and free.

Two ways, each named in the test id so the output says which one ran:

- ``tmpfs``: a tmpfs of a few MB is mounted for the test (needs root with CAP_SYS_ADMIN,
  as on the development machine and in CI). Filling it writes a filler file until only a
  little space is left: SQLite then fails with ENOSPC, exactly like a full production disk.
  A probe mount decides whether mounting is possible; where it is not, the case skips with
  the reason (under ``CI=true`` it fails instead).
- ``max_page_count``: no mount; SQLite's ``PRAGMA max_page_count`` caps the journal's size
  on one connection. Filling sets the cap just above the journal's current size; freeing
  lifts it. Only the connection the test holds is capped, so a separate daemon process
  takes the cap from ``DISPENSERD_JOURNAL_MAX_PAGES`` (tests only) when it starts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing.tools import under_ci

MODES = ("tmpfs", "max_page_count")


def can_mount(where: Path) -> str | None:
    """None when a tmpfs can be mounted here, else why not."""
    probe = where / "mount-probe"
    probe.mkdir(exist_ok=True)
    try:
        ran = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    if ran.returncode != 0:
        return f"cannot mount a tmpfs: {ran.stderr.strip() or ran.returncode}"
    subprocess.run(["umount", str(probe)], check=False, timeout=10)
    probe.rmdir()
    return None


class SmallDisk:
    """Where to put the journal (``path``), and how to fill and free its disk."""

    def __init__(self, mode: str, path: Path) -> None:
        self.mode = mode
        self.path = path
        self.filler = path / "filler"
        self.mounted = False

    # -- tmpfs -------------------------------------------------------------------------
    def mount(self, size: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(self.path)], check=True, timeout=10)
        self.mounted = True

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, timeout=10)
            self.mounted = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    # -- both --------------------------------------------------------------------------
    def fill(self, conn: sqlite3.Connection | None = None, leave_bytes: int = 48 * 1024,
             leave_pages: int = 12) -> None:
        """Leave about ``leave_bytes`` free on the tmpfs, or cap the journal ``leave_pages``
        pages above its size on ``conn`` (max_page_count)."""
        if self.mode == "tmpfs":
            room = self.free_bytes() - leave_bytes
            with open(self.filler, "ab") as fh:
                with contextlib.suppress(OSError):
                    while room > 0:
                        chunk = min(room, 1 << 20)
                        fh.write(b"\0" * chunk)
                        room -= chunk
                fh.flush()
                os.fsync(fh.fileno())
        else:
            assert conn is not None, "max_page_count caps one connection: pass it"
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages + leave_pages}")

    def free(self, conn: sqlite3.Connection | None = None) -> None:
        if self.mode == "tmpfs":
            with contextlib.suppress(FileNotFoundError):
                self.filler.unlink()
        elif conn is not None:
            conn.execute("PRAGMA max_page_count = 1073741823")

    def describe(self) -> str:
        if self.mode == "tmpfs":
            return f"journal on a tmpfs mounted at {self.path}"
        return "journal capped with PRAGMA max_page_count (no mount)"


@contextlib.contextmanager
def small_disk(mode: str, where: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """A ``SmallDisk`` under ``where`` (mounted for ``tmpfs``; skipped when impossible)."""
    disk = SmallDisk(mode, where / "disk")
    if mode == "tmpfs":
        why = can_mount(where)
        if why is not None:
            if under_ci():
                pytest.fail(f"CI must be able to mount a tmpfs: {why}")
            pytest.skip(f"{why}; the max_page_count case covers this machine")
        disk.mount(size)
    else:
        disk.path.mkdir(parents=True, exist_ok=True)
    print(f"small disk: {disk.describe()}")
    try:
        yield disk
    finally:
        disk.unmount()
