"""One journal, one daemon: an exclusive lock on a file beside the journal.

``JournalLock(path).acquire()`` creates ``<journal>.lock`` and takes an exclusive ``flock``
on it for as long as the process (or ``release()``) keeps it; the holder's pid is written
into the file. A second process gets :class:`JournalLocked`, whose message names the pid
(and command) of the holder. The kernel drops the lock when the holder dies, whatever way
it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from dispenser.journal.health import JournalError

__all__ = ["JournalLock", "JournalLocked"]


class JournalLocked(JournalError):
    """Another process holds the journal's lock. ``pid`` is that process, when known."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def _command(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    if not parts:
        return None
    # "python .../dispenserd --config x" reads better as "dispenserd --config x".
    names = [os.path.basename(p) for p in parts]
    start = next((i for i, n in enumerate(names) if n.startswith("dispenser")), 0)
    return " ".join([names[start], *parts[start + 1:]])[:120]


class JournalLock:
    def __init__(self, journal_path: str | Path) -> None:
        self.journal = str(journal_path)
        self.path = self.journal + ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``JournalLocked`` (``OSError`` if the file cannot be
        created, e.g. a read-only directory)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._holder(fd)
            os.close(fd)
            who = "another process"
            if pid is not None:
                command = _command(pid)
                who = f"process {pid}" + (f" ({command})" if command else "")
            raise JournalLocked(
                f"the journal {self.journal} is in use by {who}: one journal, one "
                f"dispenserd; stop that one or give this one another [journal] path "
                f"(lock file {self.path})", pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> int | None:
        # The holder writes its pid right after it got the lock: give it a moment.
        for _ in range(20):
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            if text.isdigit():
                return int(text)
            time.sleep(0.01)
        return None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
