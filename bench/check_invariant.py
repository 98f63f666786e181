#!/usr/bin/env python3
"""Check the ledger invariant of a kept campaign or benchmark directory: start its
simulator and daemon again on their state and journal, and compare them pack by pack
(``dispenser.testing.invariant``).

Usage: bench/check_invariant.py DIR   (exit status 0 when the invariant holds)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from dispenser.testing import Stack


async def recheck(workdir: Path) -> int:
    stack = Stack(workdir)
    try:
        await stack.start()
        report = await stack.check_invariant(raise_on_problem=False)
    finally:
        await stack.stop()
    print(json.dumps(report.summary(), indent=1))
    for p in report.problems[:50]:
        print("  " + p)
    return 0 if report.ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="a kept campaign or benchmark directory "
                    "(its journal and the simulator's state)")
    args = ap.parse_args()
    if not args.workdir.is_dir():
        ap.error(f"{args.workdir} is not a directory")
    return asyncio.run(recheck(args.workdir))


if __name__ == "__main__":
    sys.exit(main())
