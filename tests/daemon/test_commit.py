"""Group commit: concurrent calls share one transaction; a refusal stays with its caller."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import NotFound
from dispenser.core.formulary import Formulary
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.daemon.commit import GroupCommit
from dispenser.daemon.schema import DAEMON_MIGRATIONS
from dispenser.journal import Journal
from dispenser.testing import FORMULARY, drugs, order

ACTOR = Actor("t", "order_system")


def _dispensary(tmp_path: Path) -> Dispensary:
    from datetime import UTC, datetime

    return Dispensary(Journal(tmp_path / "j.sqlite", extra_migrations=DAEMON_MIGRATIONS),
                      Formulary.load(FORMULARY), Policy(), SlotGeometry(),
                      lambda: datetime.now(UTC))


async def test_concurrent_submits_share_one_commit(tmp_path: Path) -> None:
    d = _dispensary(tmp_path)
    gc = GroupCommit(d, budget_s=60.0)  # (however slow the machine: one transaction)
    code = drugs()["robot"][0]["drug_code"]
    orders = [order(f"G{i}", f"PG{i}", [(code, 1)]) for i in range(20)]
    results = await asyncio.gather(
        *(gc.run(lambda o=o: d.submit(o, ACTOR)) for o in orders),
        gc.run(lambda: d.cancel("NOPE", ACTOR, "x")), return_exceptions=True)
    assert gc.batches == 1 and gc.calls == 21
    assert [r.order_id for r in results[:20]] == [o["order_id"] for o in orders]
    assert isinstance(results[20], NotFound)
    n = d.journal.query_one("SELECT count(*) FROM orders")[0]
    assert n == 20


async def test_nothing_is_reported_before_the_commit(tmp_path: Path) -> None:
    d = _dispensary(tmp_path)
    gc = GroupCommit(d)

    def boom() -> None:
        raise RuntimeError("disk full")

    code = drugs()["robot"][0]["drug_code"]
    ok = gc.run(lambda: d.submit(order("H1", "PH1", [(code, 1)]), ACTOR))
    bad = gc.run(boom)
    r1, r2 = await asyncio.gather(ok, bad, return_exceptions=True)
    assert not isinstance(r1, Exception) and isinstance(r2, RuntimeError)
    with pytest.raises(RuntimeError):
        await gc.run(boom)


async def test_a_transaction_holds_the_loop_no_longer_than_its_budget(tmp_path: Path) -> None:
    """Calls queued together that take long (here 10 ms each, as a batch of orders may)
    are committed in several transactions, with the loop given back between them: a
    ping scheduled behind them runs before the last call is done."""
    d = _dispensary(tmp_path)
    gc = GroupCommit(d, budget_s=0.05)
    code = drugs()["robot"][0]["drug_code"]
    done: list[str] = []

    def slow(o: dict[str, object]) -> str:
        time.sleep(0.01)
        view = d.submit(o, ACTOR)
        done.append(view.order_id)
        return view.order_id

    pinged_after: list[int] = []

    async def ping() -> None:
        await asyncio.sleep(0)
        pinged_after.append(len(done))

    orders = [order(f"B{i}", f"PB{i}", [(code, 1)]) for i in range(20)]
    results = await asyncio.gather(*(gc.run(lambda o=o: slow(o)) for o in orders), ping())
    assert results[:20] == [o["order_id"] for o in orders]  # in order, each its answer
    assert gc.calls == 20 and gc.batches >= 4 and gc.largest <= 5
    assert pinged_after and pinged_after[0] < 20
    assert d.journal.query_one("SELECT count(*) FROM orders")[0] == 20
