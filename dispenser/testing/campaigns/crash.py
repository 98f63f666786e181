"""Crash campaign: SIGKILL the daemon at random moments while it dispenses, and check that
nothing was picked twice, lost, or put in another shipment's tote.

::

    .venv/bin/python bench/crash_campaign.py                      # 500 orders, 50 kills
    .venv/bin/python bench/crash_campaign.py --seed 1234          # replay a run

``dispenser-sim`` runs in its own process for the whole campaign (the robot keeps working
while the controller is dead, as a real one would: its watchdog stops it after
``watchdog_ms``). ``dispenserd`` is killed with SIGKILL ``--kills`` times at random moments
(a random pause of ``--min-gap``..``--max-gap`` seconds of running after each restart) and
started again after 0..``--max-down`` seconds (past the robot's 1 s watchdog the robot stops
itself, CONTROLLER_LOST, and the daemon must reset it). Meanwhile the order system keeps
sending orders and retries any order whose reply it did not get (same id, same content: a
safe retry). Staff acknowledge any fault the daemon raises (``fault.ack``), as they would
after looking at the machine.

At the end every order must be in a final state (the pharmacist rejects the ones a check
held) and the journal must equal the simulator's ledger pack by pack
(``Stack.check_invariant``); every order the order system got a reply for must exist.
The seed is printed first; the exit status is 0 only when the invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dispenser.api.protocol import ApiError
from dispenser.testing import (
    ORDER_FINAL,
    SHIPMENT_FINAL,
    DaemonOptions,
    Stack,
    list_all,
    report_campaign,
    say,
)
from dispenser.testing.campaigns.dayload import (
    Loader,
    OrderSystem,
    day_plan,
    pharmacist_review,
    stock_for,
)


async def ack_faults(stack: Stack, acked: Counter[str], note: str) -> None:
    """Staff acknowledge every active fault (the campaign's causes are gone by then)."""
    c = await stack.client("staff", keep=False)
    try:
        page = await c.call("fault.list", {"active": True})
        for f in page["items"]:
            try:
                await c.call("fault.ack", {"fault_id": f["fault_id"], "note": note})
                acked[f["kind"]] += 1
            except ApiError:
                pass
    finally:
        await c.close()


async def settle(stack: Stack, acked: Counter[str], timeout: float,
                 quiet: float = 60.0) -> dict[str, Any]:
    """Wait until no order and no shipment is open, acknowledging faults on the way."""
    deadline = time.monotonic() + timeout
    last: Any = None
    changed = time.monotonic()
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            c = await stack.client("staff", keep=False)
            try:
                st = await c.call("machine.status")
            finally:
                await c.close()
        except (OSError, ConnectionError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        if st["state"] in ("fault", "estop"):
            await ack_faults(stack, acked, "checked at the machine")
        open_orders = sum(n for s, n in st["orders"].items()
                          if s not in ORDER_FINAL and s != "held")
        open_ships = sum(n for s, n in st["shipments"].items() if s not in SHIPMENT_FINAL)
        key = (st["orders"], st["shipments"])
        if key != last:
            last, changed = key, time.monotonic()
        if open_orders == 0 and open_ships == 0:
            return st
        if time.monotonic() - changed > quiet:
            say(f"  no progress for {quiet:.0f} s: {st['orders']} {st['shipments']} "
                f"machine {st['state']} fault {st['fault']}")
            return st
        await asyncio.sleep(0.2)
    return st


async def campaign(workdir: Path, *, orders: int, kills: int, seed: int,
                   speed: float | None, min_gap: float, max_gap: float,
                   rate: float, max_down: float = 0.0,
                   timeout: float = 1800) -> dict[str, Any]:
    """Run one campaign; the figures (``invariant.ok`` says whether it held)."""
    rng = random.Random(seed)
    plan = day_plan(orders, seed, fridge=0.0, merge_gap=(1, 5))
    stock = stock_for(plan)
    stack = Stack(workdir, instant=True,
                  daemon=DaemonOptions(merge_window_s=0.5, watchdog_ms=1000,
                                       link_fault_after_s=5.0))
    fig: dict[str, Any] = {"seed": seed, "orders": orders, "kills_planned": kills,
                           "speed": speed or "instant", "plan": plan.summary()}
    acked: Counter[str] = Counter()
    kill_log: list[dict[str, Any]] = []
    restarts: list[tuple[float, float]] = []
    try:
        await stack.start()
        # Stock goes in before the first kill, the normal way (stock.load).
        loader = Loader(await stack.client("staff"), stack.sim)
        t = time.monotonic()
        await loader.load(stock)
        await loader.wait_stored()
        fig["stock"] = {"packs": len(stock), "seconds": round(time.monotonic() - t, 1),
                        "refused": dict(loader.refused)}
        if speed is not None:
            await stack.restart_sim(instant=False, speed=speed)
        await stack.close_clients()

        osys = OrderSystem(stack, plan.orders)
        feeder = asyncio.create_task(osys.run(rate))
        t0 = time.monotonic()
        for k in range(kills):
            await asyncio.sleep(rng.uniform(min_gap, max_gap))
            ledger = (await stack.sim.ledger())["robot"]
            stack.kill_daemon()
            kill_log.append({"kill": k + 1, "at_s": round(time.monotonic() - t0, 2),
                             "orders_acknowledged": len(osys.acknowledged),
                             "robot_queue": len(ledger["queue"]),
                             "robot_executing": ledger["executing_seq"] != 0,
                             "robot_state": ledger["state"]})
            down = rng.uniform(0, max_down)
            if down:
                # Dead for a while (a restart delay): past watchdog_ms the robot stops by
                # itself (CONTROLLER_LOST) and the daemon must reset it when it is back.
                await asyncio.sleep(down)
                kill_log[-1]["down_s"] = round(down, 2)
                kill_log[-1]["robot_state_before_restart"] = (
                    await stack.sim.ledger())["robot"]["state"]
            api_s = await stack.start_daemon(timeout=60)
            ready_s = 0.0
            try:
                ready_s = await stack.wait_ready(timeout=5)
            except TimeoutError:
                # A latched fault (the robot's watchdog expired while the daemon was
                # dead, say) waits for a person: acknowledge it as staff would.
                await ack_faults(stack, acked, "controller restarted")
                ready_s = await stack.wait_ready(timeout=60) + 5
            restarts.append((api_s, api_s + ready_s))
            if (k + 1) % 10 == 0:
                say(f"  {k + 1} kills, {len(osys.acknowledged)}/{orders} orders acknowledged")
        await feeder
        await osys.close()
        fig["feeding_s"] = round(time.monotonic() - t0, 1)
        st = await settle(stack, acked, timeout)
        staff = await stack.client("staff")
        holds = await pharmacist_review(staff)
        st = await settle(stack, acked, 120)
        fig["wall_s"] = round(time.monotonic() - t0, 1)
        fig["orders_final"] = st.get("orders")
        fig["holds_seen"] = dict(holds)
        fig["faults_acked"] = dict(acked)
        fig["order_retries"] = osys.retries
        fig["order_refused"] = dict(osys.refused)
        fig["kills"] = len(kill_log)
        fig["kills_with_robot_working"] = sum(1 for k in kill_log
                                              if k["robot_queue"] or k["robot_executing"])
        fig["restarts_finding_controller_lost"] = sum(
            1 for k in kill_log if k.get("robot_state_before_restart") == "CONTROLLER_LOST")
        fig["restart_api_s"] = {"median": round(statistics.median(a for a, _ in restarts), 2),
                                "max": round(max(a for a, _ in restarts), 2)} \
            if restarts else None
        fig["restart_ready_s"] = {"median": round(statistics.median(b for _, b in restarts), 2),
                                  "max": round(max(b for _, b in restarts), 2)} \
            if restarts else None
        report = await stack.check_invariant(raise_on_problem=False)
        known = {o["order_id"] for o in await list_all(staff, "order.list", {}, "order_id")}
        lost = sorted(set(osys.acknowledged) - known)
        if lost:
            report.problems.append(f"{len(lost)} acknowledged order(s) missing from the "
                                   f"journal: {lost[:10]}")
        fig["invariant"] = {**report.summary(), "first_problems": report.problems[:20]}
        fig["kill_log"] = kill_log
    finally:
        await stack.stop()
    return fig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=500)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int)
    p.add_argument("--speed", type=float, default=100.0,
                   help="simulator speed factor (0 = instant robot)")
    p.add_argument("--rate", type=float,
                   help="orders per second at most (default: spread over the kills)")
    p.add_argument("--min-gap", type=float, default=0.2,
                   help="shortest run of the daemon between kills (s)")
    p.add_argument("--max-gap", type=float, default=2.0)
    p.add_argument("--max-down", type=float, default=2.0,
                   help="the daemon stays dead 0..this many seconds before its restart")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, journal)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    say(f"crash_campaign seed={seed} (replay with --seed {seed})")
    rate = args.rate or args.orders / (args.kills * (args.min_gap + args.max_gap) / 2 * 0.8)
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="crash-"))
    try:
        fig = asyncio.run(campaign(workdir, orders=args.orders, kills=args.kills, seed=seed,
                                   speed=args.speed or None, min_gap=args.min_gap,
                                   max_gap=args.max_gap, rate=rate, max_down=args.max_down))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report_campaign("crash", seed, fig, args.json, hidden=("kill_log",))


if __name__ == "__main__":
    sys.exit(main())
