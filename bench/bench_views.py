#!/usr/bin/env python3
"""What a shipment's view costs the scheduler; prints figures, asserts nothing.

    .venv/bin/python -m bench.bench_views [--orders 2000] [--packs 6000] [--runs 5]

Builds a core as ``bench_core`` does (packs stored, orders accepted, shipments formed),
then times, CPU, in one process and one run of each:

- every queued shipment's view built twice in a row: the first pass reads and parses each
  shipment's first order body from the journal, the second finds it kept
  (``Dispensary._first_bodies``), so the pair is the saving of keeping it;
- the tote planner's question "the next shipments, take the first 4" asked with
  ``next_shipments(limit=8)`` (every view built) and ``iter_next_shipments(limit=8)``
  (only the views taken), ``--runs`` times each, interleaved.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bench.bench_core import Clock, orders
from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.policy import Policy
from dispenser.core.states import ShipmentState
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.journal import Journal
from dispenser.testing import FORMULARY


def build(path: Path, n_orders: int, n_packs: int) -> Dispensary:
    rng = random.Random(7)
    formulary = Formulary.load(FORMULARY)
    robot = [d.drug_code for d in formulary.values() if d.robot]
    actor = Actor("bench", "api")
    clock = Clock()
    d = Dispensary(Journal(path), formulary, Policy(), SlotGeometry(), clock)
    with d.batch():
        for i in range(n_packs):
            code = robot[i % len(robot)]
            p = d.begin_load(compose_scan(code, "281231", "L1", f"S{i:08d}"), actor)
            d.confirm_stored(p.pack_id)
    raws = orders(n_orders, robot, rng)
    for start in range(0, len(raws), 1000):
        d.submit_many(raws[start:start + 1000], actor)
    clock.now += timedelta(hours=1)  # past every merge window
    d.form_shipments()
    return d


def cpu(fn: Callable[[], object]) -> float:
    c = time.process_time()
    fn()
    return time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--packs", type=int, default=6000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        d = build(Path(tmp) / "journal.db", args.orders, args.packs)
        queued = [v.shipment_id for v in d.list_shipments(ShipmentState.QUEUED, limit=100000)]
        d._first_bodies.clear()
        cold = cpu(lambda: [d.get_shipment(s) for s in queued])
        warm = cpu(lambda: [d.get_shipment(s) for s in queued])
        n = max(1, len(queued))
        print(f"{len(queued)} queued shipments; a view: first {cold / n * 1e6:.0f} us CPU "
              f"(first order's body read and parsed), again {warm / n * 1e6:.0f} us "
              f"(kept)")
        eager, lazy = [], []
        for _ in range(args.runs):
            eager.append(cpu(lambda: d.next_shipments(limit=8)[:4]))
            lazy.append(cpu(lambda: list(itertools.islice(d.iter_next_shipments(limit=8), 4))))
        print(f"the next shipments, 4 taken of 8: next_shipments "
              f"{statistics.median(eager) * 1e3:.2f} ms, iter_next_shipments "
              f"{statistics.median(lazy) * 1e3:.2f} ms CPU (median of {args.runs})")
        d.journal.close()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
