"""Near-expiry stock through the API and the CLI (issue 8): ``stock.list`` flags each pack
and filters with ``near_expiry``, ``machine.status`` counts, ``dispenserctl stock
--near-expiry`` and ``status`` show them.

A daemon of its own, whose loading takes packs with no shelf life to spare
(``min_shelf_life_days = 0``): a pack expiring today loads, and is near expiry at once
(its expiry is before today + max(0, min_days_supply 1)).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispenser.testing import Daemon, Sim, drugs, pack, scan, wait_until
from dispenser.testing.cli import Machine

DRUG = drugs()["robot"][5]["drug_code"]


@pytest.fixture(scope="module")
def shelf() -> Iterator[Machine]:
    workdir = Path(tempfile.mkdtemp(prefix="dctl-ne", dir="/tmp"))
    sim = Sim(workdir, instant=True)
    sim.start()
    daemon = Daemon(workdir, sim, min_shelf_life_days=0)
    try:
        daemon.start()
        running = Machine(sim, daemon)
        wait_until(lambda: json.loads(running.ctl("status", "--json").out)["state"] == "ready",
                   "machine ready")
        yield running
    finally:
        try:
            daemon.stop()
        finally:
            sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_near_expiry_packs_are_listed_flagged_and_counted(shelf: Machine) -> None:
    today = datetime.now(UTC).date()  # the daemon's day (its clock is UTC)
    ending = pack(DRUG, "NE01", today, "NE-ENDING")
    lasting = pack(DRUG, "NE02", today + timedelta(days=400), "NE-LASTING")
    shelf.sim_call("sim.put_input", {"packs": [ending, lasting]})
    loaded = shelf.ctl("load", stdin=scan(ending) + "\n" + scan(lasting) + "\n")
    assert loaded.code == 0, loaded

    listed = json.loads(shelf.ctl("stock", "--drug", DRUG, "--json").out)["items"]
    flags = {p["serial"]: (p["state"], p["near_expiry"], p["expired"]) for p in listed}
    assert flags == {"NE-ENDING": ("in_stock", True, False),
                     "NE-LASTING": ("in_stock", False, False)}

    near = json.loads(shelf.ctl("stock", "--near-expiry", "--json").out)["items"]
    assert [p["serial"] for p in near] == ["NE-ENDING"]

    shown = shelf.ctl("stock", "--near-expiry")
    assert shown.code == 0, shown
    rows = shown.out.splitlines()
    assert rows[0].split()[-1] == "shelf"
    assert len(rows) == 2 and rows[1].split()[-1] == "near_expiry" and "NE-ENDING" in rows[1]
    everything = shelf.ctl("stock", "--drug", DRUG).out
    assert [line.split()[-1] for line in everything.splitlines()[1:]] == ["near_expiry", "-"]

    status = json.loads(shelf.ctl("status", "--json").out)
    assert status["stock"] == {"in_stock": 2, "near_expiry": 1, "expired": 0,
                               "quarantined": 0}
    assert "in stock 2, near expiry 1 (expired 0), quarantined 0" in shelf.ctl("status").out


def test_near_expiry_lists_packs_in_stock_only(shelf: Machine) -> None:
    ran = shelf.ctl("stock", "--near-expiry", "--state", "quarantined")
    assert ran.code == 1
    assert "near_expiry" in ran.err and "in_stock" in ran.err
