"""Held orders by hold reason, kept current by the journal itself.

The metrics report how many held orders wait for each reason (``dispenser_held_orders``).
Counting them from the live orders at each scrape took 40 ms at 11,000 held orders on the
event loop (bench/bench_metrics.py); reading the ``holds`` JSON of every held row costs
more. As for ``state_counts``, triggers keep a small table ``hold_counts`` (code, n) exact:
every insert, change of state or holds and delete of an order adjusts it in the same
transaction, so a rollback undoes the adjustment too. An order held for two reasons
counts under both; one that names a reason twice (two drugs short) counts once.

The migration fills the table from the rows already there.
"""

from __future__ import annotations

from dispenser.journal import Journal, Migration

__all__ = ["HOLD_COUNT_MIGRATIONS", "hold_counts"]

_CODES = "SELECT DISTINCT json_extract(value, '$.code') AS code FROM json_each({holds})"

# A component of its own, so its numbering never meets the daemon's other migrations.
HOLD_COUNT_MIGRATIONS: tuple[Migration, ...] = (
    Migration("hold_counts", 1, "held orders by hold reason, kept by triggers", f"""
CREATE TABLE hold_counts (
    code TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO hold_counts (code, n)
    SELECT code, count(*) FROM (SELECT DISTINCT o.seq, json_extract(j.value, '$.code') AS code
                                FROM orders o, json_each(o.holds) j WHERE o.state = 'held')
    GROUP BY code;

CREATE TRIGGER hold_counts_insert AFTER INSERT ON orders WHEN new.state = 'held'
BEGIN
    INSERT INTO hold_counts (code, n)
        SELECT code, 1 FROM ({_CODES.format(holds="new.holds")}) WHERE true
        ON CONFLICT (code) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER hold_counts_delete AFTER DELETE ON orders WHEN old.state = 'held'
BEGIN
    UPDATE hold_counts SET n = n - 1 WHERE code IN ({_CODES.format(holds="old.holds")});
END;

CREATE TRIGGER hold_counts_update AFTER UPDATE OF state, holds ON orders
    WHEN (old.state = 'held' OR new.state = 'held')
     AND (old.state IS NOT new.state OR old.holds IS NOT new.holds)
BEGIN
    UPDATE hold_counts SET n = n - 1
        WHERE old.state = 'held' AND code IN ({_CODES.format(holds="old.holds")});
    INSERT INTO hold_counts (code, n)
        SELECT code, 1 FROM ({_CODES.format(holds="new.holds")}) WHERE new.state = 'held'
        ON CONFLICT (code) DO UPDATE SET n = n + 1;
END;
"""),
)


def hold_counts(journal: Journal) -> dict[str, int]:
    """``{code: held orders}``, codes with none left out."""
    return {str(code): int(n) for code, n in journal.query(
        "SELECT code, n FROM hold_counts WHERE n > 0 ORDER BY code")}
