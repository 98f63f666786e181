"""The robot log: every command's intent is journaled before it is sent.

This is what makes picking exactly-once across crashes. The rules:

1. Before a command is written to the robot, its seq and intent (opcode, slot, output,
   count, and the shipment or pack it is for) are committed here in state ``planned``.
2. Each completion read from the robot is applied in **one transaction** together with its
   effect on stock and shipments, and that transaction also moves ``applied_completion``
   (the number of the last completion applied) and marks the intent ``done``.
3. After a restart the daemon reads the robot's status first: intents with seq above the
   robot's ``last_accepted_seq`` never reached it and become ``void`` (their work is planned
   again); completions above ``applied_completion`` are read and applied; only then is
   anything new sent. New seqs start above both the journal's and the robot's highest.

The tables live in the journal as the ``daemon`` component's migrations. Other tables the
daemon owns: ``totes`` (which output a shipment's tote is at, whether its label is printed
and the tote released) and ``faults`` (history with context, acknowledgements).

A fault raised while the journal takes no writes (disk full) is **held** in memory
(``hold_fault``) with the id it will have; ``faults()`` and ``fault()`` show it like the
others, and it is written first thing in the next transaction that writes a fault or an
acknowledgement (``write_held``), so ids never collide and none is lost while the daemon
runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dispenser.journal import Journal, Migration

__all__ = ["DAEMON_MIGRATIONS", "FaultRecord", "Intent", "RobotLog", "ToteRecord"]

DAEMON_MIGRATIONS: tuple[Migration, ...] = (
    Migration("daemon", 1, "robot intents, completion cursor, totes, faults", """
CREATE TABLE robot_intents (
    seq INTEGER PRIMARY KEY,
    opcode INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    output INTEGER NOT NULL,
    count INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    shipment_id TEXT,
    pack_id INTEGER,
    state TEXT NOT NULL CHECK (state IN ('planned', 'void', 'done')),
    planned_at TEXT NOT NULL,
    completion INTEGER UNIQUE,
    result INTEGER,
    detail INTEGER,
    applied_at TEXT
);
CREATE INDEX robot_intents_planned ON robot_intents(state) WHERE state = 'planned';
CREATE INDEX robot_intents_shipment ON robot_intents(shipment_id);

CREATE TABLE robot_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    applied_completion INTEGER NOT NULL
);
INSERT INTO robot_cursor VALUES (1, 0);

CREATE TABLE totes (
    shipment_id TEXT PRIMARY KEY,
    output INTEGER NOT NULL,
    assigned_at TEXT NOT NULL,
    printed_at TEXT,
    released_at TEXT
);
CREATE INDEX totes_open ON totes(released_at);

