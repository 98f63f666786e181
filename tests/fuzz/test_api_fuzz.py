"""A short fuzz run against dispenserd and dispenser-sim as processes (about 1,000 cases).

The full run is ``.venv/bin/python bench/fuzz_api.py --cases N --seed S`` (docs/reliability.md,
section API fuzzing). ``FUZZ_SEED`` replays a given seed here; the seed is in the failure
message either way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from bench.fuzz_api import Target, failure_groups, live_stack, run

SEED = int(os.environ.get("FUZZ_SEED", "20261128"))

# Failures of a known, still open defect (docs/reliability.md lists them): tolerated here so
# that the run still catches everything else. Each entry: (category or "*", pattern of the
# problem, pattern of the payload).
SURROGATE = rb"\\u[dD][89a-fA-F]"
KNOWN_OPEN: list[tuple[str, str, bytes]] = [
    # Finding 1: a \ud800 escape in an id closes the connection (the reply cannot be
    # encoded).
    ("*", "closed the connection", SURROGATE),
    # Finding 2: an integer of more than 4300 digits closes the connection.
    ("*", "closed the connection", rb"\d{4301}"),
    # Finding 4: NaN and Infinity are taken as numbers.
    ("malformed_json", "NaN/Infinity|reply id", rb"NaN|Infinity"),
    # Finding 6: system.ping and events.unsubscribe ignore unknown params.
    ("hostile_params", "got a result", rb"system\.ping|events\.unsubscribe"),
    # Finding 8: numbers (and numeric strings) are taken as Unix times for an order's dates.
    ("hostile_orders", "got a result|got None",
     rb'"(window_start|window_end|issued_on)": "?[0-9]+(\.[0-9]+)?"?[,}]'),
    # The daemon's log of findings 1 and 2 (unhandled exceptions in a connection's task).
    ("invariants", "the daemon logged", b""),
    # Finding 7: events.subscribe's and auth.login's -32602 have no data.errors.
    ("*", "without data.errors", rb"events\.subscribe|auth\.login"),
]


def known(category: str, problem: str, payload: bytes) -> bool:
    return any((c in ("*", category)) and re.search(p, problem) and re.search(b, payload)
               for c, p, b in KNOWN_OPEN)


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with live_stack() as t:
        yield t


@pytest.mark.timeout(180)
def test_short_fuzz_run_breaks_no_promise(target: Target) -> None:
    report = run(target, cases=550, seed=SEED, concurrency=100)
    total = sum(report.cases.values())
    assert total >= 1000, report.render()
    unknown = [f for f in report.failures
               if not all(known(f.category, p, f.payload) for p in f.problems)]
    if unknown:
        lines = [report.render(), f"replay: FUZZ_SEED={SEED} or bench/fuzz_api.py --cases 550 "
                                  f"--seed {SEED}"]
        for (category, kind), failures in failure_groups(report).items():
            failures = [f for f in failures if f in unknown]
            if not failures:
                continue
            f = failures[0]
            lines.append(f"[{category}] x{len(failures)} {kind}: {f.payload[:200]!r} "
                         f"-> {f.problems}")
        pytest.fail("\n".join(lines))
    assert target.alive()
