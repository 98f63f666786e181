"""What ``top``, ``orders``, ``holds`` and ``shipment`` show, against a running dispenserd.

A machine of its own gets the same small day every time (packs with fixed serials, orders
with fixed ids: one completed, two shipments waiting for a fridge pack in labelling, orders
held by checks and for stock). Each view is run as a person runs it: in a real terminal of
80x24 and of 120x40 (a pseudo-terminal of that size), and into a pipe. The output is
compared with the files in ``tests/cli/snapshots/``; times, which change from run to run,
are replaced by ``YYYY-MM-DD hh:mm:ssZ`` of the same width first.

When a change to the screens is meant, write the snapshots anew and review the diff:

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/cli/test_screens.py -p no:cacheprovider
    git diff tests/cli/snapshots/
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from dispenser.testing import Daemon, Sim, drugs, order, pack, scan, wait_until
from dispenser.testing.cli import Machine

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"

A, B, C = (drugs()["robot"][i]["drug_code"] for i in (20, 21, 22))  # C is never in stock
FRIDGE = drugs()["fridge"][1]["drug_code"]
PACKS = [*(pack(A, "SA1", date(2031, 6, 30), f"SNAP-A-{i}") for i in range(1, 5)),
         *(pack(B, "SB1", date(2031, 3, 31), f"SNAP-B-{i}") for i in range(1, 3))]
ORDERS = [
    order("DEMO-20261128-0001", "P-00001", [(A, 1)]),
    order("DEMO-20261128-0002", "P-00002", [(A, 1), (FRIDGE, 1)]),
    order("DEMO-20261128-0003", "P-00003", [(B, 1), (FRIDGE, 1)]),
    order("DEMO-20261128-0004", "P-00003", [(A, 1)]),  # merged with 0003
    order("DEMO-20261128-0005", "P-00005", [(A, 2)], diagnoses=("J45",)),
    order("DEMO-20261128-0006", "P-00006", [(C, 1)]),
    order("DEMO-20261128-0007", "P-00007", [(B, 13)], diagnoses=("J45",)),
    order("DEMO-20261128-0008", "P-00008", [(A, 1), (C, 2)]),
]
SETTLED = {"DEMO-20261128-0001": "completed", "DEMO-20261128-0002": "labelling",
           "DEMO-20261128-0003": "labelling", "DEMO-20261128-0004": "labelling",
           "DEMO-20261128-0005": "held", "DEMO-20261128-0006": "held",
           "DEMO-20261128-0007": "held", "DEMO-20261128-0008": "held"}
SIZES = {"80": (80, 24), "120": (120, 40)}

_TIME = re.compile(r"\d{4}-\d\d-\d\d([ T])\d\d:\d\d:\d\dZ")
BOX = re.compile("[\u2500-\u257f]")


def _states(machine: Machine) -> dict[str, str]:
    page = json.loads(machine.ctl("orders", "--json").out)
    return {o["order_id"]: o["state"] for o in page["items"]}


def _settled(machine: Machine) -> bool:
    if _states(machine) != SETTLED:
        return False
    status = json.loads(machine.ctl("status", "--json").out)
    return bool(status["robot"].get("queue_depth") == 0 and not status["printer"]["waiting"]
                and status["shipments"].get("completed") == 1)


@pytest.fixture(scope="module")
def day() -> Iterator[Machine]:
    workdir = Path(tempfile.mkdtemp(prefix="dscr", dir="/tmp"))
    sim = Sim(workdir, instant=True)
    sim.start()
    daemon = Daemon(workdir, sim)
    try:
        daemon.start()
        machine = Machine(sim, daemon)
        wait_until(lambda: json.loads(machine.ctl("status", "--json").out)["state"] == "ready",
                   "machine ready")
        machine.sim_call("sim.put_input", {"packs": PACKS})
        loaded = machine.ctl("load", stdin="".join(scan(p) + "\n" for p in PACKS))
        assert loaded.code == 0, loaded
        submitted = machine.ctl("submit", "-", stdin="".join(json.dumps(o) + "\n"
                                                               for o in ORDERS))
        assert submitted.code == 0, submitted
        wait_until(lambda: _settled(machine), "the day settled", timeout=60)
        yield machine
    finally:
        try:
            daemon.stop()
        finally:
            sim.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def stable(text: str) -> str:
    """Times replaced by a same-width placeholder; trailing blanks (a terminal's padding)
    dropped."""
    text = _TIME.sub(lambda m: f"YYYY-MM-DD{m.group(1)}hh:mm:ssZ", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip("\n") + "\n"


def check_snapshot(name: str, shown: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE or not path.exists():
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(shown)
        if not UPDATE:
            pytest.fail(f"{path} was missing and is written now: review and commit it")
        return
    assert shown == path.read_text(), (
        f"{name} differs from {path}; if the change is meant, run with UPDATE_SNAPSHOTS=1 "
        "and review the diff")


def _shipment_of(machine: Machine, order_id: str) -> str:
    shipment: str = json.loads(machine.ctl("order", order_id, "--json").out)["shipment_id"]
    return shipment


def _views(machine: Machine) -> dict[str, tuple[str, ...]]:
    return {"top": ("top", "--once"), "orders": ("orders",), "holds": ("holds",),
            "shipment": ("shipment", _shipment_of(machine, "DEMO-20261128-0003"))}


VIEWS = ("top", "orders", "holds", "shipment")


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("view", VIEWS)
def test_terminal_snapshot(day: Machine, view: str, size: str) -> None:
    columns, lines = SIZES[size]
    ran = day.ctl_tty(*_views(day)[view], columns=columns, lines=lines)
    assert ran.code == 0, ran
    assert all(len(line) <= columns for line in ran.out.splitlines()), ran.out
    check_snapshot(f"{view}-{columns}x{lines}", stable(ran.out))


@pytest.mark.parametrize("view", VIEWS)
def test_piped_snapshot(day: Machine, view: str) -> None:
    ran = day.ctl(*_views(day)[view])
    assert ran.code == 0, ran
    assert not BOX.search(ran.out), ran.out
    check_snapshot(f"{view}-piped", stable(ran.out))


def _ids(page: dict[str, Any], key: str) -> list[str]:
    return [str(item[key]) for item in page["items"]]


@pytest.mark.parametrize(("command", "key"), [
    (("orders",), "order_id"), (("holds",), "order_id"), (("shipments",), "shipment_id"),
    (("stock",), "serial"), (("stock",), "drug_code"),
])
def test_ids_and_states_are_whole_at_80_columns(day: Machine, command: tuple[str, ...],
                                                key: str) -> None:
    page = json.loads(day.ctl(*command, "--json").out)
    assert page["items"]
    shown = day.ctl_tty(*command, columns=80, lines=24).out
    words = set(re.split(r"[\s│┃,]+", shown))
    for item in page["items"]:
        assert str(item[key]) in words, f"{item[key]} cut in:\n{shown}"
        assert item["state"] in words, f"{item['state']} cut in:\n{shown}"


def test_top_fits_80x24_with_ids_whole(day: Machine) -> None:
    shown = day.ctl_tty("top", "--once", columns=80, lines=24).out
    rows = shown.rstrip("\n").split("\n")
    assert len(rows) <= 23 and all(len(row) <= 80 for row in rows), shown
    current = json.loads(day.ctl("top", "--json").out)["shipments"]
    assert current
    words = set(re.split(r"[\s│┃,]+", shown))
    for shipment in current:
        assert shipment["shipment_id"] in words and shipment["state"] in words, shown
        assert set(shipment["order_ids"]) <= words, shown


def test_top_splits_held_into_checks_and_stock_short(day: Machine) -> None:
    status = json.loads(day.ctl("status", "--json").out)
    assert status["orders"]["held"] == 4
    assert status["held_orders"] == {"checks": 2, "stock_short": 2}
    shown = day.ctl_tty("top", "--once", columns=80, lines=24).out
    assert "held 4 (checks 2, stock_short 2)" in shown


def test_piped_list_is_plain_columns_for_shell_tools(day: Machine) -> None:
    page = json.loads(day.ctl("shipments", "--json").out)
    ran = day.ctl("shipments")
    header, *rows = ran.out.splitlines()
    assert header.split() == ["shipment", "state", "orders", "patient", "output", "fridge",
                              "packs", "created"]
    # Every cell is one word: awk '{print $1, $2}' gives each shipment's id and state.
    assert [row.split()[:2] for row in rows] == [[s["shipment_id"], s["state"]]
                                                 for s in page["items"]]
    assert all(len(row.split()) == 8 for row in rows), ran.out
    assert not BOX.search(ran.out)

    # A page hint goes to stderr, not among the rows.
    first = day.ctl("orders", "--limit", "2")
    assert len(first.out.splitlines()) == 3
    assert first.err.strip() == "more: repeat with --after DEMO-20261128-0002"


def test_lines_and_packs_are_counted_apart(day: Machine) -> None:
    ran = day.ctl("orders")
    header, *rows = ran.out.splitlines()
    columns = header.split()
    assert "items" not in columns
    by_id = {row.split()[0]: dict(zip(columns, row.split(), strict=False)) for row in rows}
    assert by_id["DEMO-20261128-0008"]["lines"] == "2"  # two drugs ...
    assert by_id["DEMO-20261128-0008"]["packs"] == "3"  # ... 1 + 2 packs
