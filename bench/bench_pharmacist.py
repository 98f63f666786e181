#!/usr/bin/env python3
"""Benchmark of the pharmacist's desk (issue 10); prints figures, asserts nothing.

    .venv/bin/python bench/bench_pharmacist.py [--records 1000000] [--prescriptions 200000]
                                               [--orders 20000] [--runs 3]

Builds a journal (synchronous=FULL, WAL) holding ``--records`` imported dispensing records
(100,000 patients, ten each over the last year) and ``--prescriptions`` registered
prescriptions (two per patient, 1-3 items by ATC code), both through the core as the
daemon does it: records in calls of 1,000 (``records.import`` commits per 1,000), each call
one durable commit; prescriptions in calls of 200. Then, in a fresh process as the service
would run, it opens the journal and times the safety checks of ``--orders`` orders
(``run_checks`` as intake runs it: duplicates by ingredient over the patient's dispenses,
records and open orders, and prescription provenance), ``--runs`` times, CPU time; then
accepts the orders (``submit_many`` in batches of 1,000, fills drawn) and reports peak RSS.
The checks are also timed on an empty journal with provenance off (the checks as the
dispenser ran them before issue 10 cost 0.19-0.25 s CPU for 20,000 orders, see
docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dispenser.core import Dispensary
from dispenser.core.checks import Hold, run_checks
from dispenser.core.formulary import Formulary
from dispenser.core.history import patient_history
from dispenser.core.orders import Order, parse_order
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.journal import Journal
from dispenser.testing import FORMULARY

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=CST)
TODAY = NOW.date()
PATIENTS = 100_000
INSTITUTIONS = {"TMUGH": "Tianjin Medical University General Hospital",
                "TJ-DC1": "Tianjin Diabetes Centre", "TJ-H3": "Tianjin Third Central Hospital"}
SOURCES = [{"code": "TMUGH", "name": INSTITUTIONS["TMUGH"]},
           {"code": "CLAIMS", "name": "Tianjin medical insurance claims"},
           {"code": "PH-0042", "name": "Heping Pharmacy No. 42"}]
ACTOR = Actor("bench", "records")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_dispensary(path: Path, formulary: Formulary) -> Dispensary:
    return Dispensary(Journal(path), formulary, Policy(), SlotGeometry(), Clock(),
                      INSTITUTIONS)


def robot_by_atc(formulary: Formulary) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in formulary.values():
        if d.robot:
            out.setdefault(d.atc, []).append(d.drug_code)
    return out


def prescription_of(p: int, k: int, atcs: list[str]) -> dict[str, Any]:
    """The k-th prescription of patient p (deterministic: orders are made from it too)."""
    rng = random.Random(p * 7 + k)
    issued = TODAY - timedelta(days=rng.randrange(5, 85) + 90 * k)  # k=1: the one before
    items = rng.sample(atcs, rng.choice((1, 2, 3)))
    return {"id": f"RX-{p:06d}-{k}", "institution": rng.choice(list(INSTITUTIONS)),
            "prescriber": f"D{rng.randrange(400):03d}", "patient_id": f"P{p:06d}",
            "issued_on": issued.isoformat(), "diagnoses": ["E11.9", "I10"],
            "items": [{"atc": a, "quantity": 6, "days_supply": 90} for a in items]}


def record_of(i: int, rng: random.Random, codes: list[str]) -> dict[str, Any]:
    """The i-th dispensing record of the feed (patient i mod 100,000, three sources, a day
    of the last year and a robot product drawn from ``rng``)."""
    return {"record_id": f"R{i:08d}", "source": SOURCES[i % 3],
            "patient_id": f"P{i % PATIENTS:06d}",
            "dispensed_on": (TODAY - timedelta(days=rng.randrange(365))).isoformat(),
            "drug_code": rng.choice(codes), "quantity": 1 + i % 3, "days_supply": 30}


def build(path: Path, n_records: int, n_rx: int, formulary: Formulary) -> None:
    d = open_dispensary(path, formulary)
    rng = random.Random(10)
    codes = [c for c in formulary if formulary[c].robot]
    t, c = time.perf_counter(), time.process_time()
    batch: list[dict[str, Any]] = []
    for i in range(n_records):
        batch.append(record_of(i, rng, codes))
        if len(batch) == 1000:
            d.import_records(batch, ACTOR)
            batch = []
    if batch:
        d.import_records(batch, ACTOR)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if n_records:
        print(f"import {n_records:,} records in calls of 1,000 (one durable commit each): "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU: {n_records / wall:,.0f} records/s")
    atcs = sorted(robot_by_atc(formulary))
    t = time.perf_counter()
    rxs: list[dict[str, Any]] = []
    for i in range(n_rx):
        rxs.append(prescription_of(i % PATIENTS, i // PATIENTS, atcs))
        if len(rxs) == 200:
            d.register_prescriptions(rxs, ACTOR)
            rxs = []
    if rxs:
        d.register_prescriptions(rxs, ACTOR)
    wall = time.perf_counter() - t
    if n_rx:
        print(f"register {n_rx:,} prescriptions in calls of 200: {wall:.1f} s "
              f"({n_rx / wall:,.0f} prescriptions/s)")
    d.journal.close()
    print(f"journal: {path.stat().st_size / 1e6:,.0f} MB")


def orders(n: int, n_rx: int, formulary: Formulary) -> Iterator[dict[str, Any]]:
    """Orders citing registered prescriptions (most), 2 % unregistered ones."""
    rng = random.Random(7)
    by_atc = robot_by_atc(formulary)
    atcs = sorted(by_atc)
    for i in range(n):
        p = rng.randrange(min(PATIENTS, max(n_rx, 1)))
        rx = prescription_of(p, 0, atcs)
        if rng.random() < 0.02 or n_rx == 0:
            rx = dict(rx, id=f"RX-UNREG-{i}")
        start = datetime(2026, 11, 24, 9, tzinfo=CST)
        yield {
            "order_id": f"SO-{i:06d}",
            "patient": {"id": rx["patient_id"], "name": "王建国"},
            "prescription": {"id": rx["id"], "issued_on": rx["issued_on"],
                             "institution": rx["institution"],
                             "prescriber": rx["prescriber"], "diagnoses": ["E11.9"]},
            "items": [{"drug_code": rng.choice(by_atc[it["atc"]]), "quantity": 1,
                       "days_supply": 30} for it in rx["items"]],
            "delivery": {"address": f"{p} Anshan Road, Heping District, Tianjin",
                         "window_start": start.isoformat(),
                         "window_end": (start + timedelta(hours=3)).isoformat()}}


def check_phase(path: Path, n: int, n_rx: int, runs: int, provenance: bool) -> None:
    """In a fresh process: time the checks, accept the orders, report memory."""
    formulary = Formulary.load(FORMULARY)
    parsed: list[Order] = [parse_order(r) for r in orders(n, n_rx, formulary)]
    d = open_dispensary(path, formulary)
    policy = d.policy if provenance else Policy(prescription_provenance="off")
    rxs = d.prescriptions
    action = rxs.action(policy)

    def rule(o: Order) -> tuple[list[Hold], bool]:
        a = rxs.assess(o)
        return a.holds, a.registered

    times, holds = [], {}
    for _ in range(runs):
        c = time.process_time()
        holds = {}
        for o in parsed:
            for r in run_checks(o, policy, TODAY,
                                lambda order: patient_history(d.journal, d.orders, order,
                                                              d.supplies),
                                drugs=formulary,
                                provenance=(action, rule) if action != "off" else None,
                                now=NOW):
                for h in r.holds:
                    holds[h.code] = holds.get(h.code, 0) + 1
        times.append(time.process_time() - c)
    print(f"checks of {n:,} orders (provenance {action}): "
          + " / ".join(f"{t:.3f}" for t in times)
          + f" s CPU (median {statistics.median(times):.3f} s); holds by reason: {holds}")
    d.journal.close()


def accept_phase(path: Path, n: int, n_rx: int) -> None:
    """In a fresh process, as the daemon holds it: open the journal, accept the orders
    (made 1,000 at a time, not kept), report peak RSS."""
    formulary = Formulary.load(FORMULARY)
    d = open_dispensary(path, formulary)
    opened = peak_rss_mb()
    c, t = time.process_time(), time.perf_counter()
    batch: list[dict[str, Any]] = []
    for o in orders(n, n_rx, formulary):
        batch.append(o)
        if len(batch) == 1000:
            d.submit_many(batch, Actor("bench", "order_system"))
            batch = []
    if batch:
        d.submit_many(batch, Actor("bench", "order_system"))
    print(f"accept {n:,} orders via submit_many(1000) with the checks and fills: "
          f"{time.perf_counter() - t:.2f} s wall, {time.process_time() - c:.2f} s CPU")
    print(f"peak RSS: {opened:.0f} MB after opening the journal, {peak_rss_mb():.0f} MB with "
          f"{len(d.orders.live):,} live orders")
    d.journal.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--prescriptions", type=int, default=200_000)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--phase", choices=("all", "check", "empty", "accept"), default="all")
    ap.add_argument("--journal", type=Path)
    args = ap.parse_args()
    if args.phase == "check":
        check_phase(args.journal, args.orders, args.prescriptions, args.runs, True)
        return 0
    if args.phase == "accept":
        accept_phase(args.journal, args.orders, args.prescriptions)
        return 0
    if args.phase == "empty":
        check_phase(args.journal, args.orders, 0, args.runs, False)
        return 0
    formulary = Formulary.load(FORMULARY)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.db"
        open_dispensary(empty, formulary).journal.close()
        subprocess.run([sys.executable, __file__, "--phase", "empty", "--journal", str(empty),
                        "--orders", str(args.orders), "--runs", str(args.runs)], check=True)
        path = Path(tmp) / "journal.db"
        build(path, args.records, args.prescriptions, formulary)
        subprocess.run([sys.executable, __file__, "--phase", "check", "--journal", str(path),
                        "--orders", str(args.orders), "--prescriptions",
                        str(args.prescriptions), "--runs", str(args.runs)], check=True)
        subprocess.run([sys.executable, __file__, "--phase", "accept", "--journal", str(path),
                        "--orders", str(args.orders), "--prescriptions",
                        str(args.prescriptions)], check=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
