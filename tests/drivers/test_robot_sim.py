"""RobotClient against the simulator over real transports: Modbus TCP on loopback and
Modbus RTU on the simulator's pty. Every fault the simulator can inject reaches the driver as
the documented completion result, machine state or typed error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.robot.client import RobotClient
from drivers.robot.codec import (
    Command,
    Completion,
    FaultCode,
    InvalidReason,
    MachineState,
    Opcode,
    Result,
)
from drivers.robot.errors import (
    CompletionsLost,
    ModbusExceptionReply,
    QueueFull,
    ResetRefused,
    RobotLinkDown,
    RobotTimeout,
    SequenceRejected,
)

simulator = pytest.importorskip("firmware_sim.simulator", reason="simulator not available")

pytestmark = pytest.mark.timeout(60)

SLOT = 5203
OTHER_SLOT = 17


def packs(n: int, *, batch: str = "B1", first: int = 0) -> list[dict[str, str]]:
    return [
        {"gtin": "04012345678901", "batch": batch, "expiry": "2028-01-31", "serial": f"S{i}"}
        for i in range(first, first + n)
    ]


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Any]:
    s = simulator.Simulator(
        simulator.SimulatorOptions(tcp_port=0, rtu_link=str(tmp_path / "robot"), instant=True)
    )
    await s.start()
    yield s
    await s.stop()


@pytest.fixture(params=["tcp", "rtu"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    yield str(request.param)


@pytest.fixture
async def robot(sim: Any, transport: str) -> AsyncIterator[RobotClient]:
    if transport == "tcp":
        client = RobotClient.tcp("127.0.0.1", sim.tcp_port, timeout_s=0.3, backoff_s=(0.05, 0.2))
    else:
        client = RobotClient.rtu(sim.rtu_link, timeout_s=0.3, backoff_s=(0.05, 0.2))
    await client.connect()
    yield client
    await client.close()


class Driver:
    """Test-side bookkeeping: sequence numbers and the completions seen so far."""

    def __init__(self, client: RobotClient) -> None:
        self.client = client
        self.seen = 0

    async def start(self) -> None:
        self.seen = (await self.client.read_status()).completion_count

    async def next_seq(self) -> int:
        return (await self.client.read_status()).last_accepted_seq + 1

    async def run(self, *specs: tuple[Opcode, int, int, int]) -> list[Completion]:
        """Queue (opcode, slot, output, count) commands and return their completions."""
        seq = await self.next_seq()
        cmds = [
            Command(seq + i, op, slot, out, cnt) for i, (op, slot, out, cnt) in enumerate(specs)
        ]
        await self.client.queue(cmds)
        return await self.wait_for(cmds[-1].seq)

    async def wait_for(self, seq: int) -> list[Completion]:
        for _ in range(500):
            status = await self.client.read_status()
            if status.last_completed_seq >= seq:
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError(f"seq {seq} never completed")
        done = await self.client.read_completions(self.seen, status.completion_count)
        self.seen = status.completion_count
        return done


HOME = (Opcode.HOME, 0, 0, 0)


def store(slot: int = SLOT) -> tuple[Opcode, int, int, int]:
    return (Opcode.STORE, slot, 0, 1)


def pick(count: int = 1, slot: int = SLOT, output: int = 1) -> tuple[Opcode, int, int, int]:
    return (Opcode.PICK, slot, output, count)


@pytest.fixture
async def stocked(sim: Any, robot: RobotClient) -> Driver:
    """Homed robot with 5 packs in SLOT."""
    d = Driver(robot)
    await d.start()
    sim.put_input(packs(5))
    done = await d.run(HOME, *[store()] * 5)
    assert [c.result for c in done] == [Result.OK] * 6
    return d


async def test_status_block_reads_the_simulators_real_values(robot: RobotClient) -> None:
    s = await robot.read_status()
    assert (s.protocol_version, s.firmware_version) == (1, 256)
    assert s.machine_state is MachineState.NOT_HOMED and not s.homed
    assert s.fault_code is FaultCode.NONE
    assert (s.queue_capacity, s.output_count, s.queue_depth) == (32, 4, 0)
    assert (s.sides, s.levels, s.columns, s.slot_capacity, s.tote_capacity) == (2, 25, 200, 10, 40)
    assert not s.door_open and not s.estop_pressed and s.output_full == frozenset()


async def test_input_scan_matches_the_pack_at_the_input_point(sim: Any, robot: RobotClient) -> None:
    assert (await robot.read_input()).present is False
    sim.put_input(packs(1, batch="LOT7"))
    scan = await robot.read_input()
    assert scan.present
    assert scan.data == "01040123456789011728013110LOT7\x1d21S0"
    assert (await robot.read_status()).input_count == 1


async def test_queue_and_completions_of_a_pick(sim: Any, stocked: Driver) -> None:
    done = await stocked.run(
        pick(2, output=2), (Opcode.RELEASE_TOTE, 0, 2, 0), (Opcode.SCAN_SLOT, SLOT, 0, 0)
    )
    assert [(c.opcode, c.result, c.detail) for c in done] == [
        (Opcode.PICK, Result.OK, 2),
        (Opcode.RELEASE_TOTE, Result.OK, 0),
        (Opcode.SCAN_SLOT, Result.OK, 3),
    ]
    assert done[0].slot == SLOT and done[0].output == 2
    s = await stocked.client.read_status()
    assert s.machine_state is MachineState.IDLE and s.queue_depth == 0
    assert s.last_completed_seq == s.last_accepted_seq == done[-1].seq


async def test_invalid_commands_complete_invalid_with_a_reason(stocked: Driver) -> None:
    done = await stocked.run(
        (Opcode.PICK, 10_000, 1, 1), (Opcode.PICK, SLOT, 9, 1), (Opcode.STORE, SLOT, 0, 1)
    )
    assert [c.result for c in done] == [Result.INVALID] * 3
    assert [c.invalid_reason for c in done] == [
        InvalidReason.SLOT_OUT_OF_RANGE,
        InvalidReason.OUTPUT_OUT_OF_RANGE,
        InvalidReason.NO_PACK_AT_INPUT,
    ]


async def test_sequence_not_above_last_accepted_is_rejected(stocked: Driver) -> None:
    seq = await stocked.next_seq()
    with pytest.raises(SequenceRejected) as err:
        await stocked.client.queue([Command(seq - 1, Opcode.HOME)])
    assert (err.value.function_code, err.value.exception_code) == (16, 3)
    with pytest.raises(SequenceRejected):
        await stocked.client.queue([Command(seq + 1, Opcode.HOME), Command(seq, Opcode.HOME)])
    assert await stocked.next_seq() == seq  # nothing was queued


async def test_queue_full_while_the_robot_waits_for_a_reset(sim: Any, stocked: Driver) -> None:
    sim.inject("door_open")
    seq = await stocked.next_seq()
    await stocked.client.queue([Command(seq + i, Opcode.SCAN_SLOT, SLOT) for i in range(32)])
    with pytest.raises(QueueFull) as err:
        await stocked.client.queue([Command(seq + 32, Opcode.SCAN_SLOT, SLOT)])
    assert err.value.exception_code == 6
    s = await stocked.client.read_status()
    assert s.queue_depth == 32 and s.queue_free == 0 and s.last_accepted_seq == seq + 31
    with pytest.raises(ResetRefused):
        await stocked.client.reset()
    await stocked.client.abort_queue()
    done = await stocked.wait_for(seq + 31)
    assert [c.result for c in done] == [Result.ABORTED] * 32
    sim.clear("door_open")
    await stocked.client.reset()
    assert (await stocked.client.read_status()).machine_state is MachineState.IDLE


async def test_exception_reply_is_typed_with_its_raw_code(robot: RobotClient) -> None:
    with pytest.raises(ModbusExceptionReply) as err:
        await robot.read_registers(500, 4)
    assert (err.value.function_code, err.value.exception_code) == (3, 2)
    with pytest.raises(ModbusExceptionReply) as err:
        await robot.read_registers(2500, 20)  # runs past the ring
    assert err.value.exception_code == 2
    assert robot.stats.errors["exception_02"] == 2


async def test_completion_ring_wraps_and_older_entries_are_lost(sim: Any, stocked: Driver) -> None:
    start = stocked.seen
    seq = await stocked.next_seq()
    for base in range(0, 75, 15):  # 75 SCAN_SLOT completions: more than the ring holds
        await stocked.client.queue(
            [Command(seq + base + i, Opcode.SCAN_SLOT, SLOT) for i in range(15)]
        )
        await stocked.wait_for(seq + base + 14)
    s = await stocked.client.read_status()
    assert s.completion_count == start + 75
    with pytest.raises(CompletionsLost):
        await stocked.client.read_completions(start, s.completion_count)
    last = await stocked.client.read_completions(s.completion_count - 64, s.completion_count)
    assert [c.seq for c in last] == list(range(seq + 11, seq + 75))
    assert [c.number for c in last] == list(range(s.completion_count - 63, s.completion_count + 1))


async def test_jam(sim: Any, stocked: Driver) -> None:
    sim.inject("jam", after_picks=0)
    done = await stocked.run(pick(2), pick(1))
    assert [(c.result, c.detail) for c in done] == [(Result.JAM, 1), (Result.ABORTED, 0)]
    s = await stocked.client.read_status()
    assert (s.machine_state, s.fault_code) == (MachineState.FAULT, FaultCode.JAM)
    with pytest.raises(ResetRefused) as err:
        await stocked.client.reset()
    assert err.value.exception_code == 4
    sim.clear("jam")
    await stocked.client.reset()
    s = await stocked.client.read_status()
    assert (s.machine_state, s.fault_code, s.homed) == (MachineState.IDLE, FaultCode.NONE, True)


async def test_slot_short_and_slot_empty(sim: Any, stocked: Driver) -> None:
    sim.inject("slot_short", slot=SLOT, remove=3)
    done = await stocked.run(pick(3))
    assert [(c.result, c.detail) for c in done] == [(Result.SLOT_EMPTY, 2)]
    sim.put_input(packs(2, first=10))
    await stocked.run(store(OTHER_SLOT), store(OTHER_SLOT))
    sim.inject("slot_empty", slot=OTHER_SLOT)
    done = await stocked.run(pick(1, slot=OTHER_SLOT), (Opcode.SCAN_SLOT, OTHER_SLOT, 0, 0))
    assert [(c.result, c.detail) for c in done] == [(Result.SLOT_EMPTY, 0), (Result.OK, 0)]
    assert (await stocked.client.read_status()).machine_state is MachineState.IDLE


async def test_dropped(sim: Any, stocked: Driver) -> None:
    sim.inject("dropped")
    done = await stocked.run(pick(2), pick(1))
    assert [(c.result, c.detail) for c in done] == [(Result.DROPPED, 1), (Result.ABORTED, 0)]
    s = await stocked.client.read_status()
    assert (s.machine_state, s.fault_code) == (MachineState.FAULT, FaultCode.DROPPED)
    with pytest.raises(ResetRefused):
        await stocked.client.reset()
    sim.clear("dropped")
    await stocked.client.reset()
    assert (await stocked.client.read_status()).machine_state is MachineState.IDLE


async def test_emergency_stop_needs_release_reset_and_home(sim: Any, stocked: Driver) -> None:
    sim.inject("estop")
    s = await stocked.client.read_status()
    assert (s.machine_state, s.fault_code) == (MachineState.ESTOP, FaultCode.ESTOP)
    assert s.estop_pressed and not s.homed
    with pytest.raises(ResetRefused):
        await stocked.client.reset()
    sim.clear("estop")
    await stocked.client.reset()
    s = await stocked.client.read_status()
    assert s.machine_state is MachineState.NOT_HOMED and not s.estop_pressed
    done = await stocked.run(pick(1), HOME, pick(1))
    assert [c.result for c in done] == [Result.INVALID, Result.OK, Result.OK]
    assert done[0].invalid_reason is InvalidReason.NOT_HOMED


async def test_door_open(sim: Any, stocked: Driver) -> None:
    sim.inject("door_open")
    s = await stocked.client.read_status()
    assert s.door_open and (s.machine_state, s.fault_code) == (
        MachineState.FAULT,
        FaultCode.DOOR_OPEN,
    )
    seq = await stocked.next_seq()
    await stocked.client.queue([Command(seq, Opcode.PICK, SLOT, 1, 1)])  # accepted, waits
    assert (await stocked.client.read_status()).queue_depth == 1
    with pytest.raises(ResetRefused):
        await stocked.client.reset()
    sim.clear("door_open")
    await stocked.client.reset()
    done = await stocked.wait_for(seq)
    assert [(c.seq, c.result) for c in done] == [(seq, Result.OK)]


async def test_watchdog_expiry_is_controller_lost(stocked: Driver) -> None:
    client = stocked.client
    await client.set_watchdog(100)
    await client.refresh_watchdog()
    assert (await client.read_status()).watchdog_armed
    await asyncio.sleep(0.3)
    s = await client.read_status()
    assert (s.machine_state, s.fault_code) == (
        MachineState.CONTROLLER_LOST,
        FaultCode.CONTROLLER_LOST,
    )
    with pytest.raises(QueueFull):
        await client.queue([Command(s.last_accepted_seq + 1, Opcode.HOME)])
    await client.set_watchdog(0)
    await client.reset()
    assert (await client.read_status()).machine_state is MachineState.IDLE
    with pytest.raises(ValueError):
        await client.set_watchdog(50)


async def test_delayed_responses_time_out_then_recover(sim: Any, robot: RobotClient) -> None:
    sim.inject("delay", ms=600)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RobotTimeout):
        await robot.read_status()
    assert loop.time() - t0 < 0.6
    sim.clear("delay")
    await asyncio.sleep(0.7)  # let the late answer arrive and be discarded
    s = await robot.read_status()
    assert s.protocol_version == 1
    assert robot.stats.errors["timeout"] == 1


async def test_corrupt_frame_is_never_taken_as_data(
    sim: Any, robot: RobotClient, transport: str
) -> None:
    # TCP: a reply with a wrong transaction id or a wrong MBAP length; RTU: a bad CRC.
    # Modbus discards such a frame, so the caller sees a timeout, and the next exchange is clean.
    modes = ["tid", "length"] if transport == "tcp" else ["alternate"]
    for n, mode in enumerate(modes, start=1):
        sim.inject("corrupt_frame", mode=mode, count=1)
        with pytest.raises(RobotTimeout):
            await robot.read_status()
        assert (await robot.read_status()).protocol_version == 1
        assert robot.stats.errors["timeout"] == n


async def test_link_down_then_reconnect(sim: Any, robot: RobotClient, transport: str) -> None:
    assert (await robot.read_status()).protocol_version == 1
    sim.inject("link_down", seconds=0.4)
    if transport == "tcp":
        # TCP: the robot closed the connection; the driver says so and refuses calls fast
        with pytest.raises(RobotLinkDown):
            await robot.read_status()
        assert not robot.connected
    else:
        # RTU has no connection: a silent line is a timeout
        with pytest.raises(RobotTimeout):
            await robot.read_status()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    status = None
    while status is None and loop.time() < deadline:
        try:
            status = await robot.read_status()
        except (RobotLinkDown, RobotTimeout):
            await asyncio.sleep(0.02)
    assert status is not None and status.protocol_version == 1
    if transport == "tcp":
        assert robot.stats.reconnects == 1


async def test_foreign_device_id(sim: Any, transport: str) -> None:
    # TCP: the robot answers a foreign unit id with exception 04; RTU: it stays silent
    if transport == "tcp":
        client = RobotClient.tcp("127.0.0.1", sim.tcp_port, device_id=7, timeout_s=0.3)
        with pytest.raises(ModbusExceptionReply) as err:
            await client.read_status()
        assert err.value.exception_code == 4
    else:
        client = RobotClient.rtu(sim.rtu_link, device_id=7, timeout_s=0.3)
        with pytest.raises(RobotTimeout):
            await client.read_status()
    await client.close()


async def test_output_full(sim: Any, robot: RobotClient) -> None:
    d = Driver(robot)
    await d.start()
    sim.put_input([p | {"batch": f"B{i // 10}"} for i, p in enumerate(packs(41))])
    slots = [(Opcode.STORE, 100 + i // 10, 0, 1) for i in range(41)]
    await d.run(HOME, *slots[:15])
    await d.run(*slots[15:30])
    await d.run(*slots[30:])
    done = await d.run(*[pick(10, slot=100 + k) for k in range(4)], pick(1, slot=104))
    assert [(c.result, c.detail) for c in done] == [(Result.OK, 10)] * 4 + [(Result.OUTPUT_FULL, 0)]
    s = await robot.read_status()
    assert s.output_full == frozenset({1}) and s.machine_state is MachineState.IDLE
    done = await d.run((Opcode.RELEASE_TOTE, 0, 1, 0), pick(1, slot=104))
    assert [c.result for c in done] == [Result.OK, Result.OK]
    assert (await robot.read_status()).output_full == frozenset()


async def test_estop_during_a_motion_completes_estop(tmp_path: Path) -> None:
    # at speed 50 a HOME takes 0.1 s: long enough to press the button while it moves
    s = simulator.Simulator(simulator.SimulatorOptions(tcp_port=0, speed=50))
    await s.start()
    client = RobotClient.tcp("127.0.0.1", s.tcp_port, timeout_s=0.5)
    try:
        d = Driver(client)
        await d.start()
        seq = await d.next_seq()
        await client.queue([Command(seq, Opcode.HOME), Command(seq + 1, Opcode.HOME)])
        for _ in range(100):
            if (await client.read_status()).executing_seq == seq:
                break
            await asyncio.sleep(0.005)
        s.inject("estop")
        done = await d.wait_for(seq + 1)
        assert [(c.result, c.detail) for c in done] == [(Result.ESTOP, 0), (Result.ABORTED, 0)]
        status = await client.read_status()
        assert status.machine_state is MachineState.ESTOP and not status.homed
    finally:
        await client.close()
        await s.stop()


async def test_rtu_line_gone_and_back(tmp_path: Path) -> None:
    link = str(tmp_path / "robot")
    first = simulator.Simulator(simulator.SimulatorOptions(tcp_port=None, rtu_link=link))
    await first.start()
    client = RobotClient.rtu(link, timeout_s=0.3, backoff_s=(0.05, 0.2))
    try:
        assert (await client.read_status()).protocol_version == 1
        await first.stop()  # the serial line goes away (pty closed, link removed)
        with pytest.raises((RobotLinkDown, RobotTimeout)):
            await client.read_status()
        second = simulator.Simulator(simulator.SimulatorOptions(tcp_port=None, rtu_link=link))
        await second.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3.0
            status = None
            while status is None and loop.time() < deadline:
                try:
                    status = await client.read_status()
                except (RobotLinkDown, RobotTimeout):
                    await asyncio.sleep(0.02)
            assert status is not None and status.protocol_version == 1
            assert client.stats.reconnects == 1
        finally:
            await second.stop()
    finally:
        await client.close()
