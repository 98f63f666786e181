"""Robot driver throughput against the simulator in instant mode over Modbus TCP loopback.

Measures, in one run and against the same server:

- pick commands per second through RobotClient: batches of 15 commands per FC16 write, one
  status read per batch, completion reads for what finished;
- bare pymodbus round trips per second: back-to-back FC03 reads of the 32-register status
  block, nothing else.

The robot is stocked first (packs put at the input point, STOREd into slots), so every
measured PICK moves a real pack. Usage::

    .venv/bin/python bench/bench_robot.py [--picks 3000] [--reads 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


async def bench_picks(port: int, picks: int) -> tuple[float, float, RobotClient]:
    """(picks per second, controller CPU seconds per pick, client)."""
    client = RobotClient.tcp("127.0.0.1", port, timeout_s=2.0)
    await client.connect()
    runner = Runner(client)
    await runner.sync()
    await stock(runner, slots_for(picks))
    plan = pick_plan(picks)
    client.stats.transactions = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    await runner.run(plan)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    ok_picks = sum(1 for op, r in runner.results if op == Opcode.PICK and r is Result.OK)
    if ok_picks != picks:
        others = [r for r in runner.results if r[1] is not Result.OK][:5]
        raise SystemExit(f"only {ok_picks} of {picks} picks completed OK: {others}")
    return picks / elapsed, cpu / picks, client


async def bench_bare_reads(port: int, reads: int) -> float:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    await client.connect()
    for _ in range(50):  # warm up
        await client.read_holding_registers(0, count=32, device_id=1)
    started = time.perf_counter()
    for _ in range(reads):
        reply = await client.read_holding_registers(0, count=32, device_id=1)
        if reply.isError() or len(reply.registers) != 32:
            raise SystemExit(f"bad reply from the simulator: {reply}")
    elapsed = time.perf_counter() - started
    client.close()
    return reads / elapsed


def slots_for(picks: int) -> int:
    return (picks + SLOT_CAPACITY - 1) // SLOT_CAPACITY


async def main(picks: int, reads: int) -> None:
    child, port = start_simulator(slots_for(picks))
    try:
        bare = await bench_bare_reads(port, reads)
        picks_per_s, cpu_per_pick, client = await bench_picks(port, picks)
        stats = client.stats.snapshot()
        await client.close()
    finally:
        stop_simulator(child)
    ratio = picks_per_s / bare
    print(f"bare pymodbus FC03 (32 registers) round trips: {bare:8.0f} /s")
    print(f"picks through RobotClient (15 per FC16):       {picks_per_s:8.0f} /s")
    print(f"ratio picks/s : round trips/s:                 {ratio:8.2f}")
    p50, p99 = stats["latency_p50_s"], stats["latency_p99_s"]
    print(
        f"driver transactions during the pick run: {stats['transactions']}, "
        f"latency p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us"
    )
    print(
        f"controller process CPU per pick (driver, pymodbus and the kernel's loopback work): "
        f"{cpu_per_pick * 1e6:.0f} us"
    )
    goal = picks_per_s >= 1000 and ratio >= 2
    print("goal (>= 1000 picks/s and >= 2x round trips/s):", "met" if goal else "NOT met")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", type=int, default=3000)
    parser.add_argument("--reads", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.picks, args.reads))
