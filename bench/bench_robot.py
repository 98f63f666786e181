"""Robot driver throughput against the simulator in instant mode over Modbus TCP loopback.

Measures, in one run and against the same server:

- pick commands per second through RobotClient: batches of 15 commands per FC16 write, one
  status read per batch, completion reads for what finished;
- bare pymodbus round trips per second: back-to-back FC03 reads of the 32-register status
  block, nothing else.

The robot is stocked first (packs put at the input point, STOREd into slots), so every
measured PICK moves a real pack. Usage::

    .venv/bin/python bench/bench_robot.py [--picks 3000] [--reads 3000] [--rounds 1]

With ``--rounds N`` both figures are measured N times, alternating, so that a change of load
on the machine during the run weighs on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from drivers.robot.client import RobotClient
from drivers.robot.codec import Command, Opcode, Result

BATCH = 15
SLOT_CAPACITY = 10
TOTE_CAPACITY = 40
OUTPUTS = 4
RING_ENTRIES = 64


ROOT = Path(__file__).resolve().parent.parent

# The simulator runs in its own process, as a robot would: its executor does not share an
# event loop (or a core) with the driver. It is started with the packs already waiting at
# the input point, which stands in for staff loading the machine.
SIMULATOR_CHILD = """
import asyncio, sys
from firmware_sim.simulator import Simulator, SimulatorOptions

