"""The journal database: one SQLite file, WAL, synchronous=FULL, foreign keys on.

One writer: the ``Journal`` owns a single connection and is **not thread-safe**; use it
from one thread (the daemon's event loop). Every change happens inside ``transaction()``;
a nested ``transaction()`` is a savepoint, so a batch of calls can share one commit
(one fsync) while each call can still fail alone. When a transaction or savepoint that
wrote is rolled back, the ``on_rollback`` callbacks run (the Dispensary reloads its
memory).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dispenser.journal.audit import GENESIS, VerifyResult, canonical, row_hash, verify_rows
from dispenser.journal.migrations import CORE_MIGRATIONS, Migration


class JournalError(Exception):
    """The journal file cannot be used (newer schema, broken migration list)."""


class Journal:
    def __init__(self, path: str | Path, extra_migrations: Sequence[Migration] = ()) -> None:
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        self.writes = 0  # monotonic count of write statements, to tell if a tx wrote
        # Called after a transaction or savepoint that wrote was rolled back, so holders of
        # in-memory state derived from the journal (the Dispensary) can reload it.
        self.on_rollback: list[Callable[[], None]] = []
        self._migrate([*CORE_MIGRATIONS, *extra_migrations])
        self._load_tail()

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
            applied = {(c, n) for c, n in self.conn.execute(
                "SELECT component, number FROM schema_migrations")}
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
            self.conn.execute(f"PRAGMA user_version={int(count)}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    @property
    def user_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _load_tail(self) -> None:
        row = self.conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        self._next_audit_id: int = int(row[0]) + 1 if row else 1
        self._last_hash: str = str(row[1]) if row else GENESIS

    # -- transactions ------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commit on success, roll back on any exception. Nested calls are savepoints."""
        depth = self._depth
        mark = self.writes
        self.conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT sp{depth}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth = depth
            if depth == 0:
                self.conn.execute("ROLLBACK")
            else:
                self.conn.execute(f"ROLLBACK TO sp{depth}")
                self.conn.execute(f"RELEASE sp{depth}")
            self._load_tail()
            if self.writes != mark:
                for callback in list(self.on_rollback):
                    callback()
            raise
        self._depth = depth
        self.conn.execute("COMMIT" if depth == 0 else f"RELEASE sp{depth}")

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        assert self._depth > 0, "journal writes happen inside transaction()"
        self.writes += 1
        return self.conn.execute(sql, params)

    def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        assert self._depth > 0, "journal writes happen inside transaction()"
        self.writes += 1
        self.conn.executemany(sql, rows)

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
        h = row_hash(row_id, time, actor, role, action, subject, b, a, self._last_hash)
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
        for time, actor, role, action, subject, before, after in rows:
            b = None if before is None else canonical(before)
            a = None if after is None else canonical(after)
            h = row_hash(row_id, time, actor, role, action, subject, b, a, prev)
            out.append((row_id, time, actor, role, action, subject, b, a, prev, h))
            row_id, prev = row_id + 1, h
        if out:
            self.write_many("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)", out)
            self._next_audit_id, self._last_hash = row_id, prev

    def verify(self) -> VerifyResult:
        cur = self.conn.execute("SELECT id, time, actor, role, action, subject, before, after,"
                                " prev_hash, hash FROM audit ORDER BY id")
        return verify_rows(cur)

    def close(self) -> None:
        self.conn.close()


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
