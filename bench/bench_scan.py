#!/usr/bin/env python3
"""What a pack scan's GS1 parse costs, and the same scan parsed again (remembered).

::

    .venv/bin/python bench/bench_scan.py            # --scans 2000

A load parses its scan several times (the API's check, the check when its STORE is
planned, the robot's input scanner): each time after the first comes from the cache of
``dispenser.core.gs1.parse_scan``. CPU time (``time.process_time``), printed with the load
average; nothing asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dispenser.core.gs1 import compose_scan, parse_scan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=2000)
    args = p.parse_args()
    scans = [compose_scan("04150123456782", "280131", f"B{k % 50}", f"S{k:08d}")
             for k in range(args.scans)]
    parse_scan.cache_clear()
    t = time.process_time()
    for s in scans:
        parse_scan(s)
    first = time.process_time() - t
    t = time.process_time()
    for _ in range(3):
        for s in scans:
            parse_scan(s)
    again = time.process_time() - t
    n = len(scans)
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"first parse: {1e6 * first / n:.1f} us CPU per scan ({n} scans)")
    print(f"parsed again: {1e6 * again / (3 * n):.2f} us CPU per scan")


if __name__ == "__main__":
    main()
