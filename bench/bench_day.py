#!/usr/bin/env python3
"""A day's load: a whole day of orders through the socket API, figures printed.

::

    .venv/bin/python bench/bench_day.py                 # 20,000 orders, a random seed
    .venv/bin/python bench/bench_day.py --orders 1000 --seed 7 --util-orders 100

``dispenser-sim`` and ``dispenserd`` run as separate processes (``dispenser.testing.Stack``).
Phases:

1. **stock**: the day's initial stock (``dispenser.testing.campaigns.dayload``) is put at
   the robot's input point and loaded through ``stock.load``, pack by pack (timed: bulk
   loading rate);
2. **bare Modbus**: pymodbus reads the 32-register status block back to back against the
   same simulator (the baseline of the controller's time per pick);
3. **the day** (instant robot): the first ``--paced`` orders at a steady ``--rate`` per
   second (``order.submit`` latency), the rest as fast as ``--clients`` connections can send
   them (burst throughput), with staff restocking what runs low and the packing desk
   scanning fridge packs, staff taking a pack the robot refused off the input point and
   acknowledging a fault whose cause went by itself (``link_down``, ``not_homed``: a robot
   that did not answer for a while on a loaded host); at the end the pharmacist rejects
   the orders held by a check. Wall
   time from the first order to every order final; the daemon's CPU seconds and peak RSS;
   Modbus transactions per pick (``diag.stats``);
4. **invariant**: journal against the simulator's ledger, pack by pack
   (``dispenser.testing.invariant``);
5. **recovery**: the daemon stopped (SIGTERM) and killed (SIGKILL) with the day's journal,
   restarted, timed to the API answering and to ``ready``;
6. **utilization** (realistic timing, ``--speed``): the simulator restarted from its state
   file with motions ``--speed`` times faster than the real machine, ``--util-orders``
   orders; robot utilization = mechanical busy time / elapsed time while work is queued.

The daemon runs with its production timing (``[robot]`` defaults: 1 s request timeout,
2 s watchdog, a link fault after 10 s without an answer), not the campaigns' hair-trigger
settings. Nothing here asserts a time: it prints figures (and ``--json FILE`` writes them).
The seed is printed first so a run can be repeated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError
from dispenser.testing import ORDER_FINAL, DaemonOptions, Stack, list_all, say
from dispenser.testing.campaigns.dayload import (
    DayPlan,
    Loader,
    day_plan,
    fault_desk,
    packing_desk,
    pharmacist_review,
    restocking,
)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def bare_modbus(port: int, n: int) -> dict[str, float]:
    """Back-to-back FC03 reads of the status block with bare pymodbus."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2)
    await client.connect()
    try:
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            rr = await client.read_holding_registers(0, count=32, device_id=1)
            lat.append(time.perf_counter() - t)
            if rr.isError():
                raise RuntimeError(f"bare read failed: {rr}")
        total = time.perf_counter() - t0
    finally:
        client.close()
    return {"round_trips_per_s": n / total, "median_us": statistics.median(lat) * 1e6,
            "p99_us": pct(lat, 0.99) * 1e6}


async def submit_paced(client: ApiClient, orders: list[dict[str, Any]], rate: float,
                       latencies: list[float], errors: Counter[str]) -> float:
    """Submit at a steady rate (each on schedule, not waiting for the previous reply)."""
    t0 = time.perf_counter()

    async def one(o: dict[str, Any]) -> None:
        t = time.perf_counter()
        try:
            await client.call("order.submit", {"order": o}, timeout=120)
        except ApiError as exc:
            errors[str(exc.code)] += 1
        latencies.append(time.perf_counter() - t)

    tasks = []
    for k, o in enumerate(orders):
        delay = t0 + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(o)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


