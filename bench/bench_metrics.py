#!/usr/bin/env python3
"""What a Prometheus scrape costs at a full machine; prints figures, asserts nothing.

    .venv/bin/python -m bench.bench_metrics [--orders 20000] [--packs 20000] [--runs 50]

Fills a journal through the core (packs stored, orders accepted, shipments formed: many
held stock_short, as at the start of a day), opens a daemon on it with ``[metrics]`` on
(its robot is an idle in-process simulator; the working loop does not run) and times
reading the metrics as a scrape does (``generate_latest`` on the daemon's registry, on the
event loop), ``--runs`` times: the median and the slowest are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import generate_latest

from bench.bench_core import orders
from dispenser.config import parse_config
from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.daemon.app import Daemon
from dispenser.journal import Journal
from dispenser.testing import FORMULARY
from firmware_sim import Simulator, SimulatorOptions


def fill(path: Path, n_orders: int, n_packs: int) -> None:
    rng = random.Random(7)
    formulary = Formulary.load(FORMULARY)
    robot = [d.drug_code for d in formulary.values() if d.robot]
    actor = Actor("bench", "api")
    d = Dispensary(Journal(path), formulary, Policy(merge_window_s=0), SlotGeometry(),
                   lambda: datetime.now(UTC))
    with d.batch():
        for i in range(n_packs):
            code = robot[i % len(robot)]
            p = d.begin_load(compose_scan(code, "301200", "L1", f"S{i:08d}"), actor)
            d.confirm_stored(p.pack_id)
    raws = orders(n_orders, list(formulary), rng)
    for i in range(0, len(raws), 1000):
        d.submit_many(raws[i:i + 1000], actor)
    d.form_shipments()
    d.journal.close()


async def measure(path: Path, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sim = Simulator(SimulatorOptions(tcp_port=0, instant=True,
                                         printer_link=str(Path(tmp) / "printer")))
        await sim.start()
        config = parse_config({
            "journal": {"path": str(path)}, "api": {"socket": str(Path(tmp) / "api.sock")},
            "robot": {"port": sim.tcp_port}, "printer": {"url": sim.printer_device},
            "formulary": {"path": str(FORMULARY)}, "metrics": {"listen": "127.0.0.1:0"}})
        daemon = Daemon(config)
        try:
            assert daemon.metrics_server is not None
            registry = daemon.metrics_server.metrics.registry
            d = daemon.dispensary
            held = sum(1 for o in d.orders.live.values() if o.state.value == "held")
            times = []
            for _ in range(runs):
                began = time.perf_counter()
                body = generate_latest(registry)
                times.append(time.perf_counter() - began)
            samples = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
            print(f"state: {len(d.packs.live)} live packs, {len(d.orders.live)} live orders "
                  f"({held} held), {len(d.stock.slots)} slots in use")
            print(f"scrape: {len(body)} bytes, {samples} samples; median "
                  f"{statistics.median(times) * 1000:.2f} ms, slowest "
                  f"{max(times) * 1000:.2f} ms over {runs} runs")
        finally:
            daemon.journal.close()
            await sim.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20000)
    ap.add_argument("--packs", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        began = time.perf_counter()
        fill(path, args.orders, args.packs)
        print(f"journal filled in {time.perf_counter() - began:.1f} s")
        asyncio.run(measure(path, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
