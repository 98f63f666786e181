"""Numbered schema migrations.

Each component numbers its own migrations from 1 (``Migration(component, number, name,
sql)``); the ``schema_migrations`` table records which were applied, and ``PRAGMA
user_version`` holds how many. Another component (the daemon) passes its own list to
``Journal(path, extra_migrations=[...])``; they run after the core ones, in number order,
each in the same transaction as its record. Never edit an applied migration: add one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    component: str
    number: int
    name: str
    sql: str


CORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration("core", 1, "audit, orders, shipments, packs, history", """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    before TEXT,
    after TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;

CREATE TABLE orders (
    seq INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    address_key TEXT NOT NULL,
    window_start TEXT NOT NULL,
    items TEXT NOT NULL,
    priority TEXT NOT NULL,
    received_at TEXT NOT NULL,
    state TEXT NOT NULL,
    holds TEXT NOT NULL DEFAULT '[]',
    shipment_id TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX orders_state ON orders(state, seq);

-- The order as received (canonical JSON, with patient data). Kept apart from the narrow,
-- often-updated orders row so a state change does not rewrite the body.
CREATE TABLE order_bodies (
    seq INTEGER PRIMARY KEY REFERENCES orders(seq),
    body TEXT NOT NULL
);

CREATE TABLE shipments (
    seq INTEGER PRIMARY KEY,
    shipment_id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    address_key TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX shipments_state ON shipments(state, seq);

CREATE TABLE packs (
    pack_id INTEGER PRIMARY KEY,
    gtin TEXT NOT NULL,
    batch TEXT NOT NULL,
    expiry TEXT NOT NULL,
    serial TEXT,
    slot INTEGER,
    store_seq INTEGER,
    state TEXT NOT NULL,
    shipment_id TEXT,
    order_id TEXT,
    loaded_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX packs_serial ON packs(gtin, serial);
CREATE INDEX packs_state ON packs(state);
CREATE INDEX packs_batch ON packs(gtin, batch);

CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    patient_id TEXT NOT NULL,
    drug_code TEXT NOT NULL,
    prescription_id TEXT NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders(order_id),
    shipment_id TEXT NOT NULL REFERENCES shipments(shipment_id),
    quantity INTEGER NOT NULL,
    days_supply INTEGER NOT NULL,
    dispensed_on TEXT NOT NULL,
    supply_end TEXT NOT NULL
);
CREATE INDEX history_patient_drug ON history(patient_id, drug_code);
CREATE INDEX history_prescription ON history(patient_id, prescription_id, drug_code);

CREATE TABLE quarantined_batches (
    gtin TEXT NOT NULL,
    batch TEXT NOT NULL,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (gtin, batch)
);

CREATE TABLE blocked_slots (
    slot INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    reason TEXT NOT NULL
);

CREATE TABLE discrepancies (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    slot INTEGER NOT NULL,
    kind TEXT NOT NULL,
    expected INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    shipment_id TEXT,
    actor TEXT NOT NULL
);
"""),
    Migration("core", 2, "keyed audit chain, journal probe", """
-- Keyed audit rows: from first_row on (up to the next epoch) rows carry HMAC-SHA256 hashes
-- made with the key whose fingerprint is key_id (never the key itself). Rows before the
-- first epoch were written before the chain was keyed and carry plain SHA-256 hashes.
CREATE TABLE audit_keys (
    first_row INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    since TEXT NOT NULL
);
CREATE TRIGGER audit_keys_no_update BEFORE UPDATE ON audit_keys
BEGIN SELECT RAISE(ABORT, 'audit keys are append-only'); END;
CREATE TRIGGER audit_keys_no_delete BEFORE DELETE ON audit_keys
BEGIN SELECT RAISE(ABORT, 'audit keys are append-only'); END;

-- One row, rewritten by the journal's probe while the disk is full or read-only: a
-- committed write of some pages (room) that tells whether the journal takes writes again.
CREATE TABLE journal_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL,
    room BLOB
);
"""),
    Migration("core", 3, "dispensing records of other channels, registered prescriptions", """
-- Dispensing records from hospital pharmacies, other pharmacies and insurance claims
-- (records.import). (source, record_id) is the record's idempotency key; ingredients are
-- resolved through the formulary when imported (';'-separated, empty when the formulary
-- knows neither the drug code nor the ATC code). The duplicate check reads a patient's
-- records whose supply lasts beyond a day: hence the index on (patient_id, supply_end).
CREATE TABLE dispensing_records (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    record_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    source_name TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    dispensed_on TEXT NOT NULL,
    drug_code TEXT,
    atc TEXT,
    ingredients TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    days_supply INTEGER NOT NULL,
    supply_end TEXT NOT NULL,
    imported_at TEXT NOT NULL,
    UNIQUE (source, record_id)
);
CREATE INDEX dispensing_records_patient ON dispensing_records(patient_id, supply_end);

-- Prescriptions as the institutions issued them (prescriptions.register).
CREATE TABLE prescriptions (
    seq INTEGER PRIMARY KEY,
    prescription_id TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    institution TEXT NOT NULL,
    prescriber TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    issued_on TEXT NOT NULL,
    diagnoses TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE INDEX prescriptions_patient ON prescriptions(patient_id, issued_on);
CREATE INDEX prescriptions_issued ON prescriptions(issued_on);

-- Each prescribed item and how many of its packs orders have drawn. The CHECK is the last
-- guard of the rule that fills never exceed what was prescribed.
CREATE TABLE prescription_items (
    prescription_seq INTEGER NOT NULL REFERENCES prescriptions(seq),
    item_no INTEGER NOT NULL,
    drug_code TEXT,
    atc TEXT,
    ingredients TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    days_supply INTEGER NOT NULL,
    filled INTEGER NOT NULL DEFAULT 0 CHECK (filled >= 0 AND filled <= quantity),
    PRIMARY KEY (prescription_seq, item_no)
) WITHOUT ROWID;

-- What each order drew from which prescribed item: given back when the order is
-- cancelled, rejected or fails.
CREATE TABLE prescription_fills (
    order_id TEXT NOT NULL,
    prescription_seq INTEGER NOT NULL,
    item_no INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, prescription_seq, item_no)
) WITHOUT ROWID;
"""),
    Migration("core", 4, "output tasks", """
-- Output tasks: packs picked to an output for a requester other than a patient's shipment
-- (pharmacy software over WWKS2; later the expiry sweep). ``request_key`` is the
-- requester's own name for the task (for WWKS2 "<subscriber id>/<OutputRequest Id>"),
-- unique among live tasks of a purpose; ``data`` holds its lines (what each asks for, what
-- is reserved, picked, short) and what the requester needs to report it.
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    request_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    priority TEXT NOT NULL,
    output INTEGER NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    reported_at TEXT,
    data TEXT NOT NULL
);
CREATE INDEX tasks_key ON tasks(purpose, request_key, seq);
CREATE INDEX tasks_state ON tasks(state, seq);
CREATE INDEX tasks_unreported ON tasks(purpose, request_key) WHERE reported_at IS NULL;

ALTER TABLE packs ADD COLUMN task_id TEXT;
CREATE INDEX packs_task ON packs(task_id) WHERE task_id IS NOT NULL;
"""),
    # One name for the machine's drug identifier (issue 9): the formulary, orders and the
    # dispensing history already said ``drug_code``. RENAME COLUMN keeps the data and
    # rewrites the indexes on the column (``packs_serial``, ``packs_batch``, the primary
    # key of ``quarantined_batches``) under their own names; "GTIN" stays the GS1 term
    # of a scan's (01) element (``dispenser.core.gs1``).
    Migration("core", 5, "the drug identifier is drug_code", """
ALTER TABLE packs RENAME COLUMN gtin TO drug_code;
ALTER TABLE quarantined_batches RENAME COLUMN gtin TO drug_code;
"""),
)
