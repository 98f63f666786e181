"""The daemon's tables in the journal, as the ``daemon`` component's migrations.

``robot_intents`` and ``robot_cursor`` belong to the robot ledger (``ledger.py``),
``totes`` to the tote planner (``totes.py``), ``faults`` to ``faults.py``. Never edit an
applied migration: add one.
"""

from __future__ import annotations

from dispenser.journal import Migration

__all__ = ["DAEMON_MIGRATIONS"]

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
    # "Release" is a pharmacist overriding a hold; the robot hands a tote on. The intent's
    # purpose names the robot's motion; ``opcode`` keeps a number per motion (1 home,
    # 2 store, 3 pick, 4 hand on, 5 scan).
    Migration("daemon", 2, "a tote is handed on, not released", """
UPDATE robot_intents SET purpose = 'hand_on' WHERE purpose = 'release';
ALTER TABLE totes RENAME COLUMN released_at TO handed_on_at;
"""),
    # Output tasks (dispenser.core.tasks) are picked and handed on like shipments: their
    # intents name the task. A task's tote needs no row of its own: its output is the
    # task's, and the hand-on ends the task in the same transaction.
    Migration("daemon", 3, "intents of output tasks", """
ALTER TABLE robot_intents ADD COLUMN task_id TEXT;
CREATE INDEX robot_intents_task ON robot_intents(task_id) WHERE task_id IS NOT NULL;
"""),
)
