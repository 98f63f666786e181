"""The journal database: one SQLite file, WAL, synchronous=FULL, foreign keys on.

One writer: the ``Journal`` owns a single connection and is **not thread-safe**; use it
from one thread (the daemon's event loop). Every change happens inside ``transaction()``;
a nested ``transaction()`` is a savepoint, so a batch of calls can share one commit
(one fsync) while each call can still fail alone. When a transaction or savepoint that
wrote is rolled back, the ``on_rollback`` callbacks run (the Dispensary reloads its
memory).

**A journal that cannot be written** (disk full, read-only, I/O error) raises
:class:`JournalUnavailable` from the statement or the COMMIT that met it, after rolling back
the *whole* transaction (SQLite may already have dropped it, so no savepoint can be trusted
to survive): a failure inside a savepoint dooms the transaction, and every later statement
in it raises too, so a caller that swallows the error cannot commit half of it. Audit ids
and hashes are read from the database at the start of each transaction, so a failed commit
leaves no gap. Then the journal is *unavailable*: ``on_unavailable`` callbacks run once,
and new transactions fail at once, without touching the database, until a small probe
write succeeds (at most every ``retry_s``; ``check_available()`` runs it on demand). When
the probe succeeds the ``on_available`` callbacks run.

**Keyed audit chain** (``audit_key``): rows are HMAC-SHA256 with the key, and after each
commit that appended audit rows the end of the chain is written to ``<journal>.checkpoint``
on a writer thread (``dispenser.journal.checkpoint``). When the journal is opened its tail
is checked against the checkpoint (``tail_findings``), cheaply: the checkpointed row and the
rows after it, not the whole chain. ``exclusive=True`` takes the journal's lock file
(``dispenser.journal.lock``) for the life of the object.

Size: one ``Journal`` around one connection: the migrations at open, transactions and
savepoints, the unavailable state and its probe, and the keyed audit chain (epochs, the tail
checked against the checkpoint). They share the chain's tail (the next audit id and the last
hash), which every audit row advances and every rollback must reload, so "a failed commit
leaves no gap" and "a doomed transaction cannot be half committed" are read in one class.
Row hashing, the checkpoint file, the lock and the migrations themselves are apart
(``audit``, ``checkpoint``, ``lock``, ``migrations``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispenser.journal import checkpoint as checkpoints
from dispenser.journal.audit import (
    GENESIS,
    AuditKey,
    AuditKeyError,
    Epoch,
    Finding,
    VerifyResult,
    canonical,
    row_hash,
    verify_rows,
)
from dispenser.journal.health import JournalError, JournalUnavailable, open_problem, unavailable
from dispenser.journal.lock import JournalLock
from dispenser.journal.migrations import CORE_MIGRATIONS, Migration
from dispenser.logs import get_logger

__all__ = ["Journal", "JournalError", "JournalUnavailable", "verify_journal"]

log = get_logger(__name__)

_AUDIT_COLUMNS = ("id, time, actor, role, action, subject, before, after, prev_hash, hash")


class Journal:
    def __init__(self, path: str | Path, extra_migrations: Sequence[Migration] = (), *,
                 retry_s: float = 1.0, exclusive: bool = False,
                 audit_key: AuditKey | None = None, new_audit_key: bool = False) -> None:
        self.path = str(path)
        self.retry_s = retry_s
        self.checkpoint_path = self.path + ".checkpoint"
        self._depth = 0
        self.writes = 0  # monotonic count of write statements, to tell if a tx wrote
        # Called after a transaction or savepoint that wrote was rolled back, so holders of
        # in-memory state derived from the journal (the Dispensary) can reload it.
        self.on_rollback: list[Callable[[], None]] = []
        # Called once when the journal stops taking writes, and when it takes them again.
        self.on_unavailable: list[Callable[[JournalUnavailable], None]] = []
        self.on_available: list[Callable[[], None]] = []
        # Called with the seconds each COMMIT of a transaction took (metrics).
        self.on_commit: list[Callable[[float], None]] = []
        self.unavailable: JournalUnavailable | None = None
        self._failed_at = 0.0
        self._doomed: JournalUnavailable | None = None
        self._after_commit: list[Callable[[], None]] = []
        self.key = audit_key
        self._write_key: AuditKey | None = None
        self.epochs: list[Epoch] = []
        self.tail_findings: list[Finding] = []
        self.checkpoint_held = False
        self._writer: checkpoints.CheckpointWriter | None = None
        self.lock = JournalLock(self.path) if exclusive else None
        try:
            if self.lock is not None:
                self.lock.acquire()
            self.conn = self._connect()
            self._migrate([*CORE_MIGRATIONS, *extra_migrations])
            self._load_tail()
            self.epochs = self._epochs()
            self._open_chain(new_audit_key)
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, JournalError):
                raise
            if isinstance(exc, sqlite3.Error | OSError):
                raise JournalError(open_problem(self.path, exc)) from exc
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            conn.close()
            raise
        return conn

    def _abandon(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if self.lock is not None:
            self.lock.release()

    # -- schema ------------------------------------------------------------------------
    def _migrate(self, migrations: Sequence[Migration]) -> None:
        keys = [(m.component, m.number) for m in migrations]
        if len(set(keys)) != len(keys):
            raise JournalError("two migrations share a component and number")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT "
                              "NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL, "
                              "PRIMARY KEY (component, number))")
            applied_rows = self.conn.execute(
                "SELECT component, number, name FROM schema_migrations").fetchall()
            applied = {(c, n) for c, n, _ in applied_rows}
            known = set(keys)
            mine = {m.component for m in migrations}
            newer = sorted((c, n, name) for c, n, name in applied_rows
                           if c in mine and (c, n) not in known)
            if newer:
                c, n, name = newer[0]
                raise JournalError(
                    f"cannot open the journal {self.path}: it was written by a newer version "
                    f"of dispenser (its migration {c} {n} '{name}' is unknown to this one); "
                    "run that version or restore a backup")
            for m in sorted(migrations, key=lambda m: (m.component != "core", m.component,
                                                       m.number)):
                if (m.component, m.number) in applied:
                    continue
                earlier = [n for c, n in keys if c == m.component and n < m.number]
                if any((m.component, n) not in applied for n in earlier):
                    raise JournalError(f"migration {m.component} {m.number} runs before "
                                       "an earlier one of its component")
                for statement in _split_sql(m.sql):
                    self.conn.execute(statement)
                self.conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                                  (m.component, m.number, m.name))
                applied.add((m.component, m.number))
            count = self.conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
            if int(count) != self.user_version:  # no write (and no fsync) when unchanged
                self.conn.execute(f"PRAGMA user_version={int(count)}")
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    @property
    def user_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _load_tail(self) -> None:
        row = self.conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        self._next_audit_id: int = int(row[0]) + 1 if row else 1
        self._last_hash: str = str(row[1]) if row else GENESIS

    # -- the keyed chain ---------------------------------------------------------------
    def _epochs(self) -> list[Epoch]:
        return [Epoch(int(r[0]), str(r[1])) for r in self.conn.execute(
            "SELECT first_row, key_id FROM audit_keys ORDER BY first_row")]

    def _open_chain(self, new_key: bool) -> None:
        key = self.key
        if key is None:
            if self.epochs:
                raise AuditKeyError(
                    f"the audit trail of {self.path} is keyed (key {self.epochs[-1].key_id}): "
                    "open it with its key")
            return
        rekey = False
        if self.epochs and self.epochs[-1].key_id != key.key_id:
            if not new_key:
                raise AuditKeyError(
                    f"the audit key {key.source} (key {key.key_id}) is not the key the audit "
                    f"trail of {self.path} is keyed with (key {self.epochs[-1].key_id}): give "
                    "dispenserd that key ([journal] audit_key); if it is lost for good, start "
                    "once with --new-audit-key (see docs/daemon.md)")
            rekey = True
        # Before anything is appended: a commit would move the checkpoint on.
        self.tail_findings = [] if rekey else self.check_tail()
        if self.tail_findings:
            # Keep the checkpoint as it is until a person has looked (see release_checkpoint):
            # it is the evidence, and a restart finds the same mismatch again.
            self.checkpoint_held = True
        if not self.epochs:
            self._start_epoch("audit.keyed")
        elif rekey:
            self._start_epoch("audit.rekeyed")
        else:
            self._write_key = key
        self._writer = checkpoints.CheckpointWriter(self.checkpoint_path, key)
        if not self.checkpoint_held:
            # Synchronously, before the daemon serves: a keyed journal always has one.
            checkpoints.write(self.checkpoint_path, self.end(), key)

    def _start_epoch(self, action: str) -> None:
        assert self.key is not None
        key = self.key
        before = self._write_key
        now = datetime.now(UTC).isoformat()
        try:
            with self.transaction():
                first, previous = self._next_audit_id, self._last_hash
                self.write("INSERT INTO audit_keys (first_row, key_id, since) VALUES (?,?,?)",
                           (first, key.key_id, now))
                self._write_key = key
                self.audit(now, "dispenserd", "system", action, "audit", None, {
                    "key_id": key.key_id, "first_row": first, "rows_before": first - 1,
                    "head_before": previous,
                    "previous_key_id": self.epochs[-1].key_id if self.epochs else None})
        except BaseException:
            self._write_key = before
            raise
        self.epochs = self._epochs()
        if action == "audit.keyed" and first > 1:
            log.warning("audit trail keyed from now on; earlier rows keep plain hashes",
                        first_keyed_row=first, key_id=key.key_id)
        elif action == "audit.rekeyed":
            log.warning("audit trail keyed with a new key; rows of the old key can no longer "
                        "be authenticated", first_row=first, key_id=key.key_id)

    def end(self) -> checkpoints.End:
        """The end of the chain as committed (for the checkpoint)."""
        return checkpoints.End(self._next_audit_id - 1, self._last_hash,
                               self.epochs[0].first_row if self.epochs else None)

    def check_tail(self) -> list[Finding]:
        """The tail of the chain against the checkpoint: the checkpointed row must be there
        with the recorded hash, and the rows after it must link and verify. Cheap: it
        reads only those rows."""
        try:
            cp = checkpoints.read(self.checkpoint_path, self.key)
        except checkpoints.CheckpointError as exc:
            return [Finding("checkpoint", None, str(exc))]
        first_keyed = self.epochs[0].first_row if self.epochs else None
        if cp is None:
            # Keyed rows beyond the row that started keying (a crash right after it may
            # have come before its first checkpoint) need a checkpoint.
            if self.epochs and self._next_audit_id - 1 > self.epochs[-1].first_row:
                return [Finding("checkpoint", None, f"the checkpoint {self.checkpoint_path} "
                                "is missing: the end of the chain cannot be checked")]
            return []
        findings: list[Finding] = []
        if cp.get("first_keyed_row") != first_keyed:
            findings.append(Finding(
                "checkpoint", first_keyed, f"the journal says keyed rows begin at "
                f"{first_keyed}, the checkpoint at {cp.get('first_keyed_row')}: the keying "
                "record was changed"))
        last = int(cp["last_id"])
        row = self.conn.execute("SELECT hash FROM audit WHERE id = ?", (last,)).fetchone()
        if row is None and last > 0:
            top = self._next_audit_id - 1
            findings.append(Finding(
                "missing_tail", top + 1, f"rows {top + 1}..{last} are missing at the end: "
                f"the checkpoint of {cp.get('written_at')} records {last} rows, the journal "
                f"ends at row {top}"))
            return findings
        if row is not None and row[0] != cp["head"]:
            findings.append(Finding(
                "checkpoint", last, f"row {last} is not the row the checkpoint recorded: the "
                "chain up to it was rewritten or the journal replaced"))
            return findings
        rest = verify_rows(self.conn.execute(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id > ? ORDER BY id", (last,)),
            self.epochs, self.key, first_id=last + 1, prev=str(cp["head"]))
        findings += list(rest.findings)
        return findings

    def release_checkpoint(self) -> None:
        """A person has looked at a checkpoint mismatch: from now on the checkpoint follows
        the journal again (written at once, from the journal's current end)."""
        self.checkpoint_held = False
        if self._writer is not None:
            self._writer.post(self.end())

    def flush_checkpoint(self, timeout: float = 10.0) -> bool:
        return self._writer.flush(timeout) if self._writer is not None else True

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit on success, roll back on any exception. Nested calls are savepoints.

        Raises ``JournalUnavailable`` (everything rolled back) when the journal cannot be
        written, at once while it is known to be unavailable."""
        depth = self._depth
        mark = self.writes
        if depth == 0:
            self._gate()
            self._control("BEGIN IMMEDIATE")
            self._doomed = None
            self._after_commit = []
            try:
                # Ids and hashes come from the database, inside the transaction that
                # writes them: whatever failed before, the next row follows the last one.
                self._load_tail()
            except BaseException:
                self._rollback_all()
                raise
            tail = self._next_audit_id
        else:
            if self._doomed is not None:
                raise self._doomed.again()
            self._control(f"SAVEPOINT sp{depth}")
        self._depth += 1
        try:
            yield
            if depth == 0 and self._doomed is not None:
                raise self._doomed.again()
        except BaseException as exc:
            self._depth = depth
            if depth > 0:
                self._undo_savepoint(depth, exc)
                if self._doomed is None and self.writes != mark:
                    for callback in list(self.on_rollback):
                        callback()
                if self._doomed is not None and isinstance(exc, sqlite3.Error) and \
                        not isinstance(exc, JournalUnavailable):
                    raise self._doomed.again() from exc
                raise
            # The outermost level: whatever a savepoint met, undo all of it.
            self._rollback_all()
            doomed, self._doomed = self._doomed, None
            if doomed is None and isinstance(exc, sqlite3.Error):
                doomed = unavailable(exc, self.path)
            if self.writes != mark or doomed is not None:
                for callback in list(self.on_rollback):
                    callback()
            if doomed is None:
                raise
            self._failed(doomed)
            if isinstance(exc, JournalUnavailable):
                raise
            raise doomed.again() from exc
        self._depth = depth
        if depth > 0:
            self._control(f"RELEASE sp{depth}")
            return
        began = _time.perf_counter()
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            health = unavailable(exc, self.path)
            self._rollback_all()
            if self.writes != mark:
                for callback in list(self.on_rollback):
                    callback()
            if health is None:
                raise
            self._failed(health)
            raise health from exc
        took = _time.perf_counter() - began
        for observe in self.on_commit:
            observe(took)
        if self.unavailable is not None:
            self._recovered()
        after, self._after_commit = self._after_commit, []
        for fn in after:
            fn()
        if self._next_audit_id != tail and self._writer is not None and not \
                self.checkpoint_held:
            self._writer.post(self.end())

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the current transaction has committed (never if it is rolled
        back): for memory that must change only with the journal."""
        assert self._depth > 0, "after_commit belongs to a transaction"
        self._after_commit.append(fn)

    def _control(self, sql: str) -> None:
        try:
            self.conn.execute(sql)
        except sqlite3.Error as exc:
            health = unavailable(exc, self.path)
            if health is None:
                raise
            if self._depth > 0:
                self._doomed = health
            else:
                self._failed(health)
            raise health from exc

    def _rollback_all(self) -> None:
        self._after_commit = []
        if not self.conn.in_transaction:
            return  # SQLite already rolled it back (SQLITE_FULL, SQLITE_IOERR ...)
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            # The connection's state is unknown: start a new one (which recovers the
            # database from its WAL as after a crash).
            log.error("journal rollback failed; reconnecting", error=str(exc))
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            try:
                self.conn = self._connect()
            except sqlite3.Error as again:
                log.error("journal reconnect failed", error=str(again))

    def _undo_savepoint(self, depth: int, exc: BaseException) -> None:
        """Roll back savepoint ``depth`` alone, unless the whole transaction is doomed: a
        failure of the disk, or SQLite already dropped the transaction."""
        if self._doomed is None and isinstance(exc, sqlite3.Error):
            self._doom(exc)
        if self._doomed is not None:
            return  # the outermost level rolls everything back
        if not self.conn.in_transaction:
            self._doomed = JournalUnavailable(
                "io_error", f"the journal {self.path} dropped a transaction ({exc}); "
                "check the disk and the log", self.path, "", repr(exc))
            return
        try:
            self.conn.execute(f"ROLLBACK TO sp{depth}")
            self.conn.execute(f"RELEASE sp{depth}")
            self._load_tail()
        except sqlite3.Error as undo:
            if self._doom(undo) is None:
                self._doomed = JournalUnavailable(
                    "io_error", f"the journal {self.path} could not undo a step ({undo})",
                    self.path, "", repr(undo))

    def _doom(self, exc: sqlite3.Error) -> JournalUnavailable | None:
        health = unavailable(exc, self.path)
        if health is not None and self._depth > 0:
            self._doomed = health
        return health

    # -- availability ------------------------------------------------------------------
    def _failed(self, health: JournalUnavailable) -> None:
        first = self.unavailable is None
        self.unavailable = health
        self._failed_at = _time.monotonic()
        if first:
            log.error("journal unavailable", cause=health.cause, path=health.path,
                      filesystem=health.filesystem, detail=health.detail)
            for callback in list(self.on_unavailable):
                try:
                    callback(health)
                except Exception:  # one holder's failure must not hide the journal's
                    log.exception("journal unavailability not handled")

    def _recovered(self) -> None:
        log.info("journal writable again", path=self.path)
        self.unavailable = None
        for callback in list(self.on_available):
            try:
                callback()
            except Exception:
                log.exception("journal recovery not handled")

    def _gate(self) -> None:
        if self.unavailable is None:
            return
        if _time.monotonic() - self._failed_at < self.retry_s:
            raise self.unavailable.again()
        self._failed_at = _time.monotonic()
        if not self._probe():
            raise self.unavailable.again()
        self._recovered()

    def _probe(self) -> bool:
        """One small committed write: does the journal take writes again?"""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            # Some pages, not one: a transaction of a few orders needs that much room.
            self.conn.execute("INSERT OR REPLACE INTO journal_probe (id, at, room) "
                              "VALUES (1, ?, zeroblob(32768))", (datetime.now(UTC).isoformat(),))
            self.conn.execute("COMMIT")
            return True
        except sqlite3.Error as exc:
            self._rollback_all()
            health = unavailable(exc, self.path)
            if health is not None:
                self.unavailable = health
            return False

    def check_available(self) -> JournalUnavailable | None:
        """None when the journal takes writes; else why not. While it is unavailable this
        probes at most every ``retry_s``."""
        if self.unavailable is None:
            return None
        if self._depth > 0:
            return self.unavailable
        try:
            self._gate()
        except JournalUnavailable as exc:
            return exc
        return None

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        assert self._depth > 0, "journal writes happen inside transaction()"
        if self._doomed is not None:
            raise self._doomed.again()
        self.writes += 1
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            health = self._doom(exc)
            if health is None:
                raise
            raise health from exc

    def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        assert self._depth > 0, "journal writes happen inside transaction()"
        if self._doomed is not None:
            raise self._doomed.again()
        self.writes += 1
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            health = self._doom(exc)
            if health is None:
                raise
            raise health from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def iterate(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """Rows one at a time (no list of the whole result in memory)."""
        return iter(self.conn.execute(sql, params))

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    # -- audit -------------------------------------------------------------------------
    def audit(self, time: str, actor: str, role: str, action: str, subject: str,
              before: object = None, after: object = None) -> int:
        """Append one audit row (chained to the previous one); returns its id."""
        b = None if before is None else canonical(before)
        a = None if after is None else canonical(after)
        row_id = self._next_audit_id
        h = row_hash(row_id, time, actor, role, action, subject, b, a, self._last_hash,
                     self._write_key)
        self.write("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (row_id, time, actor, role, action, subject, b, a, self._last_hash, h))
        self._next_audit_id, self._last_hash = row_id + 1, h
        return row_id

    def audit_many(self, rows: Iterable[tuple[str, str, str, str, str, object, object]]
                   ) -> None:
        """Append many audit rows (time, actor, role, action, subject, before, after) in
        order, chained as ``audit`` would, with one statement."""
        out = []
        row_id, prev = self._next_audit_id, self._last_hash
        key = self._write_key
        for time, actor, role, action, subject, before, after in rows:
            b = None if before is None else canonical(before)
            a = None if after is None else canonical(after)
            h = row_hash(row_id, time, actor, role, action, subject, b, a, prev, key)
            out.append((row_id, time, actor, role, action, subject, b, a, prev, h))
            row_id, prev = row_id + 1, h
        if out:
            self.write_many("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)", out)
            self._next_audit_id, self._last_hash = row_id, prev

    def verify(self) -> VerifyResult:
        """The whole chain (and the checkpoint of a keyed journal), on this connection."""
        return _verify(self.conn, self.key, self.checkpoint_path if self.key else None)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        if self.lock is not None:
            self.lock.release()


def _verify(conn: sqlite3.Connection, key: AuditKey | None,
            checkpoint_path: str | None) -> VerifyResult:
    # The checkpoint is read before the rows: it never leads the journal, so a snapshot
    # taken after it holds at least the rows it records.
    cp: dict[str, Any] | None = None
    problem: Finding | None = None
    if checkpoint_path is not None:
        try:
            cp = checkpoints.read(checkpoint_path, key)
        except checkpoints.CheckpointError as exc:
            problem = Finding("checkpoint", None, str(exc))
    began = not conn.in_transaction
    if began:
        conn.execute("BEGIN")
    try:
        epochs = [Epoch(int(r[0]), str(r[1])) for r in conn.execute(
            "SELECT first_row, key_id FROM audit_keys ORDER BY first_row")]
        result = verify_rows(
            conn.execute(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY id"), epochs, key, cp,
            checkpoint_expected=checkpoint_path is not None and bool(epochs)
            and problem is None)
    finally:
        if began:
            conn.execute("COMMIT")
    if problem is None:
        return result
    findings = tuple(sorted((*result.findings, problem),
                            key=lambda f: (f.first_bad_row is None, f.first_bad_row or 0)))
    rows = [f.first_bad_row for f in findings if f.first_bad_row is not None]
    return VerifyResult(False, result.rows, min(rows) if rows else None, findings[0].message,
                        findings, result.keyed, result.key_id, result.keyed_from, None)


def verify_journal(path: str | Path, key: AuditKey | None,
                   checkpoint: bool = True) -> VerifyResult:
    """Verify a journal on a connection of its own (safe on another thread, beside the
    daemon's connection: it only reads)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        return _verify(conn, key, str(path) + ".checkpoint" if checkpoint and key else None)
    finally:
        conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