CREATE TABLE faults (
    fault_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    message TEXT NOT NULL,
    context TEXT NOT NULL,
    acked_at TEXT,
    acked_by TEXT,
    acked_role TEXT,
    note TEXT
);
"""),
)

PLANNED, VOID, DONE = "planned", "void", "done"


@dataclass(frozen=True)
class Intent:
    """One command as planned. ``purpose`` is pick | store | release | home | scan."""

    seq: int
    opcode: int
    slot: int
    output: int
    count: int
    purpose: str
    shipment_id: str | None = None
    pack_id: int | None = None
    state: str = PLANNED


@dataclass(frozen=True)
class ToteRecord:
    shipment_id: str
    output: int
    printed: bool
    released: bool


@dataclass(frozen=True)
class FaultRecord:
    fault_id: int
    kind: str
    raised_at: str
    message: str
    context: dict[str, Any]
    acked_at: str | None
    acked_by: str | None
    acked_role: str | None
    note: str | None
    # False while the fault is held in memory because the journal takes no writes.
    journaled: bool = True

    @property
    def active(self) -> bool:
        return self.acked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {"fault_id": self.fault_id, "kind": self.kind, "raised_at": self.raised_at,
                "message": self.message, "context": self.context, "active": self.active,
                "acked_at": self.acked_at, "acked_by": self.acked_by,
                "acked_role": self.acked_role, "note": self.note,
                "journaled": self.journaled}


_INTENT_COLS = "seq, opcode, slot, output, count, purpose, shipment_id, pack_id, state"
_FAULT_COLS = ("fault_id, kind, raised_at, message, context, acked_at, acked_by, acked_role, "
               "note")


def _intent(row: Sequence[Any]) -> Intent:
    return Intent(*row)


def _fault(row: Sequence[Any]) -> FaultRecord:
    values = list(row)
    values[4] = json.loads(values[4])
    return FaultRecord(*values)


class RobotLog:
    """Queries and writes on the daemon's tables. Writes must run inside
    ``journal.transaction()`` (the caller's, so they commit with their effects)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.held: list[FaultRecord] = []  # raised while the journal took no writes

    # -- intents ---------------------------------------------------------------------------
    def max_seq(self) -> int:
        row = self.journal.query_one("SELECT max(seq) FROM robot_intents")
        return int(row[0] or 0)

    def applied_completion(self) -> int:
        return int(self.journal.query_one(
            "SELECT applied_completion FROM robot_cursor WHERE id = 1")[0])

    def add(self, intents: Iterable[Intent], now: str) -> None:
        self.journal.write_many(
            "INSERT INTO robot_intents (seq, opcode, slot, output, count, purpose, "
            "shipment_id, pack_id, state, planned_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(i.seq, i.opcode, i.slot, i.output, i.count, i.purpose, i.shipment_id,
              i.pack_id, PLANNED, now) for i in intents])

    def planned(self) -> list[Intent]:
        """Intents not yet completed nor voided, in seq order."""
        return [_intent(r) for r in self.journal.query(
            f"SELECT {_INTENT_COLS} FROM robot_intents WHERE state = 'planned' ORDER BY seq")]

    def get(self, seq: int) -> Intent | None:
        row = self.journal.query_one(
            f"SELECT {_INTENT_COLS} FROM robot_intents WHERE seq = ?", (seq,))
        return None if row is None else _intent(row)

    def void_above(self, last_accepted: int, now: str) -> list[Intent]:
        """Mark planned intents the robot never accepted as void; returns them."""
        rows = [_intent(r) for r in self.journal.query(
            f"SELECT {_INTENT_COLS} FROM robot_intents WHERE state = 'planned' AND seq > ? "
            "ORDER BY seq", (last_accepted,))]
        if rows:
            self.journal.write("UPDATE robot_intents SET state = 'void', applied_at = ? "
                               "WHERE state = 'planned' AND seq > ?", (now, last_accepted))
        return rows

    def void(self, seqs: Sequence[int], now: str) -> None:
        self.journal.write_many(
            "UPDATE robot_intents SET state = 'void', applied_at = ? WHERE seq = ? "
            "AND state = 'planned'", [(now, s) for s in seqs])

    def complete(self, seq: int, completion: int, result: int, detail: int, now: str) -> None:
        """Record that completion ``completion`` (for ``seq``) is applied, and move the
        cursor. Call in the same transaction as the completion's effect."""
        self.journal.write(
            "UPDATE robot_intents SET state = 'done', completion = ?, result = ?, detail = ?, "
            "applied_at = ? WHERE seq = ?", (completion, result, detail, now, seq))
        self.advance(completion)

    def advance(self, completion: int) -> None:
        self.journal.write("UPDATE robot_cursor SET applied_completion = ? WHERE id = 1 "
                           "AND applied_completion < ?", (completion, completion))

    def history(self, shipment_id: str) -> list[tuple[int, int, int, int | None, int | None]]:
        """(seq, opcode, count, result, detail) of a shipment's commands, for diagnostics."""
        return [tuple(r) for r in self.journal.query(
            "SELECT seq, opcode, count, result, detail FROM robot_intents "
            "WHERE shipment_id = ? ORDER BY seq", (shipment_id,))]

    # -- totes -----------------------------------------------------------------------------
    def assign_tote(self, shipment_id: str, output: int, now: str) -> None:
        self.journal.write("INSERT INTO totes (shipment_id, output, assigned_at) "
                           "VALUES (?,?,?)", (shipment_id, output, now))

    def move_tote(self, shipment_id: str, output: int) -> None:
        self.journal.write("UPDATE totes SET output = ? WHERE shipment_id = ?",
                           (output, shipment_id))

    def mark_printed(self, shipment_id: str, now: str) -> None:
        self.journal.write("UPDATE totes SET printed_at = ? WHERE shipment_id = ? "
                           "AND printed_at IS NULL", (now, shipment_id))

    def mark_released(self, shipment_id: str, now: str) -> None:
        self.journal.write("UPDATE totes SET released_at = ? WHERE shipment_id = ?",
                           (now, shipment_id))

    def open_totes(self) -> list[ToteRecord]:
        """Totes assigned and not yet handed on, oldest first."""
        return [ToteRecord(r[0], r[1], r[2] is not None, False) for r in self.journal.query(
            "SELECT shipment_id, output, printed_at FROM totes WHERE released_at IS NULL "
            "ORDER BY assigned_at, shipment_id")]

    def tote(self, shipment_id: str) -> ToteRecord | None:
        r = self.journal.query_one("SELECT shipment_id, output, printed_at, released_at "
                                   "FROM totes WHERE shipment_id = ?", (shipment_id,))
        return None if r is None else ToteRecord(r[0], r[1], r[2] is not None, r[3] is not None)

    # -- faults ----------------------------------------------------------------------------
    def raise_fault(self, kind: str, message: str, context: dict[str, Any], now: str) -> int:
        self.write_held()
        cur = self.journal.write(
            "INSERT INTO faults (kind, raised_at, message, context) VALUES (?,?,?,?)",
            (kind, now, message, json.dumps(context, sort_keys=True, default=str)))
        return int(cur.lastrowid or 0)

    def hold_fault(self, kind: str, message: str, context: dict[str, Any],
                   now: str) -> FaultRecord:
        """Keep a fault in memory (the journal takes no writes), under the id it will have
        when ``write_held`` journals it."""
        top = self.journal.query_one("SELECT max(fault_id) FROM faults")[0] or 0
        fid = max([int(top), *(f.fault_id for f in self.held)]) + 1
        record = FaultRecord(fid, kind, now, message,
                             json.loads(json.dumps(context, sort_keys=True, default=str)),
                             None, None, None, None, journaled=False)
        self.held.append(record)
        return record

    def write_held(self) -> None:
        """Journal the held faults (inside the caller's transaction); they leave memory
        once it has committed."""
        if not self.held:
            return
        records = list(self.held)
        self.journal.write_many(
            "INSERT INTO faults (fault_id, kind, raised_at, message, context) "
            "VALUES (?,?,?,?,?)",
            [(f.fault_id, f.kind, f.raised_at, f.message,
              json.dumps(f.context, sort_keys=True, default=str)) for f in records])
        self.journal.after_commit(
            lambda: setattr(self, "held", [f for f in self.held if f not in records]))

    def ack_fault(self, fault_id: int, actor: str, role: str, note: str | None,
                  now: str) -> None:
        self.write_held()
        self.journal.write("UPDATE faults SET acked_at = ?, acked_by = ?, acked_role = ?, "
                           "note = ? WHERE fault_id = ? AND acked_at IS NULL",
                           (now, actor, role, note, fault_id))

    def fault(self, fault_id: int) -> FaultRecord | None:
        held = next((f for f in self.held if f.fault_id == fault_id), None)
        if held is not None:
            return held
        r = self.journal.query_one(f"SELECT {_FAULT_COLS} FROM faults WHERE fault_id = ?",
                                   (fault_id,))
        return None if r is None else _fault(r)

    def faults(self, active: bool | None = None, limit: int = 100,
               after: int | None = None) -> list[FaultRecord]:
        """Newest first (held ones included); ``after`` is the fault_id the previous page
        ended with."""
        where, params = [], []  # type: tuple[list[str], list[Any]]
        if active is True:
            where.append("acked_at IS NULL")
        elif active is False:
            where.append("acked_at IS NOT NULL")
        if after is not None:
            where.append("fault_id < ?")
            params.append(after)
        sql = f"SELECT {_FAULT_COLS} FROM faults"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY fault_id DESC LIMIT ?"
        params.append(limit)
        rows = [_fault(r) for r in self.journal.query(sql, params)]
        if not self.held:
            return rows
        held = [f for f in self.held if active is not False
                and (after is None or f.fault_id < after)]
        return sorted([*held, *rows], key=lambda f: -f.fault_id)[:limit]
