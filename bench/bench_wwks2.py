"""WWKS2 front door figures, printed (nothing asserted), instant robot::

    .venv/bin/python bench/bench_wwks2.py                     # 20,000 packs, 10 x 100
    .venv/bin/python bench/bench_wwks2.py --packs 2000 --clients 2 --outputs 20

1. **stock**: ``--packs`` packs (one batch per slot, ten packs per slot, over as many drugs
   as it takes at 100 packs a drug) loaded through ``stock.load`` into ``dispenserd`` and
   ``dispenser-sim`` as processes (``bench/stack.py``) with WWKS2 enabled.
2. **StockInfo of the whole stock**: ``--stockinfo`` requests from the IMS test client
   (``dispenser/testing/ims_client.py``) for every article with its packs, one at a time: time
   from the request sent to the first and to the last byte of the response (read raw,
   then parsed apart and timed too), the response's size; meanwhile another process
   pings the socket API back to back, whose worst round trip tells how long the daemon's
   loop was held (compared with a second of pings before, with no StockInfo).
3. **clients**: ``--clients`` IMS connections (subscriber ids 100, 101 ...) each send
   ``--outputs`` OutputRequests at once (1-2 packs of a drug, destinations 1-4, mostly
   Normal, some High); time until every OutputMessage is in, per-output latency from
   request to OutputMessage, then the robot's ledger against the journal pack by pack
   (the check of ``dispenser/testing/wwks2.py``) and the stock against the slots.
4. **Output to first PICK** (``--latency`` outputs, one at a time): ``dispenserd`` runs in
   this process (the simulator still in its own), instrumented: controller time from the
   OutputRequest read off the socket to the first PICK of its task written to the robot;
   the IMS client runs on its own thread and event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dispenser.config import parse_config
from dispenser.testing import (
    FORMULARY,
    ROOT,
    TOKENS,
    Stack,
    free_port,
    say,
    scan,
    wait_for,
)
from dispenser.testing.campaigns.dayload import Loader
from dispenser.testing.daemon import SIM_GEOMETRY
from dispenser.testing.ims_client import E, ImsClient, envelope
from dispenser.testing.wwks2 import check_stock_matches_slots, check_totes_match_journal, criteria

PACKS_PER_DRUG = 100


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 0.5) * 1000, 2), "p99": round(pct(values, 0.99) * 1000, 2),
            "max": round(max(values) * 1000, 2), "n": len(values)}


def robot_drugs() -> list[str]:
    import csv
    with open(FORMULARY, newline="", encoding="utf-8") as fh:
        return [r["drug_code"] for r in csv.DictReader(fh)
                if r["fridge"] == "false" and r["manual"] == "false"]


def stock_plan(n: int) -> list[dict[str, str]]:
    drugs = robot_drugs()
    exp = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 400 * 86400))
    packs = []
    for i in range(n):
        packs.append({"gtin": drugs[i // PACKS_PER_DRUG], "batch": f"W{i // 10}",
                      "expiry": exp, "serial": f"WS{i:06d}"})
    return packs


class Wwks2Stack(Stack):
    """The process stack of bench/stack.py with ``[wwks2] enabled`` on ``wwks2_port``."""

    wwks2_port = 0

    def write_config(self) -> Path:
        path = super().write_config()
        self.wwks2_port = self.wwks2_port or free_port()
        path.write_text(path.read_text() + f"\n[wwks2]\nenabled = true\n"
                        f"port = {self.wwks2_port}\n")
        return path


# Pings the socket API back to back in a process of its own (so that the bench's own work,
# such as parsing a large response, does not count) until stdin closes; prints the round
# trips in ms, one JSON list.
PINGER = """
import json, sys, threading, time
from dispenser.api.client import SyncApiClient
client = SyncApiClient(sys.argv[1], token=sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", flush=True)
rtts = []
while not stop.is_set():
    t = time.perf_counter()
    client.call("system.ping")
    rtts.append((time.perf_counter() - t) * 1000)
client.close()
print(json.dumps(rtts), flush=True)
"""


async def _raw_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       message: bytes) -> tuple[float, float, bytes]:
    """Send one message and read its answer (a single message ending with </WWKS>):
    seconds to the first byte, to the last byte, and the bytes."""
    t = time.perf_counter()
    writer.write(message)
    await writer.drain()
    chunks = [await reader.read(65536)]
    first = time.perf_counter() - t
    while not chunks[-1].rstrip().endswith(b"</WWKS>"):
        chunks.append(await reader.read(1 << 20))
    return first, time.perf_counter() - t, b"".join(chunks)


async def stockinfo(stack: Wwks2Stack, rounds: int, fig: dict[str, Any]) -> None:
    """The IMS side on a raw socket (the response is timed, then parsed apart)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.wwks2_port,
                                                   limit=1 << 24)
    hello = envelope(E("HelloRequest", E("Subscriber", Id=100, Type="IMS", Manufacturer="b",
                                         ProductInfo="bench", VersionInfo="1"), Id="1"))
    await _raw_request(reader, writer, hello)
    first: list[float] = []
    last: list[float] = []
    parse: list[float] = []
    for n, details in enumerate((None, False, True)):  # None: no StockInfo, the baseline
        for k in range(rounds if details is not None else 1):
            pinger = subprocess.Popen(
                [sys.executable, "-c", PINGER, str(stack.daemon.socket), TOKENS["staff"]],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert pinger.stdin is not None and pinger.stdout is not None
            await asyncio.to_thread(pinger.stdout.readline)
            await asyncio.sleep(0.2)
            if details is None:
                await asyncio.sleep(1.0)
            else:
                request = envelope(E("StockInfoRequest", Id=f"S{n}{k}", Source=100,
                                     Destination=999, IncludePacks="True",
                                     IncludeArticleDetails=str(details)))
                t_first, t_last, data = await _raw_request(reader, writer, request)
                first.append(t_first)
                last.append(t_last)
            pinger.stdin.close()
            rtts = json.loads(await asyncio.to_thread(pinger.stdout.readline))
            pinger.wait()
            fig.setdefault("api_ping_ms", []).append(
                {"while": "idle" if details is None else "stockinfo",
                 "max": round(max(rtts), 2), "p99": round(pct(rtts, 0.99), 2),
                 "n": len(rtts)})
            if details is not None:
                t = time.perf_counter()
                packs = sum(1 for _ in ET.fromstring(data).iter("Pack"))
                parse.append(time.perf_counter() - t)
        if details is None:
            continue
        key = "stockinfo_with_details" if details else "stockinfo"
        fig[key] = {"packs": packs, "bytes": len(data), "first_byte": ms(first),
                    "last_byte": ms(last), "client_parse": ms(parse)}
        first.clear()
        last.clear()
        parse.clear()
    writer.close()


async def many_clients(stack: Wwks2Stack, packs: list[dict[str, str]], clients: int,
                       outputs: int, seed: int, fig: dict[str, Any]) -> None:
    rng = random.Random(seed)
    drugs = sorted({p["gtin"] for p in packs})
    conns = [await ImsClient.connect(stack.wwks2_port, subscriber_id=100 + i)
             for i in range(clients)]
    for c in conns:
        await c.hello()
    sent: dict[tuple[int, str], float] = {}
    latencies: list[float] = []
    rejected = 0

    async def one_client(c: ImsClient) -> None:
        nonlocal rejected
        ids = [f"{c.subscriber_id}-{n}" for n in range(outputs)]
        for task_id in ids:
            details = E("Details", Priority=rng.choice(("Normal",) * 4 + ("High",)),
                        OutputDestination=rng.randint(1, 4), OutputPoint=0)
            sent[(c.subscriber_id, task_id)] = time.perf_counter()
            await c.send(c.routed("OutputRequest", details,
                                  criteria(rng.choice(drugs), rng.choice((1, 1, 2))),
                                  Id=task_id))
        for task_id in ids:
            response = await c.expect("OutputResponse", task_id, timeout=120)
            if response.lead.find("Details").get("Status") != "Queued":  # type: ignore[union-attr]
                rejected += 1
                continue
        for task_id in ids:
            await c.expect("OutputMessage", task_id, timeout=600)
            latencies.append(time.perf_counter() - sent[(c.subscriber_id, task_id)])

    cpu0 = stack.daemon.cpu_seconds() or 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in conns))
    wall = time.perf_counter() - t0
    cpu = (stack.daemon.cpu_seconds() or 0.0) - cpu0
    staff = await stack.client("staff")
    by_task = await check_totes_match_journal(staff, stack.sim)  # type: ignore[arg-type]
    await check_stock_matches_slots(staff, stack.sim)  # type: ignore[arg-type]
    fig["clients"] = {
        "clients": clients, "outputs_each": outputs, "rejected": rejected,
        "seconds": round(wall, 2), "outputs_per_s": round(clients * outputs / wall, 1),
        "request_to_output_message": ms(latencies), "daemon_cpu_s": round(cpu, 2),
        "tasks_with_packs": len(by_task),
        "packs_dispensed": sum(len(v) for v in by_task.values()),
        "ledger_matches_journal": True}
    for c in conns:
        await c.close()