async def main(slots, per_slot):
    sim = Simulator(SimulatorOptions(tcp_port=0, instant=True))
    await sim.start()
    sim.put_input([
        {"gtin": "04012345678901", "batch": f"B{slot}", "expiry": "2029-12-31",
         "serial": f"S{slot}-{k}"}
        for slot in range(slots) for k in range(per_slot)
    ])
    print(sim.tcp_port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await sim.stop()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def start_simulator(slots: int) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", SIMULATOR_CHILD, str(slots), str(SLOT_CAPACITY)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.strip().isdigit():
        child.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return child, int(line)


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid``; None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_simulator(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class Runner:
    """Feeds the robot's queue and reads what completed, with as few transactions as the
    protocol allows: one FC16 per batch of 15, one status read per batch, and completion
    reads of whole ring runs (15 entries, or up to the ring's end), 5 per 64 completions.

    Pipelined: a batch is written as soon as the queue has room (the previous batch may
    still be executing), and the next batch is built while the robot executes this one."""

    def __init__(self, client: RobotClient) -> None:
        self.client = client
        self.seq = 0
        self.seen = 0
        self.free = 0
        self.results: list[tuple[int, Result]] = []

    async def sync(self) -> None:
        status = await self.client.read_status()
        self.seq = status.last_accepted_seq
        self.seen = status.completion_count
        self.free = status.queue_free

    def build(self, specs: list[tuple[Opcode, int, int, int]]) -> list[Command]:
        cmds = []
        for op, slot, output, count in specs:
            self.seq += 1
            cmds.append(Command(self.seq, op, slot, output, count))
        return cmds

    async def run(self, batches: list[list[tuple[Opcode, int, int, int]]]) -> None:
        """Queue every batch, then wait for and read every completion."""
        if not batches:
            return
        cmds = self.build(batches[0])
        for i in range(len(batches)):
            while self.free < len(cmds):
                # The robot lags behind: poll for room (reading what completed meanwhile).
                await asyncio.sleep(0)
                status = await self.client.read_status()
                self.free = status.queue_free
                await self.collect(status.completion_count)
            await self.client.queue(cmds)
            # Build the next batch while the robot executes this one.
            cmds = self.build(batches[i + 1]) if i + 1 < len(batches) else []
            status = await self.client.read_status()
            self.free = status.queue_free
            await self.collect(status.completion_count)
        await self.drain()

    async def collect(self, completion_count: int, *, everything: bool = False) -> None:
        """Read new completions in whole ring runs: 15 entries (one FC03 of 120 registers)
        or what is left up to the ring's end. A shorter run waits for the next status read,
        unless ``everything``. At most 14 wait, far from the 64 the ring keeps."""
        while self.seen < completion_count:
            run = min(BATCH, RING_ENTRIES - self.seen % RING_ENTRIES)
            if completion_count - self.seen < run and not everything:
                return
            upto = min(completion_count, self.seen + run)
            done = await self.client.read_completions(self.seen, upto)
            self.seen = upto
            self.results.extend((c.opcode, c.result) for c in done)

    async def drain(self) -> None:
        while True:
            status = await self.client.read_status()
            if status.last_completed_seq >= self.seq:
                await self.collect(status.completion_count, everything=True)
                return
            await self.collect(status.completion_count)
            await asyncio.sleep(0)


def pick_plan(picks: int) -> list[list[tuple[Opcode, int, int, int]]]:
    """Batches of 15 commands: PICKs of one pack, round robin over the outputs, with a
    RELEASE_TOTE whenever an output's tote is full."""
    batches: list[list[tuple[Opcode, int, int, int]]] = []
    batch: list[tuple[Opcode, int, int, int]] = []
    in_tote = [0] * (OUTPUTS + 1)
    for i in range(picks):
        output = 1 + i % OUTPUTS
        if in_tote[output] == TOTE_CAPACITY:
            batch.append((Opcode.RELEASE_TOTE, 0, output, 0))
            in_tote[output] = 0
            if len(batch) == BATCH:
                batches.append(batch)
                batch = []
        batch.append((Opcode.PICK, i // SLOT_CAPACITY, output, 1))
        in_tote[output] += 1
        if len(batch) == BATCH:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


async def stock(runner: Runner, slots: int) -> None:
    """HOME, then STORE every pack waiting at the input point into its slot."""
    plan = [(Opcode.STORE, slot, 0, 1) for slot in range(slots) for _ in range(SLOT_CAPACITY)]
    await runner.run(
        [[(Opcode.HOME, 0, 0, 0)]] + [plan[i : i + BATCH] for i in range(0, len(plan), BATCH)]
    )
    bad = [r for r in runner.results if r[1] is not Result.OK]
    if bad:
        raise SystemExit(f"stocking failed: {bad[:5]}")
    runner.results.clear()


@dataclass
class Round:
    """One round: bare round trips, then picks, measured back to back."""

    reads: int
    read_s: float
    picks: int
    pick_s: float
    batches: int
    transactions: int
    controller_cpu_s: float
    sim_cpu_reads_s: float | None
    sim_cpu_picks_s: float | None


async def bare_reads(client: AsyncModbusTcpClient, reads: int) -> float:
    """Seconds for ``reads`` back-to-back FC03 reads of the status block."""
    started = time.perf_counter()
    for _ in range(reads):
        reply = await client.read_holding_registers(0, count=32, device_id=1)
        if reply.isError() or len(reply.registers) != 32:
            raise SystemExit(f"bad reply from the simulator: {reply}")
    return time.perf_counter() - started


async def timed_picks(runner: Runner, plan: list[list[tuple[Opcode, int, int, int]]]) -> float:
    """Seconds to queue ``plan`` and read every completion; every PICK must complete OK."""
    runner.results.clear()
    started = time.perf_counter()
    await runner.run(plan)
    elapsed = time.perf_counter() - started
    picks = sum(1 for batch in plan for op, *_ in batch if op == Opcode.PICK)
    ok_picks = sum(1 for op, r in runner.results if op == Opcode.PICK and r is Result.OK)
    if ok_picks != picks or len(runner.results) != sum(len(b) for b in plan):
        others = [r for r in runner.results if r[1] is not Result.OK][:5]
        raise SystemExit(f"only {ok_picks} of {picks} picks completed OK: {others}")
    return elapsed


def slots_for(picks: int) -> int:
    return (picks + SLOT_CAPACITY - 1) // SLOT_CAPACITY


def _sim_cpu(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


async def run_rounds(port: int, sim_pid: int, picks: int, reads: int, rounds: int) -> list[Round]:
    bare = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    await bare.connect()
    for _ in range(50):  # warm up
        await bare.read_holding_registers(0, count=32, device_id=1)
    # As in the first version of this bench: the first bare round trips are measured
    # before the driver connects and the robot is stocked.
    sim0 = process_cpu(sim_pid)
    first_read_s = await bare_reads(bare, reads)
    first_sim1 = process_cpu(sim_pid)
    client = RobotClient.tcp("127.0.0.1", port, timeout_s=2.0)
    await client.connect()
    runner = Runner(client)
    await runner.sync()
    await stock(runner, slots_for(picks * rounds))
    plan = pick_plan(picks * rounds)
    cut = [len(plan) * r // rounds for r in range(rounds + 1)]
    out = []
    try:
        for r in range(rounds):
            chunk = plan[cut[r] : cut[r + 1]]
            if r == 0:
                read_s, sim1 = first_read_s, first_sim1
            else:
                sim0 = process_cpu(sim_pid)
                read_s = await bare_reads(bare, reads)
                sim1 = process_cpu(sim_pid)
            sim_picks0 = process_cpu(sim_pid)
            client.stats.transactions = 0
            cpu0 = time.process_time()
            pick_s = await timed_picks(runner, chunk)
            cpu1 = time.process_time()
            sim2 = process_cpu(sim_pid)
            out.append(
                Round(
                    reads=reads,
                    read_s=read_s,
                    picks=sum(1 for batch in chunk for op, *_ in batch if op == Opcode.PICK),
                    pick_s=pick_s,
                    batches=len(chunk),
                    transactions=client.stats.transactions,
                    controller_cpu_s=cpu1 - cpu0,
                    sim_cpu_reads_s=_sim_cpu(sim0, sim1),
                    sim_cpu_picks_s=_sim_cpu(sim_picks0, sim2),
                )
            )
        stats = client.stats.snapshot()
        p50, p99 = stats["latency_p50_s"], stats["latency_p99_s"]
        print(
            f"driver latency per transaction (last {stats['latency_samples']}): "
            f"p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us"
        )
    finally:
        bare.close()
        await client.close()
    return out


def _per(total: float | None, n: int) -> str:
    return "n/a" if total is None else f"{total / n * 1e6:.0f} us"


async def main(picks: int, reads: int, rounds: int) -> None:
    child, port = start_simulator(slots_for(picks * rounds))
    try:
        results = await run_rounds(port, child.pid, picks, reads, rounds)
    finally:
        stop_simulator(child)
    if rounds > 1:
        for k, r in enumerate(results, 1):
            print(
                f"round {k}: bare {r.reads / r.read_s:6.0f} /s, picks {r.picks / r.pick_s:6.0f} /s,"
                f" ratio {r.picks / r.pick_s / (r.reads / r.read_s):.2f}"
            )
    n_reads = sum(r.reads for r in results)
    n_picks = sum(r.picks for r in results)
    bare = n_reads / sum(r.read_s for r in results)
    picks_per_s = n_picks / sum(r.pick_s for r in results)
    batches = sum(r.batches for r in results)
    transactions = sum(r.transactions for r in results)
    sim_reads = [r.sim_cpu_reads_s for r in results]
    sim_picks = [r.sim_cpu_picks_s for r in results]
    ratio = picks_per_s / bare
    print(f"bare pymodbus FC03 (32 registers) round trips: {bare:8.0f} /s")
    print(f"picks through RobotClient (15 per FC16):       {picks_per_s:8.0f} /s")
    print(f"ratio picks/s : round trips/s:                 {ratio:8.2f}")
    print(
        f"driver transactions during the pick run: {transactions} "
        f"({transactions / batches:.2f} per batch of {BATCH})"
    )
    print(
        f"controller process CPU per pick (driver, pymodbus and the kernel's loopback work): "
        f"{_per(sum(r.controller_cpu_s for r in results), n_picks)}"
    )
    print(
        "simulator process CPU per pick: "
        f"{_per(None if None in sim_picks else sum(x or 0 for x in sim_picks), n_picks)}, "
        "per bare round trip: "
        f"{_per(None if None in sim_reads else sum(x or 0 for x in sim_reads), n_reads)}"
    )
    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    goal = picks_per_s >= 1000 and ratio >= 2
    print("goal (>= 1000 picks/s and >= 2x round trips/s):", "met" if goal else "NOT met")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure both figures this many times, alternating (each round: --reads bare "
        "round trips, then --picks picks); the figures are totals over all rounds",
    )
    args = parser.parse_args()
    if min(args.picks, args.reads, args.rounds) < 1:
        parser.error("--picks, --reads and --rounds must be at least 1")
    asyncio.run(main(args.picks, args.reads, args.rounds))