async def submit_burst(clients: list[ApiClient], orders: list[dict[str, Any]],
                       latencies: list[float], errors: Counter[str], batch: int = 1) -> float:
    """As fast as the connections send them; ``batch`` > 1: ``order.submit_batch`` of that
    many orders per call (an order system that has a backlog may), latency per call."""
    it = iter(orders[k:k + batch] for k in range(0, len(orders), batch))
    t0 = time.perf_counter()

    async def worker(c: ApiClient) -> None:
        for part in it:
            t = time.perf_counter()
            try:
                if batch == 1:
                    await c.call("order.submit", {"order": part[0]}, timeout=120)
                else:
                    res = await c.call("order.submit_batch", {"orders": part}, timeout=120)
                    for r in res["results"]:
                        if "error" in r:
                            errors[str(r["error"]["code"])] += 1
            except ApiError as exc:
                errors[str(exc.code)] += 1
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(c) for c in clients))
    return time.perf_counter() - t0


async def settle(staff: ApiClient, *, quiet_s: float, timeout: float) -> dict[str, int]:
    """Wait until every order is final or held by a check, and no shipment is open."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    changed = time.monotonic()
    while time.monotonic() < deadline:
        st = await staff.call("machine.status")
        orders = st["orders"]
        open_orders = sum(n for s, n in orders.items() if s not in ORDER_FINAL and s != "held")
        open_ships = sum(n for s, n in st["shipments"].items()
                         if s not in ("completed", "cancelled", "failed"))
        if orders != last:
            last, changed = dict(orders), time.monotonic()
        if open_orders == 0 and open_ships == 0:
            return last
        if time.monotonic() - changed > quiet_s:
            say(f"  no progress for {quiet_s:.0f} s: orders {orders}, shipments "
                f"{st['shipments']}, machine {st['state']}")
            return last
        await asyncio.sleep(0.1)
    return last


async def run_day(stack: Stack, plan: DayPlan, args: argparse.Namespace,
                  fig: dict[str, Any]) -> None:
    staff = await stack.client("staff")
    tech = await stack.client("technician")
    loader = Loader(await stack.client("staff"), stack.sim)

    # 1. stock
    say(f"stock: loading {len(plan.initial_packs)} packs through stock.load ...")
    profiling = args.profile is not None
    if profiling:
        stack.daemon.profile_start()
    cpu_s0 = stack.daemon.cpu_seconds() or 0.0
    t = time.perf_counter()
    await loader.load(plan.initial_packs)
    await loader.wait_stored()
    load_s = time.perf_counter() - t
    cpu_s = (stack.daemon.cpu_seconds() or 0.0) - cpu_s0
    fig["stock"] = {"packs": len(plan.initial_packs), "seconds": round(load_s, 1),
                    "packs_per_s": round(len(plan.initial_packs) / load_s, 1),
                    "daemon_cpu_s": round(cpu_s, 1),
                    "cpu_ms_per_pack": round(1000 * cpu_s / len(plan.initial_packs), 3),
                    "refused": dict(loader.refused), "loadavg": loadavg()}
    if profiling:
        say(f"  profile: {stack.daemon.profile_dump().rename(Path(args.profile) / 'stock.prof')}")
    say(f"  {fig['stock']}")

    # 2. bare pymodbus
    fig["bare_modbus"] = {k: round(v, 1) for k, v in
                          (await bare_modbus(stack.sim.port, args.bare_reads)).items()}
    say(f"bare pymodbus FC03 x{args.bare_reads}: {fig['bare_modbus']}")

    # 3. the day
    stop = asyncio.Event()
    restock = asyncio.create_task(restocking(stack, loader, plan.restocker, stop))
    desk = asyncio.create_task(packing_desk(await stack.client("staff"), plan.restocker, stop))
    faults = asyncio.create_task(fault_desk(await stack.client("staff"), stop))
    s0 = await tech.call("diag.stats")
    rss_before = stack.daemon.rss_kib()
    if profiling:
        stack.daemon.profile_start()
    cpu0 = stack.daemon.cpu_seconds() or 0.0
    threads0 = stack.daemon.thread_cpu_seconds()
    load0 = loadavg()
    paced = plan.orders[:args.paced]
    burst = plan.orders[args.paced:]
    say(f"day: {len(paced)} orders at {args.rate}/s, then {len(burst)} in a burst over "
        f"{args.clients} connections ...")
    errors: Counter[str] = Counter()
    lat_paced: list[float] = []
    lat_burst: list[float] = []
    t0 = time.perf_counter()
    osys = await stack.client("order_system")
    paced_s = await submit_paced(osys, paced, args.rate, lat_paced, errors)
    clients = [await stack.client("order_system") for _ in range(args.clients)]
    rss_paced = stack.daemon.rss_kib()
    burst_s = await submit_burst(clients, burst, lat_burst, errors, args.batch)
    submitted_s = time.perf_counter() - t0
    s_burst = await tech.call("diag.stats")
    rss_submitted = stack.daemon.rss_kib()
    say(f"  submitted in {submitted_s:.1f} s; waiting for the machine ...")
    counts = await settle(staff, quiet_s=args.quiet, timeout=args.timeout)
    picked_s = time.perf_counter() - t0
    holds = await pharmacist_review(staff)
    counts = await settle(staff, quiet_s=args.quiet, timeout=120)
    wall = time.perf_counter() - t0
    stop.set()
    restocked = await restock
    confirmed = await desk
    acked = await faults
    cpu = (stack.daemon.cpu_seconds() or 0.0) - cpu0
    threads1 = stack.daemon.thread_cpu_seconds()
    load1 = loadavg()
    if profiling:
        say(f"  profile: {stack.daemon.profile_dump().rename(Path(args.profile) / 'day.prof')}")
    s1 = await tech.call("diag.stats")
    rss = stack.daemon.rss_kib()
    picks = s1["packs_picked"] - s0["packs_picked"]
    tx = s1["transactions"] - s0["transactions"]
    n = len(plan.orders)
    bare_us = 1e6 / fig["bare_modbus"]["round_trips_per_s"]
    fig["day"] = {
        "orders": n, "wall_s": round(wall, 1), "all_picked_s": round(picked_s, 1),
        "submit_s": round(submitted_s, 1),
        "daemon_cpu_s": round(cpu, 1), "cpu_ms_per_order": round(1000 * cpu / n, 2),
        "packs_picked": picks, "modbus_transactions": tx,
        "transactions_per_pick": round(tx / picks, 3) if picks else None,
        "controller_wall_us_per_pick": round(1e6 * picked_s / picks, 1) if picks else None,
        "controller_cpu_us_per_pick": round(1e6 * cpu / picks, 1) if picks else None,
        "ratio_cpu_per_pick_to_bare_round_trip": round(1e6 * cpu / picks / bare_us, 2)
        if picks else None,
        "peak_rss_mib": round(rss[1] / 1024, 1) if rss else None,
        "rss_mib_before_orders": round(rss_before[0] / 1024, 1) if rss_before else None,
        "rss_mib_after_paced": round(rss_paced[0] / 1024, 1) if rss_paced else None,
        "rss_mib_all_orders_submitted": round(rss_submitted[0] / 1024, 1)
        if rss_submitted else None,
        "daemon_cpu_s_by_thread": {k: round(threads1.get(k, 0.0) - v, 1)
                                   for k, v in threads0.items()},
        "loadavg_start_end": [load0, load1],
        "submit_paced": {"rate": args.rate, "orders": len(paced), "seconds": round(paced_s, 1),
                         "p50_ms": round(pct(lat_paced, 0.5) * 1000, 2),
                         "p99_ms": round(pct(lat_paced, 0.99) * 1000, 2),
                         "max_ms": round(max(lat_paced, default=0) * 1000, 2)},
        "submit_burst": {"orders": len(burst), "clients": args.clients, "batch": args.batch,
                         "seconds": round(burst_s, 1),
                         "orders_per_s": round(len(burst) / burst_s, 1) if burst_s else None,
                         "p50_ms": round(pct(lat_burst, 0.5) * 1000, 2),
                         "p99_ms": round(pct(lat_burst, 0.99) * 1000, 2)},
        "submit_errors": dict(errors), "orders_final": counts,
        "holds_seen": dict(holds), "restock_batches": dict(restocked),
        "restock_refused": dict(loader.refused), "loads_scanned_again": loader.rescanned,
        "fridge_packs_confirmed": confirmed, "faults_acknowledged": dict(acked),
        "packs_taken_off_the_input_point": len(loader.taken_off),
        "machine_state_at_end": (await staff.call("machine.status"))["state"],
        "group_commit": s1["group_commit"], "modbus_errors": s1["errors"],
        "event_loop": loop_lag(s0, s_burst, s1),
    }
    say(f"  {json.dumps(fig['day'], indent=1)}")

    # Merging and holds as planned?
    orders = {o["order_id"]: o for o in await list_all(staff, "order.list", {}, "order_id")}
    merged = sum(1 for f, first in plan.merge_with.items()
                 if orders.get(f, {}).get("shipment_id")
                 and orders[f]["shipment_id"] == orders.get(first, {}).get("shipment_id"))
    by_kind: dict[str, Counter[str]] = {}
    for oid, kind in plan.kinds.items():
        by_kind.setdefault(kind, Counter())[orders.get(oid, {}).get("state", "missing")] += 1
    fig["checks"] = {"followups_merged": merged, "followups": len(plan.merge_with),
                     "states_by_kind": {k: dict(v) for k, v in by_kind.items()}}
    say(f"  {fig['checks']}")

    # 4. invariant
    t = time.perf_counter()
    report = await stack.check_invariant(raise_on_problem=False)
    fig["invariant"] = {**report.summary(), "seconds": round(time.perf_counter() - t, 1),
                        "first_problems": report.problems[:10]}
    say(f"invariant: {'OK' if report.ok else 'VIOLATED'} {report.summary()}")
    for p in report.problems[:10]:
        say(f"  {p}")


async def recovery(stack: Stack, fig: dict[str, Any]) -> None:
    out: dict[str, Any] = {}
    for how in ("sigterm", "sigkill"):
        await stack.close_clients()
        if how == "sigterm":
            stack.stop_daemon()
        else:
            stack.kill_daemon()
        api_s = await stack.start_daemon(timeout=120)
        ready_s = await stack.wait_ready(timeout=120)
        out[how] = {"api_answers_s": round(api_s, 2),
                    "ready_s": round(api_s + ready_s, 2),
                    "rss_mib_after_start": round((stack.daemon.rss_kib() or (0, 0))[0] / 1024, 1)}
    fig["recovery"] = out
    say(f"recovery with the day's journal: {out}")


async def utilization(stack: Stack, plan: DayPlan, args: argparse.Namespace,
                      fig: dict[str, Any]) -> None:
    # Its stock is loaded while the robot is still instant, then the simulator restarts
    # from its state file at realistic speed (a power cycle: the daemon homes it).
    loader = Loader(await stack.client("staff"), stack.sim)
    await loader.load(plan.initial_packs)
    await loader.wait_stored()
    await stack.close_clients()
    stack.stop_daemon()
    stack.sim.stop()
    stack.sim.instant, stack.sim.speed = False, args.speed
    stack.sim.start()
    await stack.start_daemon(timeout=120)
    await stack.wait_ready(timeout=120)
    loader = Loader(await stack.client("staff"), stack.sim)
    stop = asyncio.Event()
    staff = await stack.client("staff")
    st0 = await stack.sim.ledger()
    restock = asyncio.create_task(restocking(stack, loader, plan.restocker, stop))
    desk = asyncio.create_task(packing_desk(await stack.client("staff"), plan.restocker, stop))
    osys = await stack.client("order_system")
    say(f"utilization: {len(plan.orders)} orders, robot at speed {args.speed} ...")
    t0 = time.perf_counter()
    for k in range(0, len(plan.orders), 100):
        await osys.call("order.submit_batch", {"orders": plan.orders[k:k + 100]}, timeout=120)
    busy_marks: list[tuple[float, float, bool]] = []

    async def mark() -> None:
        while not stop.is_set():
            led = await stack.sim.ledger()
            r = led["robot"]
            working = bool(r["queue"]) or r["executing_seq"] != 0
            busy_marks.append((r["elapsed_seconds"], r["busy_seconds"], working))
            await asyncio.sleep(0.2)

    marker = asyncio.create_task(mark())
    await settle(staff, quiet_s=args.quiet, timeout=args.timeout)
    await pharmacist_review(staff)
    await settle(staff, quiet_s=args.quiet, timeout=120)
    wall = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(marker, restock, desk, return_exceptions=True)
    st1 = await stack.sim.ledger()
    working = [m for m in busy_marks if m[2]]
    if len(working) >= 2:
        first, last = working[0], working[-1]
        util = (last[1] - first[1]) / (last[0] - first[0])
        window = last[0] - first[0]
        queued_share = len(working) / len(busy_marks)
    else:
        util, window, queued_share = float("nan"), 0.0, 0.0
    r0, r1 = st0["robot"], st1["robot"]
    fig["utilization"] = {
        "speed": args.speed, "orders": len(plan.orders), "wall_s": round(wall, 1),
        "window_s": round(window, 1), "utilization": round(util, 4),
        "busy_s": round(r1["busy_seconds"] - r0["busy_seconds"], 1),
        "machine_s_at_real_speed": round(r1["machine_seconds"] - r0["machine_seconds"], 1),
        "share_of_samples_with_work_queued": round(queued_share, 3),
        "packs_picked": r1["packs_picked"] - r0["packs_picked"],
    }
    say(f"  {fig['utilization']}")
    report = await stack.check_invariant(raise_on_problem=False)
    fig["utilization"]["invariant_ok"] = report.ok
    say(f"invariant after the utilization run: {'OK' if report.ok else 'VIOLATED'}")
    for p in report.problems[:10]:
        say(f"  {p}")


def loop_lag(s0: dict[str, Any], s_burst: dict[str, Any],
             s1: dict[str, Any]) -> dict[str, Any] | None:
    """How late the daemon's event loop woke up (``diag.stats`` ``loop``): wake-ups later
    than 50 ms in the paced submits and the burst and in the whole day, the longest in the
    last minute when the burst ended, the longest in the day so far."""
    if "loop" not in s1:
        return None  # (a daemon from before the probe)
    late = "late_over_50ms"
    return {"late_over_50ms_submits": s_burst["loop"][late] - s0["loop"][late],
            "late_over_50ms_day": s1["loop"][late] - s0["loop"][late],
            "max_ms_last_minute_at_burst_end": s_burst["loop"]["recent"]["max"],
            "p99_ms_last_minute_at_burst_end": s_burst["loop"]["recent"]["p99"],
            "max_ms_since_start": s1["loop"]["max_ms"]}


def table(fig: dict[str, Any]) -> list[str]:
    """The figures of issue 12's table, from this run."""
    day, stock = fig.get("day", {}), fig.get("stock", {})
    if not day:
        return []
    paced, burst, lag = day["submit_paced"], day["submit_burst"], day.get("event_loop")
    how = "order.submit" if burst["batch"] == 1 else f"order.submit_batch of {burst['batch']}"
    return [
        f"whole day, first order to every order final: {day['wall_s']} s "
        f"({day['orders']} orders, {day['packs_picked']} packs picked)",
        f"daemon CPU per order: {day['cpu_ms_per_order']} ms "
        f"(event loop thread / others: {day['daemon_cpu_s_by_thread']} s)",
        f"daemon CPU per pick : bare pymodbus round trip: "
        f"{day['controller_cpu_us_per_pick']} us : "
        f"{round(1e6 / fig['bare_modbus']['round_trips_per_s'], 1)} us = "
        f"{day['ratio_cpu_per_pick_to_bare_round_trip']}x",
        f"order.submit at {paced['rate']}/s: p50 {paced['p50_ms']} / p99 {paced['p99_ms']} / "
        f"max {paced['max_ms']} ms",
        f"burst, {burst['clients']} connections, {how}: {burst['orders_per_s']} orders/s",
        f"event loop held > 50 ms: {lag['late_over_50ms_submits']} times in the submits, "
        f"{lag['late_over_50ms_day']} in the day; longest in the minute before the burst's "
        f"end {lag['max_ms_last_minute_at_burst_end']} ms (p99 "
        f"{lag['p99_ms_last_minute_at_burst_end']})" if lag else "event loop: not measured",
        f"stock.load: {stock.get('packs_per_s')} packs/s "
        f"({stock.get('cpu_ms_per_pack')} ms daemon CPU per pack)",
        f"daemon RSS: peak {day['peak_rss_mib']} MiB; before the orders "
        f"{day['rss_mib_before_orders']} MiB; all orders in "
        f"{day['rss_mib_all_orders_submitted']} MiB",
        f"load average (1/5/15 min): stock {stock.get('loadavg')}, day "
        f"{day['loadavg_start_end'][0]} -> {day['loadavg_start_end'][1]}",
    ]


