"""Orders, shipments and output tasks by state, kept current by the journal itself.

``machine.status`` reports how many orders and shipments are in each state. Counting them
with ``GROUP BY`` reads every row: about 1 ms per 20,000 orders, so tens of ms on a
journal with months of history, on the event loop, for each call. Triggers keep a small
table ``state_counts`` (kind, state, n) exact instead: every insert, state change and
delete of an order or shipment adjusts it in the same transaction, so a rollback undoes
the adjustment too, whoever writes. Reading it costs the same whatever the journal's size.

The migration fills the table from the rows already there, so an existing journal gets
exact counts from its first start with it.
"""

from __future__ import annotations

from dispenser.journal import Journal, Migration

__all__ = ["STATE_COUNT_MIGRATIONS", "state_counts"]


def _triggers(table: str) -> str:
    return f"""
CREATE TRIGGER state_counts_{table}_insert AFTER INSERT ON {table}
BEGIN
    INSERT INTO state_counts (kind, state, n) VALUES ('{table}', new.state, 1)
        ON CONFLICT (kind, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER state_counts_{table}_delete AFTER DELETE ON {table}
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE kind = '{table}' AND state = old.state;
END;

CREATE TRIGGER state_counts_{table}_update AFTER UPDATE OF state ON {table}
    WHEN old.state IS NOT new.state
BEGIN
    UPDATE state_counts SET n = n - 1 WHERE kind = '{table}' AND state = old.state;
    INSERT INTO state_counts (kind, state, n) VALUES ('{table}', new.state, 1)
        ON CONFLICT (kind, state) DO UPDATE SET n = n + 1;
END;
"""


# A component of its own, so its numbering never meets the daemon's other migrations.
STATE_COUNT_MIGRATIONS: tuple[Migration, ...] = (
    Migration("state_counts", 1, "orders and shipments by state, kept by triggers", f"""
CREATE TABLE state_counts (
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, state)
) WITHOUT ROWID;

INSERT INTO state_counts (kind, state, n)
    SELECT 'orders', state, count(*) FROM orders GROUP BY state;
INSERT INTO state_counts (kind, state, n)
    SELECT 'shipments', state, count(*) FROM shipments GROUP BY state;
{_triggers("orders")}
{_triggers("shipments")}
"""),
    Migration("state_counts", 2, "output tasks by state, kept by triggers", f"""
INSERT INTO state_counts (kind, state, n)
    SELECT 'tasks', state, count(*) FROM tasks GROUP BY state;
{_triggers("tasks")}
"""),
)


def state_counts(journal: Journal) -> dict[str, dict[str, int]]:
    """``{"orders": {state: n}, "shipments": {state: n}, "tasks": {state: n}}``, states
    with none left out."""
    counts: dict[str, dict[str, int]] = {"shipments": {}, "orders": {}, "tasks": {}}
    for kind, state, n in journal.query(
            "SELECT kind, state, n FROM state_counts WHERE n > 0 ORDER BY kind, state"):
        counts.setdefault(str(kind), {})[str(state)] = int(n)
    return counts
