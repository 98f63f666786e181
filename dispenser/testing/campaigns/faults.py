"""Fault campaign: every fault the simulator can inject, at random points while orders
flow, handled the way staff would; figures of how each was handled; the invariant at the end.

::

    .venv/bin/python bench/fault_campaign.py                    # every fault 3 times
    .venv/bin/python bench/fault_campaign.py --rounds 1 --seed 99

For each fault (``FAULTS``): wait a random moment, ``sim.inject`` it, watch what the daemon
shows (``machine.status``, ``fault.list``, ``stock.discrepancies``, ``diag.stats``) until it
noticed (**time to detect**), keep what the operator sees (``dispenserctl faults`` /
``status``), then do what a person at the machine does: clear the cause (``sim.clear``)
and, for a latched fault, acknowledge it with ``dispenserctl ack``. A jam is first
acknowledged *before* it is cleared, which the daemon must refuse. Then the time until the
machine is ``ready`` again (**time to recover**).

At the end every order must be final (the pharmacist rejects the ones a check held) and the
journal must equal the simulator's ledger pack by pack (``Stack.check_invariant``). The
seed is printed first; the exit status is 0 only when the invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError
from dispenser.testing import (
    BIN,
    TOKENS,
    DaemonOptions,
    Stack,
    list_all,
    report_campaign,
    say,
)
from dispenser.testing.campaigns.crash import settle
from dispenser.testing.campaigns.dayload import (
    Loader,
    OrderSystem,
    day_plan,
    pharmacist_review,
    restocking,
    stock_for,
)

# Every fault of docs/simulator.md; link_down and delay twice: below and above the
# daemon's thresholds (link_fault_after_s, the robot timeout).
FAULTS = ("jam", "dropped", "estop", "door_open", "slot_short", "slot_empty",
          "link_down_brief", "link_down", "delay", "delay_over_timeout", "corrupt_frame",
          "paper_out", "head_open", "printer_pause")

LINK_FAULT_AFTER_S = 2.0
ROBOT_TIMEOUT_S = 0.5


class Scenario:
    def __init__(self, stack: Stack, staff: ApiClient, tech: ApiClient,
                 rng: random.Random, detect_timeout: float = 60.0) -> None:
        self.detect_timeout = detect_timeout
        self.late_acks: list[dict[str, Any]] = []
        self.stack = stack
        self.staff = staff
        self.tech = tech
        self.rng = rng

    # -- what staff do and see
    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DISPENSER_SOCKET": str(self.stack.daemon.socket),
               "DISPENSER_TOKEN": TOKENS["staff"]}
        return subprocess.run([str(BIN / "dispenserctl"), *args], env=env, text=True,
                              capture_output=True, timeout=30, check=False)

    def operator_view(self) -> list[str]:
        out = self.ctl("faults")
        lines = [ln.rstrip() for ln in (out.stdout or out.stderr).splitlines() if ln.strip()]
        return lines[:6]

    async def status(self) -> dict[str, Any]:
        st: dict[str, Any] = await self.staff.call("machine.status")
        return st

    async def until(self, check: Callable[[], Awaitable[Any]], timeout: float,
                    interval: float = 0.02) -> tuple[float | None, Any]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            got = await check()
            if got:
                return time.monotonic() - t0, got
            await asyncio.sleep(interval)
        return None, None

    async def active_faults(self) -> list[dict[str, Any]]:
        page = await self.staff.call("fault.list", {"active": True})
        return list(page["items"])

    async def ack_with_ctl(self, fault_id: int, note: str) -> dict[str, Any]:
        out = self.ctl("ack", str(fault_id), "--note", note)
        return {"exit": out.returncode,
                "said": (out.stdout or out.stderr).strip().splitlines()[:2]}

    async def recover(self, since: float, timeout: float = 60) -> float | None:
        """Seconds from ``since`` until ready; a fault that shows up meanwhile (raised late,
        after the step's acknowledgement) is acknowledged as staff would, and noted."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            st = await self.status()
            if st["state"] == "ready":
                return round(time.monotonic() - since, 3)
            if st["state"] in ("fault", "estop"):
                for f in await self.active_faults():
                    res = await self.ack_with_ctl(f["fault_id"], "raised after the cause went")
                    self.late_acks.append({"kind": f["kind"], **res})
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)
        return None

    # -- the faults
    async def robot_fault(self, kind: str) -> dict[str, Any]:
        params = {"after_picks": 0} if kind == "jam" else {}
        await self.stack.sim.inject(kind, **params)

        async def latched() -> Any:
            st = await self.status()
            return st if st["state"] in ("fault", "estop") else None
        detect, st = await self.until(latched, 60)
        rec: dict[str, Any] = {"detected_s": None if detect is None else round(detect, 3)}
        if st is None:
            await self.stack.sim.clear(kind)
            rec["outcome"] = "not detected within 60 s (no motion came)"
            return rec
        faults = await self.active_faults()
        rec["machine_state"] = st["state"]
        rec["raised"] = {k: faults[0].get(k) for k in ("kind", "message")} if faults else None
        rec["operator_saw"] = self.operator_view()
        if kind == "jam" and faults:
            early = await self.ack_with_ctl(faults[0]["fault_id"], "tried before clearing")
            still = [f for f in await self.active_faults() if f["fault_id"] ==
                     faults[0]["fault_id"]]
            rec["ack_before_clear"] = {**early, "fault_stays_active": bool(still)}
        await asyncio.sleep(0.2)  # walking to the machine
        await self.stack.sim.clear(kind)
        t_clear = time.monotonic()
        acks = []
        for f in await self.active_faults():
            acks.append({"kind": f["kind"], **await self.ack_with_ctl(
                f["fault_id"], f"{kind} cleared at the machine")})
        rec["acks"] = acks
        rec["recovered_s_after_clear"] = await self.recover(t_clear)
        return rec

    async def slot_fault(self, kind: str) -> dict[str, Any]:
        slot = await self._slot_soon_picked()
        if slot is None:
            return {"outcome": "no slot with stock to pick found"}
        before = await self._discrepancy_ids()
        params: dict[str, Any] = {"slot": slot}
        if kind == "slot_short":
            params["remove"] = 1
        t0 = time.monotonic()
        res = await self.stack.sim.inject(kind, **params)

        async def noticed() -> Any:
            page = await self.staff.call("stock.discrepancies")
            new = [d for d in page["items"] if d["discrepancy_id"] not in before
                   and d["slot"] == slot]
            return new[0] if new else None
        detect, d = await self.until(noticed, self.detect_timeout, interval=0.1)
        del t0
        return {"slot": slot, "removed": len(res.get("removed", [])),
                "detected_s": None if detect is None else round(detect, 3),
                "outcome": "detected when a pick found the slot short" if d else
                f"not noticed within {self.detect_timeout:g} s (no pick found it short)",
                "discrepancy": d, "operator_saw": self.ctl("discrepancies").stdout
                .strip().splitlines()[:3]}

    async def _slot_soon_picked(self) -> int | None:
        for state in ("queued", "picking"):
            page = await self.staff.call("shipment.list", {"state": state, "limit": 20})
            for sh in page["items"]:
                for p in sh.get("robot_picks", []):
                    return int(p["slot"])
        page = await self.staff.call("stock.list", {"limit": 50})
        slots = [p["slot"] for p in page["items"] if p["slot"] is not None]
        return self.rng.choice(slots) if slots else None

    async def _discrepancy_ids(self) -> set[int]:
        page = await self.staff.call("stock.discrepancies", {"limit": 1000})
        return {d["discrepancy_id"] for d in page["items"]}

    async def link_down(self, seconds: float) -> dict[str, Any]:
        t0 = time.monotonic()
        await self.stack.sim.inject("link_down", seconds=seconds)

        async def link_seen_down() -> Any:
            st = await self.status()
            return st if st["robot"]["link"] == "down" or st["state"] == "fault" else None
        detect, _ = await self.until(link_seen_down, seconds + 5)

        async def fault_raised() -> Any:
            st = await self.status()
            return st if st["state"] == "fault" else None
        remaining = max(0.0, seconds - (time.monotonic() - t0)) + 0.5
        t_fault, st = await self.until(fault_raised, remaining, interval=0.05)
        rec: dict[str, Any] = {"seconds": seconds,
                               "link_down_seen_s": None if detect is None else round(detect, 3),
                               "fault_raised_s": None if t_fault is None else
                               round(time.monotonic() - t0, 3)}
        if st is not None:
            faults = await self.active_faults()
            rec["raised"] = [{k: f.get(k) for k in ("kind", "message")} for f in faults]
            rec["operator_saw"] = self.operator_view()
        # The link comes back by itself after `seconds`; clear anyway (idempotent).
        left = seconds - (time.monotonic() - t0)
        if left > 0:
            await asyncio.sleep(left)
        await self.stack.sim.clear("link_down")
        t_back = time.monotonic()
        await asyncio.sleep(0.3)
        acks = []
        for _ in range(3):
            faults = await self.active_faults()
            if not faults:
                break
            for f in faults:
                acks.append({"kind": f["kind"], **await self.ack_with_ctl(
                    f["fault_id"], "link checked")})
            await asyncio.sleep(0.5)
        rec["acks"] = acks
        rec["recovered_s_after_link_back"] = await self.recover(t_back)
        return rec

    async def delay(self, ms: int, seconds: float) -> dict[str, Any]:
        s0 = await self.tech.call("diag.stats")
        await self.stack.sim.inject("delay", ms=ms)
        states = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            states.add((await self.status())["state"])
            await asyncio.sleep(0.1)
        s1 = await self.tech.call("diag.stats")
        await self.stack.sim.clear("delay")
        t_clear = time.monotonic()
        await asyncio.sleep(0.3)
        acks = []
        for f in await self.active_faults():
            acks.append({"kind": f["kind"], **await self.ack_with_ctl(
                f["fault_id"], "robot answers in time again")})
        return {"ms": ms, "seconds": seconds, "machine_states_seen": sorted(states),
                "latency_ms_p50_p99": [s1["latency_ms"]["p50"], s1["latency_ms"]["p99"]],
                "modbus_errors": _delta(s0["errors"], s1["errors"]),
                "acks": acks, "recovered_s_after_clear": await self.recover(t_clear)}

    async def corrupt(self, count: int) -> dict[str, Any]:
        s0 = await self.tech.call("diag.stats")
        await self.stack.sim.inject("corrupt_frame", count=count, mode="alternate")

        async def seen() -> Any:
            s = await self.tech.call("diag.stats")
            d = _delta(s0["errors"], s["errors"])
            return d if sum(d.values()) >= count else None
        detect, _ = await self.until(seen, 10, interval=0.05)
        await self.stack.sim.clear("corrupt_frame")
        st = await self.status()
        acks = []
        for f in await self.active_faults():
            acks.append({"kind": f["kind"], **await self.ack_with_ctl(
                f["fault_id"], "link checked")})
        s1 = await self.tech.call("diag.stats")
        return {"count": count, "detected_all_s": None if detect is None else round(detect, 3),
                "modbus_errors": _delta(s0["errors"], s1["errors"]),
                "reconnects": s1["reconnects"] - s0["reconnects"],
                "machine_state_after": st["state"], "acks": acks}

    async def printer(self, kind: str) -> dict[str, Any]:
        reason = {"printer_pause": "paused"}.get(kind, kind)
        await self.stack.sim.inject(kind)

        async def waiting() -> Any:
            st = await self.status()
            return st["printer"] if reason in st["printer"]["reasons"] else None
        detect, pr = await self.until(waiting, 30, interval=0.05)
        rec: dict[str, Any] = {"detected_s": None if detect is None else round(detect, 3),
                               "printer": pr,
                               "operator_saw": [ln for ln in self.ctl("status").stdout
                                                .splitlines() if "rint" in ln][:3]}
        await asyncio.sleep(self.rng.uniform(0.5, 1.5))
        await self.stack.sim.clear(kind)
        t_clear = time.monotonic()

        async def drained() -> Any:
            st = await self.status()
            return not st["printer"]["reasons"]
        took, _ = await self.until(drained, 30, interval=0.05)
        rec["printing_again_s_after_clear"] = None if took is None else \
            round(time.monotonic() - t_clear, 3)
        return rec

    async def ready_first(self) -> dict[str, Any]:
        """Before the next fault: acknowledge what is still active (a fault raised after the
        previous step's acknowledgement, say) and wait for ready."""
        left = await self.active_faults()
        for f in left:
            await self.ack_with_ctl(f["fault_id"], "found active before the next step")
        t = time.monotonic()
        took = await self.recover(t, timeout=60)
        return {"leftover_faults": [f["kind"] for f in left], "ready_after_s": took} \
            if left or took is None or took > 0.1 else {}

    async def run(self, fault: str) -> dict[str, Any]:
        if fault in ("jam", "dropped", "estop", "door_open"):
            return await self.robot_fault(fault)
        if fault in ("slot_short", "slot_empty"):
            return await self.slot_fault(fault)
        if fault == "link_down_brief":
            return await self.link_down(LINK_FAULT_AFTER_S / 4)
        if fault == "link_down":
            return await self.link_down(LINK_FAULT_AFTER_S * 2)
        if fault == "delay":
            return await self.delay(int(ROBOT_TIMEOUT_S * 1000 * 0.6), 2.0)
        if fault == "delay_over_timeout":
            return await self.delay(int(ROBOT_TIMEOUT_S * 1000 * 1.6), 2.0)
        if fault == "corrupt_frame":
            return await self.corrupt(4)
        return await self.printer(fault)


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b) if b.get(k, 0) != a.get(k, 0)}


