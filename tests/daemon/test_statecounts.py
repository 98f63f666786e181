"""machine.status counts orders, shipments and output tasks by state from a table the journal's own
triggers keep exact, instead of reading every row on each call (issue 8)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.tasks import TaskCriterion, TaskRequest
from dispenser.core.views import Actor
from dispenser.daemon.schema import DAEMON_MIGRATIONS
from dispenser.daemon.statecounts import STATE_COUNT_MIGRATIONS, state_counts
from dispenser.journal import Journal
from dispenser.testing import FORMULARY, drugs, order

ACTOR = Actor("t", "staff")


def dispensary(path: Path, with_counts: bool = True) -> Dispensary:
    migrations = [*DAEMON_MIGRATIONS, *(STATE_COUNT_MIGRATIONS if with_counts else ())]
    return Dispensary(Journal(path, extra_migrations=migrations), Formulary.load(FORMULARY),
                      Policy(merge_window_s=0), SlotGeometry(), lambda: datetime.now(UTC))


def counted_by_rows(journal: Journal) -> dict[str, dict[str, int]]:
    return {table: {str(s): int(n) for s, n in journal.query(
        f"SELECT state, count(*) FROM {table} GROUP BY state ORDER BY state")}
        for table in ("shipments", "orders", "tasks")}


def work(d: Dispensary, prefix: str) -> None:
    code = drugs()["robot"][0]["drug_code"]
    for i in range(12):
        d.submit(order(f"{prefix}{i}", f"P{prefix}{i}", [(code, 1)]), ACTOR)
    d.cancel(f"{prefix}0", ACTOR, "patient called")
    d.form_shipments()
    d.cancel(f"{prefix}1", ACTOR, "patient called")


def test_counts_follow_every_insert_and_state_change(tmp_path: Path) -> None:
    d = dispensary(tmp_path / "j.sqlite")
    assert state_counts(d.journal) == {"shipments": {}, "orders": {}, "tasks": {}}
    work(d, "A")
    counts = state_counts(d.journal)
    assert counts == counted_by_rows(d.journal)
    assert sum(counts["orders"].values()) == 12
    assert counts["orders"]["cancelled"] == 2
    assert sum(counts["shipments"].values()) >= 10


def test_a_rolled_back_transaction_leaves_the_counts_as_they_were(tmp_path: Path) -> None:
    d = dispensary(tmp_path / "j.sqlite")
    work(d, "B")
    before = state_counts(d.journal)
    code = drugs()["robot"][0]["drug_code"]
    with pytest.raises(RuntimeError), d.journal.transaction():
        d.submit(order("B-LOST", "PB-LOST", [(code, 1)]), ACTOR)
        d.cancel("B2", ACTOR, "changed mind")
        raise RuntimeError("the commit failed")
    assert state_counts(d.journal) == before == counted_by_rows(d.journal)


def test_an_existing_journal_is_counted_when_the_migration_runs(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    old = dispensary(path, with_counts=False)
    work(old, "C")
    old.journal.close()
    d = dispensary(path)
    assert state_counts(d.journal) == counted_by_rows(d.journal)
    work(d, "D")
    assert state_counts(d.journal) == counted_by_rows(d.journal)


def test_output_tasks_are_counted_too(tmp_path: Path) -> None:
    d = dispensary(tmp_path / "j.sqlite")
    code = drugs()["robot"][0]["drug_code"]
    for i in range(3):
        d.create_task(TaskRequest("wwks2_output", f"100/{i}", "f", 1, "normal",
                                  (TaskCriterion(code, 1, drug_code=code),)), ACTOR)
    counts = state_counts(d.journal)
    assert counts == counted_by_rows(d.journal)
    assert counts["tasks"] == {"incomplete": 3}  # no stock: nothing to pick
