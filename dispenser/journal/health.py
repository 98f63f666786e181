"""Why the journal cannot be written or opened, in words a person can act on.

SQLite reports a failing disk with a bare result code (``SQLITE_FULL``, ``SQLITE_IOERR`` ...).
``unavailable(exc, path)`` turns such an error into :class:`JournalUnavailable`, naming the
filesystem that holds the journal and what to do; ``open_problem`` does the same for a
journal that cannot be opened at all. Errors that say nothing about the disk (a constraint,
a trigger's refusal, a programming error) are left to the caller.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["JournalError", "JournalUnavailable", "mount_point", "open_problem", "unavailable"]

# SQLite primary result codes (the low byte of the extended code).
_PERM, _BUSY, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _PROTOCOL, _NOTADB = (
    3, 5, 8, 10, 11, 13, 14, 15, 26)
# Below this much free space a "full" journal is a full disk; above it, a size limit or a
# quota stopped it (SQLite says "full" for both).
_FULL_DISK_BYTES = 8 * 1024 * 1024


class JournalError(Exception):
    """The journal file cannot be used (cannot be opened, newer schema, in use)."""


class JournalUnavailable(JournalError):
    """The journal cannot take writes now. The transaction that met it was rolled back
    whole, and holders of memory derived from the journal were told to reload.

    ``cause`` is stable (``disk_full``, ``size_limit``, ``read_only``, ``io_error``,
    ``damaged``, ``busy``); ``message`` says what to do; ``filesystem`` is the mount point
    that holds the journal."""

    code = "journal_unavailable"

    def __init__(self, cause: str, message: str, path: str, filesystem: str,
                 detail: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message
        self.path = path
        self.filesystem = filesystem
        self.detail = detail

    def again(self) -> JournalUnavailable:
        """A fresh exception with the same content (each raise gets its own traceback)."""
        return JournalUnavailable(self.cause, self.message, self.path, self.filesystem,
                                  self.detail)

    def as_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "message": self.message, "path": self.path,
                "filesystem": self.filesystem, "detail": self.detail}


def mount_point(path: str | Path) -> str:
    """The mount point of the filesystem holding ``path`` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = p.stat().st_dev
        while p != p.parent and p.parent.stat().st_dev == dev:
            p = p.parent
    except OSError:
        pass
    return str(p)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _free_bytes(directory: str) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _read_only_fs(directory: str) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _primary(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def unavailable(exc: sqlite3.Error, path: str) -> JournalUnavailable | None:
    """The journal-health reading of a SQLite error met while writing, or None when the
    error is not about the disk."""
    code = _primary(exc)
    if code not in (_PERM, _BUSY, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _PROTOCOL,
                    _NOTADB):
        return None
    directory = os.path.dirname(os.path.abspath(path))
    fs = mount_point(directory)
    detail = f"{getattr(exc, 'sqlite_errorname', 'SQLITE_ERROR')}: {exc}"
    if code == _FULL:
        free = _free_bytes(directory)
        if free is None or free < _FULL_DISK_BYTES:
            left = "" if free is None else f"; {_size(free)} left"
            return JournalUnavailable(
                "disk_full", f"the journal's disk is full: free space on {fs} (it holds "
                f"the journal {path}{left})", path, fs, detail)
        return JournalUnavailable(
            "size_limit", f"the journal {path} could not grow although {fs} has "
            f"{_size(free)} free: a quota or size limit stops it; raise the limit", path,
            fs, detail)
    if code in (_READONLY, _PERM, _IOERR, _CANTOPEN) and _read_only_fs(directory):
        return JournalUnavailable(
            "read_only", f"the journal's filesystem {fs} is read-only: remount it "
            f"read-write (it holds the journal {path})", path, fs, detail)
    if code in (_READONLY, _PERM) or (code == _CANTOPEN and not os.access(directory,
                                                                         os.W_OK)):
        return JournalUnavailable(
            "read_only", f"the journal {path} cannot be written: check the permissions "
            f"of {directory} and of the journal's files", path, fs, detail)
    if code in (_CORRUPT, _NOTADB):
        return JournalUnavailable(
            "damaged", f"the journal {path} is damaged ({exc}): stop the daemon and "
            "restore the journal from a backup", path, fs, detail)
    if code == _BUSY:
        return JournalUnavailable(
            "busy", f"the journal {path} is locked by another process: only dispenserd "
            "may write it", path, fs, detail)
    return JournalUnavailable(
        "io_error", f"I/O error writing the journal {path}: check the disk that holds {fs} "
        "(kernel log: dmesg)", path, fs, detail)


def open_problem(path: str, exc: BaseException) -> str:
    """One line: why the journal at ``path`` cannot be opened, and what to do."""
    head = f"cannot open the journal {path}"
    p = Path(path)
    directory = p.parent
    if p.is_dir():
        return f"{head}: it is a directory; [journal] path must name a file"
    if not directory.is_dir():
        return f"{head}: its directory {directory} does not exist"
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if _read_only_fs(str(directory)):
            return f"{head}: its filesystem {mount_point(directory)} is read-only ({reason})"
        if isinstance(exc, PermissionError):
            return (f"{head}: the journal or its directory {directory} is not writable "
                    f"for this user ({reason}: {exc.filename or directory})")
        return f"{head}: {reason} ({exc.filename or directory})"
    if isinstance(exc, sqlite3.Error):
        code = _primary(exc)
        if code in (_NOTADB, _CORRUPT):
            return (f"{head}: the file is not a dispenser journal or is damaged ({exc}); "
                    "restore it from a backup or move it away")
        if _read_only_fs(str(directory)):
            return f"{head}: its filesystem {mount_point(directory)} is read-only ({exc})"
        if not os.access(directory, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
            return (f"{head}: the journal or its directory {directory} is not writable "
                    f"for this user ({exc})")
        health = unavailable(exc, path)
        if health is not None:
            return f"{head}: {health.message}"
    return f"{head}: {exc}"