# --------------------------------------------------------------------------- in process
def _config(stack: Stack, workdir: Path, port: int) -> Any:
    g = SIM_GEOMETRY
    return parse_config({
        "journal": {"path": str(workdir / "inproc.sqlite")},
        "api": {"socket": str(workdir / "inproc.sock")},
        "robot": {"port": stack.sim_port, "timeout_s": 0.5, "watchdog_ms": 2000},
        "printer": {"url": str(stack.printer_link), "timeout_s": 2.0},
        "formulary": {"path": str(FORMULARY)},
        "stock": {"sides": g["sides"], "levels": g["levels"], "columns": g["columns"],
                  "slot_capacity": g["slot_capacity"]},
        "wwks2": {"enabled": True, "port": port},
        "log": {"level": "warning", "format": "json"},
    })


def _client_thread(port: int, drugs: list[str], n: int) -> None:
    async def drive() -> None:
        ims = await ImsClient.connect(port)
        await ims.hello()
        for k in range(n):
            response = await ims.request("OutputRequest",
                                         E("Details", Priority="Normal",
                                           OutputDestination=1 + k % 4, OutputPoint=0),
                                         criteria(drugs[k % len(drugs)], 1), Id=f"L{k}")
            assert response.lead.find("Details").get("Status") == "Queued"  # type: ignore[union-attr]
            await ims.expect("OutputMessage", f"L{k}", timeout=60)
        await ims.close()
    asyncio.run(drive())


