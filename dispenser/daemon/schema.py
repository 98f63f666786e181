"""The daemon's tables in the journal, as the ``daemon`` component's migrations.

``robot_intents`` and ``robot_cursor`` belong to the robot ledger (``ledger.py``),
``robot_adoptions`` to the adoption of a replaced robot (``adoption.py``), ``totes`` to the
tote planner (``totes.py``), ``faults`` to ``faults.py``, ``machine_mode`` to
``machinemode.py``. Never edit an applied migration: add one.
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
    # A robot that answers in place of the journal's (a replaced controller board) is
    # adopted by a technician: the commands the old robot never confirmed get the state
    # ``unknown`` until the slot counts settle them. The new robot numbers its completions
    # from 1 again, so ``completion`` is no longer unique. (Its own component, so that it
    # does not take a number another change of the daemon's tables may want.)
    Migration("robot_ledger", 1, "unknown-outcome intents, adoptions of a replaced robot", """
CREATE TABLE robot_intents_v2 (
    seq INTEGER PRIMARY KEY,
    opcode INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    output INTEGER NOT NULL,
    count INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    shipment_id TEXT,
    pack_id INTEGER,
    state TEXT NOT NULL CHECK (state IN ('planned', 'void', 'done', 'unknown')),
    planned_at TEXT NOT NULL,
    completion INTEGER,
    result INTEGER,
    detail INTEGER,
    applied_at TEXT
);
INSERT INTO robot_intents_v2 SELECT seq, opcode, slot, output, count, purpose, shipment_id,
    pack_id, state, planned_at, completion, result, detail, applied_at FROM robot_intents;
DROP TABLE robot_intents;
ALTER TABLE robot_intents_v2 RENAME TO robot_intents;
CREATE INDEX robot_intents_planned ON robot_intents(state) WHERE state = 'planned';
CREATE INDEX robot_intents_unknown ON robot_intents(state) WHERE state = 'unknown';
CREATE INDEX robot_intents_shipment ON robot_intents(shipment_id);

CREATE TABLE robot_adoptions (
    adoption_id INTEGER PRIMARY KEY,
    adopted_at TEXT NOT NULL,
    adopted_by TEXT NOT NULL,
    adopted_role TEXT NOT NULL,
    note TEXT,
    robot TEXT NOT NULL,
    journal_completions INTEGER NOT NULL,
    journal_max_seq INTEGER NOT NULL,
    unknown_seqs TEXT NOT NULL,
    slots TEXT NOT NULL,
    settled_at TEXT,
    settlement TEXT
);
"""),
    # Pause and maintenance mode are a person's decision: they outlive a restart and a
    # fault, and only resume (or leaving maintenance) ends them.
    Migration("machine_mode", 1, "pause and maintenance mode kept across restarts", """
CREATE TABLE machine_mode (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL CHECK (mode IN ('paused', 'maintenance')),
    reason TEXT,
    set_by TEXT NOT NULL,
    set_at TEXT NOT NULL
);
"""),
    # A label whose printing began but was not recorded as printed may have come out
    # before a crash: it is printed again marked COPY (the packer discards the duplicate).
    Migration("printdesk", 1, "when printing a shipment's label and slip began", """
ALTER TABLE totes ADD COLUMN print_started_at TEXT;
"""),
    # Output tasks (dispenser.core.tasks) are picked and handed on like shipments: their
    # intents name the task. A task's tote needs no row of its own: its output is the
    # task's, and the hand-on ends the task in the same transaction.
    Migration("robot_ledger", 2, "intents of output tasks", """
ALTER TABLE robot_intents ADD COLUMN task_id TEXT;
CREATE INDEX robot_intents_task ON robot_intents(task_id) WHERE task_id IS NOT NULL;
"""),
)
