"""The audit checkpoint: the end of the chain, recorded outside the database.

A keyed chain shows every changed row, but not rows cut off its end: the rows that remain
still verify. So after each commit that appended audit rows the journal records
``(last_id, head, first_keyed_row, key_id)`` in ``<journal>.checkpoint``, authenticated with
the audit key (``mac``), written to a temporary file, fsynced, renamed over the old one and
the directory fsynced: a crash leaves the old checkpoint or the new one, never half of one.

Writing happens on one thread (``CheckpointWriter``) so no fsync runs on the daemon's event
loop. The loop posts the newest end after each commit; the thread writes the newest it has,
one at a time, so a checkpoint is never replaced by an older one. Every posted end is
already committed (``synchronous=FULL``): the checkpoint may lag the journal, never lead it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispenser.journal.audit import AuditKey
from dispenser.logs import get_logger

__all__ = ["CheckpointError", "CheckpointWriter", "End", "read", "write"]

log = get_logger(__name__)

VERSION = 1


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be trusted (unreadable, altered, other key)."""


@dataclass(frozen=True)
class End:
    """The end of the chain after a commit."""

    last_id: int
    head: str
    first_keyed_row: int | None


def _signed_text(body: dict[str, Any]) -> str:
    return json.dumps({k: body[k] for k in ("version", "last_id", "head", "first_keyed_row",
                                            "key_id", "written_at")},
                      sort_keys=True, separators=(",", ":"))


def write(path: str | Path, end: End, key: AuditKey) -> None:
    """Replace the checkpoint atomically and durably."""
    path = Path(path)
    body: dict[str, Any] = {"version": VERSION, "last_id": end.last_id, "head": end.head,
                            "first_keyed_row": end.first_keyed_row, "key_id": key.key_id,
                            "written_at": datetime.now(UTC).isoformat(timespec="seconds")}
    body["mac"] = key.mac(_signed_text(body).encode())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, (json.dumps(body, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read(path: str | Path, key: AuditKey | None) -> dict[str, Any] | None:
    """The checkpoint, authenticated with ``key``; None if there is none. Raises
    ``CheckpointError`` when it is unreadable, altered or made with another key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"the checkpoint {path} cannot be read: {exc.strerror}") from None
    try:
        body = json.loads(text)
        signed = _signed_text(body)
        mac = str(body["mac"])
        int(body["last_id"])
        str(body["head"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"the checkpoint {path} is not a checkpoint (damaged or "
                              "replaced)") from None
    if key is None or body["key_id"] != key.key_id:
        raise CheckpointError(f"the checkpoint {path} was written with key "
                              f"{body['key_id']}, not with this daemon's key"
                              f"{'' if key is None else ' ' + key.key_id}")
    if key.mac(signed.encode()) != mac:
        raise CheckpointError(f"the checkpoint {path} was altered: its MAC does not match")
    result: dict[str, Any] = body
    return result


class CheckpointWriter:
    """Writes posted ends on its own thread, newest first, never out of order.

    ``post`` never blocks (the loop calls it after each commit); ``flush`` waits until the
    newest posted end is on disk; ``close`` flushes and stops the thread. A failed write
    (disk full) is logged; the old checkpoint stays (the journal has already passed it,
    which is allowed) until the next post."""

    def __init__(self, path: str | Path, key: AuditKey) -> None:
        self.path = Path(path)
        self.key = key
        self._cond = threading.Condition()
        self._pending: End | None = None
        self._writing = False
        self._closed = False
        self.written: End | None = None
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="audit-checkpoint",
                                        daemon=True)
        self._thread.start()

    def post(self, end: End) -> None:
        with self._cond:
            self._pending = end
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                end, self._pending = self._pending, None
                self._writing = True
            try:
                write(self.path, end, self.key)
            except OSError as exc:
                # The next commit posts a newer end (a disk that was full took no commit
                # meanwhile): no retry loop here.
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("audit checkpoint not written", path=str(self.path),
                                error=exc.strerror or str(exc), failures=self.failures)
            else:
                self.written = end
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is pending; False if that took longer than ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._writing,
                                       timeout)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with contextlib.suppress(RuntimeError):
            self._thread.join(10)