async def first_pick(workdir: Path, n: int, fig: dict[str, Any]) -> None:
    from dispenser.core.states import PackState
    from dispenser.core.views import Actor
    from dispenser.daemon.app import Daemon
    from dispenser.daemon.robot import Motion

    stack = Stack(workdir / "inproc", instant=True)
    stack.start_sim()
    port = free_port()
    daemon = Daemon(_config(stack, workdir, port))
    received: dict[str, float] = {}
    written: dict[str, float] = {}
    server = daemon.wwks2
    assert server is not None
    on_frame: Callable[..., Awaitable[None]] = server.on_frame

    async def timed_frame(connection: Any, frame: bytes) -> None:
        if b"<OutputRequest" in frame[:200]:
            m = re.search(rb'<OutputRequest Id="([^"]+)"', frame)
            if m:
                received[m.group(1).decode()] = time.perf_counter()
        await on_frame(connection, frame)

    server.on_frame = timed_frame  # type: ignore[method-assign]
    ledger = daemon.scheduler.ledger
    send = ledger.send

    async def timed_send(intents: list[Any], journaled: bool = False) -> bool:
        ok = await send(intents, journaled)
        now = time.perf_counter()
        for i in intents:
            if i.task_id is not None and i.motion is Motion.PICK and i.task_id not in written:
                written[i.task_id] = now
        return ok

    ledger.send = timed_send  # type: ignore[method-assign]
    run = asyncio.create_task(daemon.run())
    try:
        async def ready() -> bool:
            return daemon.machine.state.value == "ready"
        await wait_for(ready, 60, what="in-process daemon ready")
        drugs = robot_drugs()[:20]
        packs = [{"gtin": d, "batch": f"F{k}", "expiry": "2030-01-31",
                  "serial": f"FP{j:02d}{k:03d}"} for j, d in enumerate(drugs)
                 for k in range(n // len(drugs) + 2)]
        await stack.sim.put_input(packs)
        loader = Actor("bench-loader", "staff")
        futures = [daemon.scheduler.request_load(scan(p), loader, wait=False)
                   for p in packs]
        await asyncio.gather(*futures)

        async def stored() -> bool:
            return not daemon.dispensary.list_stock(state=PackState.LOADING, limit=1)
        await wait_for(stored, 120, what="stock stored")
        await asyncio.to_thread(_client_thread, port, drugs, n)
        lat = []
        for view in daemon.dispensary.list_tasks(limit=100000):
            rid = str(view.meta["request_id"])
            if rid in received and view.task_id in written:
                lat.append(written[view.task_id] - received[rid])
        fig["output_to_first_pick"] = ms(lat)
    finally:
        daemon.request_stop()
        await run
        await stack.sim.close()
        stack.stop_sim()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    fig: dict[str, Any] = {"args": vars(args)}
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="bench-wwks2-"))
    stack = Wwks2Stack(workdir, instant=True)
    await stack.start()
    try:
        packs = stock_plan(args.packs)
        say(f"stock: loading {len(packs)} packs ...")
        loader = Loader(await stack.client("staff"), stack.sim)
        t = time.perf_counter()
        await loader.load(packs)
        await loader.wait_stored()
        fig["stock"] = {"packs": loader.loaded, "seconds": round(time.perf_counter() - t, 1)}
        say(f"  {fig['stock']}")
        say(f"StockInfo of the whole stock x{args.stockinfo} (and with details) ...")
        await stockinfo(stack, args.stockinfo, fig)
        say(f"  {fig['stockinfo']}")
        say(f"{args.clients} clients x {args.outputs} outputs ...")
        await many_clients(stack, packs, args.clients, args.outputs, args.seed, fig)
        say(f"  {fig['clients']}")
    finally:
        await stack.stop()
    say(f"Output to first PICK, {args.latency} outputs one at a time (in process) ...")
    await first_pick(workdir, args.latency, fig)
    say(f"  {fig['output_to_first_pick']}")
    return fig


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packs", type=int, default=20000)
    p.add_argument("--stockinfo", type=int, default=5)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--outputs", type=int, default=100)
    p.add_argument("--latency", type=int, default=300)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--keep", help="working directory to keep (journal, logs)")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args()
    figures = asyncio.run(main(a))
    say(json.dumps(figures, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
