#!/usr/bin/env python3
"""Benchmark of the dispensing core; prints figures, asserts nothing.

    .venv/bin/python bench/bench_core.py [--orders 20000] [--packs 20000] [--runs 3]
    .venv/bin/python bench/bench_core.py --phase accept [--keyed]

Loads packs into a fresh journal (synchronous=FULL, WAL), accepts orders through
``submit_many`` in batches, forms shipments (merge + FEFO allocation), reopens the journal
and reports peak RSS. ``--keyed`` (with ``--phase accept``) keys the audit chain as the
daemon does (HMAC rows, the checkpoint written by its thread after each commit). The safety
checks and the merge round are timed ``--runs`` times
(the round each time in a fresh process on a fresh copy of the journal): CPU time on a
shared machine varies from run to run, so each run is printed and the median is used.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dispenser.core import Dispensary
from dispenser.core.checks import run_checks
from dispenser.core.formulary import Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.history import patient_history
from dispenser.core.orders import parse_order
from dispenser.core.policy import Policy
from dispenser.core.states import ShipmentState
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.journal import AuditKey, Journal
from dispenser.testing import FORMULARY

CST = timezone(timedelta(hours=8))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 8, 0, tzinfo=CST)

    def __call__(self) -> datetime:
        return self.now


def orders(n: int, codes: list[str], rng: random.Random) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    patients = max(1, int(n * 0.6))
    for i in range(n):
        p = rng.randrange(patients)
        k = rng.choice((1, 2, 3, 4))  # mean 2.5 items
        start = datetime(2026, 11, 24, 9, tzinfo=CST) + timedelta(hours=3 * rng.randrange(4))
        out.append({
            "order_id": f"SO-20261123-{i:06d}",
            "patient": {"id": f"P{p:06d}", "name": "王建国", "phone": "13800000000"},
            "prescription": {"id": f"RX-{i:06d}", "issued_on": "2026-11-01",
                             "institution": "Tianjin Medical University General Hospital",
                             "prescriber": "Dr. Li", "diagnoses": ["E11.9", "I10"]},
            "items": [{"drug_code": c, "quantity": 1, "days_supply": 30}
                      for c in rng.sample(codes, k)],
            "delivery": {"address": f"{p} Anshan Road, Heping District, Tianjin",
                         "window_start": start.isoformat(),
                         "window_end": (start + timedelta(hours=3)).isoformat()},
            "priority": rng.choice(("normal", "normal", "normal", "high", "low", "urgent")),
        })
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20000)
    ap.add_argument("--packs", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1000, help="orders per submit_many call")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of checks and merge round")
    ap.add_argument("--phase", default="all", choices=("all", "accept", "close", "form"))
    ap.add_argument("--journal", type=Path)
    ap.add_argument("--keyed", action="store_true",
                    help="with --phase accept: a keyed audit chain and its checkpoint")
    args = ap.parse_args()
    if args.keyed and args.phase != "accept":
        ap.error("--keyed measures the accept phase only (use --phase accept)")
    if args.phase == "form":
        return form_phase(args.journal)
    if args.phase == "close":
        return close_phase(args.journal)
    rng = random.Random(7)
    formulary = Formulary.load(FORMULARY)
    robot = [d.drug_code for d in formulary.values() if d.robot]
    actor = Actor("bench", "api")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(os.environ.get("BENCH_JOURNAL") or Path(tmp) / "journal.db")
        clock = Clock()
        key = AuditKey.generate() if args.keyed else None
        d = Dispensary(Journal(path, audit_key=key), formulary, Policy(), SlotGeometry(),
                       clock)

        t = time.perf_counter()
        with d.batch():
            for i in range(args.packs):
                code = robot[i % len(robot)]
                batch = rng.randrange(3)  # a batch has one expiry date
                exp = f"{27 + batch}{(i % len(robot)) % 12 + 1:02d}00"
                p = d.begin_load(compose_scan(code, exp, f"L{batch}", f"S{i:08d}"), actor)
                d.confirm_stored(p.pack_id)
        t_load = time.perf_counter() - t

        raws = orders(args.orders, list(formulary), rng)
        parsed = [parse_order(r) for r in raws]
        checks_runs = []
        for _ in range(args.runs):
            t = time.process_time()
            for o in parsed:
                run_checks(o, d.policy, clock().date(),
                           lambda order: patient_history(d.journal, d.orders, order,
                                                         d.supplies),
                           drugs=d.formulary, now=clock())
            checks_runs.append(time.process_time() - t)
        t_checks = statistics.median(checks_runs)

        t = time.perf_counter()
        refused = 0
        for i in range(0, len(raws), args.batch):
            res = d.submit_many(raws[i:i + args.batch], actor)
            refused += sum(1 for r in res if isinstance(r, Exception))
        t_submit = time.perf_counter() - t

        d.journal.close()
        # Forming, reopening and memory are measured in a fresh process, as the service
        # would run: it holds the 20,000 live orders, not the generated test data.
        if args.phase == "accept":
            print(f"accept {args.orders} orders via submit_many({args.batch}), "
                  f"{'keyed audit chain + checkpoint' if key else 'plain audit chain'}: "
                  f"{t_submit:.2f} s ({args.orders / t_submit:,.0f} orders/s), refused "
                  f"{refused}; load {args.packs} packs {t_load:.2f} s")
            return 0
        copy = path.with_name(path.name + ".copy")
        out = ""
        close_runs = []
        for _ in range(args.runs):
            shutil.copyfile(path, copy)
            line = subprocess.run([sys.executable, __file__, "--phase", "close", "--journal",
                                   str(copy)], check=True, capture_output=True, text=True).stdout
            close_runs.append(float(line.split(" s wall, ")[1].split(" s CPU")[0]))
            out += line
            for suffix in ("", "-wal", "-shm"):
                Path(str(copy) + suffix).unlink(missing_ok=True)
        out += subprocess.run([sys.executable, __file__, "--phase", "form", "--journal",
                               str(path)], check=True, capture_output=True, text=True).stdout
        n = args.orders
        print(f"load {args.packs} packs (one transaction): {t_load:.2f} s "
              f"({args.packs / t_load:,.0f} packs/s)")
        print(f"safety checks alone, {n} orders: {t_checks:.3f} s CPU (median; runs "
              + ", ".join(f"{c:.3f}" for c in checks_runs) + ")")
        print(f"accept {n} orders via submit_many({args.batch}) incl. checks, durable "
              f"commits: {t_submit:.2f} s ({n / t_submit:,.0f} orders/s), refused {refused}")
        print(out, end="")
        closing = statistics.median(close_runs)
        print(f"check + merge + allocate, CPU: {t_checks + closing:.3f} s "
              f"(medians: checks {t_checks:.3f} s + closing merge windows {closing:.3f} s; "
              f"fastest runs {min(checks_runs) + min(close_runs):.3f} s)")
    return 0


def peak_rss_mb() -> float:
    """High-water RSS of this process image (VmHWM; ru_maxrss survives exec on Linux and
    would report the parent's peak)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def close_phase(path: Path) -> int:
    """The merge round without building views (``close_merge_windows``)."""
    formulary = Formulary.load(FORMULARY)
    clock = Clock()
    clock.now += timedelta(seconds=301)
    d = Dispensary(Journal(path), formulary, Policy(), SlotGeometry(), clock)
    t, c = time.perf_counter(), time.process_time()
    ids = d.close_merge_windows()
    t_close, c_close = time.perf_counter() - t, time.process_time() - c
    d.journal.close()
    print(f"close merge windows (merge + FEFO allocation + journal, {len(ids)} shipments): "
          f"{t_close:.3f} s wall, {c_close:.3f} s CPU")
    return 0


def form_phase(path: Path) -> int:
    formulary = Formulary.load(FORMULARY)
    clock = Clock()
    clock.now += timedelta(seconds=301)
    t = time.perf_counter()
    d = Dispensary(Journal(path), formulary, Policy(), SlotGeometry(), clock)
    t_open = time.perf_counter() - t
    live = len(d.orders.live)
    rss_open = peak_rss_mb()
    t, c = time.perf_counter(), time.process_time()
    formed = d.form_shipments()
    t_form, c_form = time.perf_counter() - t, time.process_time() - c
    queued = sum(1 for s in formed if s.state is ShipmentState.QUEUED)
    held = sum(1 for s in formed if s.state is ShipmentState.HELD)
    rss = peak_rss_mb()
    d.journal.close()
    t = time.perf_counter()
    d = Dispensary(Journal(path), formulary, Policy(), SlotGeometry(), clock)
    t_reopen = time.perf_counter() - t
    t = time.perf_counter()
    ok = d.audit_verify()
    t_verify = time.perf_counter() - t
    print(f"open with {live} live orders: {t_open:.3f} s (peak RSS {rss_open:.0f} MB)")
    print(f"form shipments (the same + views): {t_form:.3f} s wall, {c_form:.3f} s CPU for "
          f"{len(formed)} shipments ({queued} queued, {held} held stock_short)")
    print(f"reopen after forming: {t_reopen:.3f} s")
    print(f"audit verify ({ok.rows} rows, ok={ok.ok}): {t_verify:.2f} s")
    print(f"peak RSS of the service process with {live} live orders, after forming: "
          f"{rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
