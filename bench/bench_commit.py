#!/usr/bin/env python3
"""What a journal commit costs (WAL, ``synchronous=FULL``), per commit and per write,
with 1, 4 and 16 small writes to a commit, as the robot ledger's completions make them.

::

    .venv/bin/python bench/bench_commit.py          # --writes 1600 --rounds 3

Each write is an ``UPDATE`` by key and an audit row, in its own savepoint, like a
completion applied with its cursor. CPU (``time.process_time``) and wall time, printed
with the load average; the rounds alternate the group sizes. Nothing asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dispenser.journal import Journal


def run(journal: Journal, writes: int, group: int) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    for start in range(0, writes, group):
        with journal.transaction():
            for k in range(start, min(writes, start + group)):
                with journal.transaction():
                    journal.write("UPDATE bench_cursor SET applied = ? WHERE id = 1", (k,))
                    journal.audit("2026-01-01T00:00:00+00:00", "system", "system",
                                  "bench.write", f"w{k}", None, {"k": k})
    return time.process_time() - c, time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=1600)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite", new_audit_key=True)
        with journal.transaction():
            journal.write("CREATE TABLE bench_cursor (id INTEGER PRIMARY KEY, applied INTEGER)")
            journal.write("INSERT INTO bench_cursor VALUES (1, 0)")
        totals = {g: [0.0, 0.0] for g in (1, 4, 16)}
        for _ in range(args.rounds):
            for g in totals:
                cpu, wall = run(journal, args.writes, g)
                totals[g][0] += cpu
                totals[g][1] += wall
        journal.close()
    n = args.writes * args.rounds
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for g, (cpu, wall) in totals.items():
        commits = n / g
        print(f"{g:2d} writes per commit: {1e6 * cpu / n:6.0f} us CPU / {1e6 * wall / n:6.0f} us "
              f"wall per write; {1e3 * cpu / commits:.2f} ms CPU / {1e3 * wall / commits:.2f} ms "
              f"wall per commit")


if __name__ == "__main__":
    main()
