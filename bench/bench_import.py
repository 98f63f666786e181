#!/usr/bin/env python3
"""What ``records.import`` costs per record; prints figures, asserts nothing.

    .venv/bin/python -m bench.bench_import [--records 200000] [--per-call 1000] [--again 0]
                                           [--profile 0]

Imports ``--records`` dispensing records into a fresh journal (synchronous=FULL, WAL, in a
temporary directory) through ``Dispensary.import_records`` in calls of ``--per-call``,
each call one durable transaction, as ``records.import`` commits them. The records are
made as ``bench_pharmacist``'s ``build()`` makes them (100,000 patients, three sources, a
robot product, a day of the last year), each call's records before its clock starts: only
the import is timed. Prints records/s (wall) and CPU microseconds per record, and the load
average before and after. ``--again N`` then sends the first N records once more (each
answered ``unchanged``) and times that too; ``--profile K`` runs the import under cProfile
(CPU time) and prints its K most costly functions instead (figures then include the
profiler's overhead).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.bench_pharmacist import ACTOR, open_dispensary, record_of
from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.testing import FORMULARY


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def send(d: Dispensary, first: int, n: int, per_call: int, codes: list[str],
         seed: int) -> tuple[float, float, Counter[str]]:
    """Import records first..first+n-1 in calls of ``per_call``; (wall s, CPU s, statuses)
    of the import calls alone."""
    rng = random.Random(seed)
    wall = cpu = 0.0
    statuses: Counter[str] = Counter()
    for start in range(first, first + n, per_call):
        batch: list[dict[str, Any]] = [record_of(i, rng, codes)
                                       for i in range(start, min(start + per_call, first + n))]
        t, c = time.perf_counter(), time.process_time()
        out = d.import_records(batch, ACTOR)
        wall += time.perf_counter() - t
        cpu += time.process_time() - c
        statuses.update(o.status for o in out)
    return wall, cpu, statuses


def report(what: str, n: int, wall: float, cpu: float, statuses: Counter[str]) -> None:
    print(f"{what}: {n:,} records, {wall:.2f} s wall, {cpu:.2f} s CPU: "
          f"{n / wall:,.0f} records/s wall, {cpu / n * 1e6:.1f} us CPU/record "
          f"({', '.join(f'{k} {v:,}' for k, v in sorted(statuses.items()))})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--per-call", type=int, default=1000)
    ap.add_argument("--again", type=int, default=0,
                    help="send the first N records again (answered unchanged)")
    ap.add_argument("--profile", type=int, default=0,
                    help="profile the import and print the K most costly functions")
    args = ap.parse_args()
    formulary = Formulary.load(FORMULARY)
    codes = [c for c in formulary if formulary[c].robot]
    print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        d = open_dispensary(Path(tmp) / "journal.db", formulary)
        if args.profile:
            prof = cProfile.Profile(time.process_time)
            prof.enable()
        wall, cpu, statuses = send(d, 0, args.records, args.per_call, codes, seed=10)
        if args.profile:
            prof.disable()
        report(f"import in calls of {args.per_call:,} (one durable commit each)",
               args.records, wall, cpu, statuses)
        if args.again:
            n = min(args.again, args.records)
            wall, cpu, statuses = send(d, 0, n, args.per_call, codes, seed=10)
            report("the same records again", n, wall, cpu, statuses)
        d.journal.close()
    print(f"load average at end: {load()}")
    if args.profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