async def main_async(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    say(f"bench_day seed={seed} (repeat with --seed {seed})")
    fig: dict[str, Any] = {"seed": seed, "args": {k: v for k, v in vars(args).items()
                                                  if k != "json"}}
    plan = day_plan(args.orders, seed, merge_gap=(1, 20))
    util_plan = day_plan(args.util_orders, seed + 1, patient_offset=10**6) \
        if args.util_orders else None
    fig["plan"] = plan.summary()
    say(f"plan: {fig['plan']}")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-day-"))
    # The daemon's production timing ([robot] defaults), not the campaigns' hair trigger.
    opts = DaemonOptions(merge_window_s=args.merge_window, log_level=args.log_level,
                         low_stock_packs=2, timeout_s=1.0, watchdog_ms=2000,
                         link_fault_after_s=10.0)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        opts.profile = Path(args.profile).resolve() / "dispenserd.prof"
    stack = Stack(workdir, instant=True, daemon=opts)
    try:
        await stack.start()
        try:
            await run_day(stack, plan, args, fig)
        except (ConnectionError, OSError) as exc:
            # The daemon went away in the middle of the day: keep what was measured and say
            # why, rather than a traceback.
            fig["aborted"] = {"error": repr(exc), "daemon_alive": stack.daemon.alive(),
                              "daemon_exit": stack.daemon.proc.poll()
                              if stack.daemon.proc else None,
                              "daemon_errors": stack.daemon.errors()}
            say(f"ABORTED: {json.dumps(fig['aborted'], indent=1)}")
            return 1
        if not args.skip_recovery:
            await recovery(stack, fig)
        if util_plan is not None:
            await utilization(stack, util_plan, args, fig)
    finally:
        await stack.stop()
        for line in table(fig):
            say(f"| {line}")
        if args.json:
            Path(args.json).write_text(json.dumps(fig, indent=1))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"kept {workdir}")
    return 0 if fig.get("invariant", {}).get("ok") else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=20000)
    p.add_argument("--seed", type=int)
    p.add_argument("--paced", type=int, default=3000,
                   help="orders sent at --rate before the burst (latency figures)")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--clients", type=int, default=4, help="connections for the burst")
    p.add_argument("--batch", type=int, default=1,
                   help="orders per call in the burst (> 1: order.submit_batch)")
    p.add_argument("--profile", metavar="DIR",
                   help="run dispenserd under cProfile: DIR/stock.prof and DIR/day.prof")
    p.add_argument("--merge-window", type=float, default=1.0)
    p.add_argument("--bare-reads", type=int, default=3000)
    p.add_argument("--util-orders", type=int, default=300)
    p.add_argument("--speed", type=float, default=50.0,
                   help="simulator speed factor for the utilization run")
    p.add_argument("--skip-recovery", action="store_true")
    p.add_argument("--quiet", type=float, default=60.0,
                   help="give up waiting after this many seconds without progress")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--log-level", default="info")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, journal)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