async def campaign(workdir: Path, *, orders: int, rounds: int, seed: int, speed: float | None,
                   faults: tuple[str, ...] = FAULTS, rate: float | None = None,
                   timeout: float = 1800, detect_timeout: float = 60.0) -> dict[str, Any]:
    """Run one campaign; the figures (``invariant.ok`` says whether it held)."""
    rng = random.Random(seed)
    plan = day_plan(orders, seed, fridge=0.0, merge_gap=(1, 5))
    stock = stock_for(plan, margin=1.5, extra=3)
    stack = Stack(workdir, instant=True, daemon=DaemonOptions(
        merge_window_s=0.5, watchdog_ms=1000, timeout_s=ROBOT_TIMEOUT_S,
        link_fault_after_s=LINK_FAULT_AFTER_S))
    schedule = [f for _ in range(rounds) for f in faults]
    rng.shuffle(schedule)
    fig: dict[str, Any] = {"seed": seed, "orders": orders, "rounds": rounds,
                           "speed": speed or "instant", "plan": plan.summary(),
                           "schedule": schedule}
    results: list[dict[str, Any]] = []
    acked: Counter[str] = Counter()
    try:
        await stack.start()
        loader = Loader(await stack.client("staff"), stack.sim)
        await loader.load(stock)
        await loader.wait_stored()
        fig["stock"] = {"packs": len(stock), "refused": dict(loader.refused)}
        if speed is not None:
            await stack.restart_sim(instant=False, speed=speed)
        staff = await stack.client("staff")
        tech = await stack.client("technician")
        sc = Scenario(stack, staff, tech, rng, detect_timeout)
        stop = asyncio.Event()
        restock = asyncio.create_task(restocking(
            stack, Loader(await stack.client("staff"), stack.sim), plan.restocker, stop,
            careful=True))
        osys = OrderSystem(stack, plan.orders)
        # Orders keep coming for about as long as the faults take.
        feeder = asyncio.create_task(osys.run(rate or orders / (len(schedule) * 2.5)))
        t0 = time.monotonic()
        for k, fault in enumerate(schedule):
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            at = round(time.monotonic() - t0, 2)
            try:
                before = await sc.ready_first()
                sc.late_acks = []
                rec = {**before, **await sc.run(fault)}
                if sc.late_acks:
                    rec["late_acks"] = sc.late_acks
            except (ApiError, RuntimeError) as exc:
                rec = {"outcome": f"campaign step failed: {exc!r}"}
            results.append({"fault": fault, "at_s": at, **rec})
            say(f"  [{k + 1}/{len(schedule)}] {fault}: "
                + json.dumps({x: rec.get(x) for x in rec if x.endswith("_s") or x.endswith(
                    "_s_after_clear") or x == "outcome"}))
        await feeder
        await osys.close()
        acked = Counter()
        await stack.sim.clear()
        st = await settle(stack, acked, timeout)
        holds = await pharmacist_review(staff)
        st = await settle(stack, acked, 120)
        stop.set()
        fig["restocked_batches"] = dict(await restock)
        fig["wall_s"] = round(time.monotonic() - t0, 1)
        fig["orders_final"] = st.get("orders")
        fig["holds_seen"] = dict(holds)
        fig["faults_acked_at_end"] = dict(acked)
        fig["order_retries"] = osys.retries
        fig["results"] = results
        history = await list_all(staff, "fault.list", {}, "fault_id")
        fig["fault_history"] = dict(Counter(f["kind"] for f in history))
        fig["discrepancies"] = len(await list_all(staff, "stock.discrepancies", {},
                                                  "discrepancy_id"))
        report = await stack.check_invariant(raise_on_problem=False)
        fig["invariant"] = {**report.summary(), "first_problems": report.problems[:20]}
    finally:
        await stack.stop()
    return fig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3, help="times each fault is injected")
    p.add_argument("--seed", type=int)
    p.add_argument("--speed", type=float, default=20.0,
                   help="simulator speed factor (0 = instant robot)")
    p.add_argument("--only", nargs="*", choices=FAULTS, help="these faults only")
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (logs, journal)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1, 10**6)
    say(f"fault_campaign seed={seed} (replay with --seed {seed})")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        fig = asyncio.run(campaign(workdir, orders=args.orders, rounds=args.rounds, seed=seed,
                                   speed=args.speed or None,
                                   faults=tuple(args.only) if args.only else FAULTS))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return report_campaign("fault", seed, fig, args.json)


if __name__ == "__main__":
    sys.exit(main())
