"""Packs are physical, commands have consequences, injected faults do what they say."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispenser.testing.modbus_client import ModbusError, TcpClient, command, pack, read_pdu
from dispenser.testing.simulator import homed, options
from firmware_sim import Simulator, SimulatorError

HOME, STORE, PICK, RELEASE_TOTE, SCAN_SLOT = 1, 2, 3, 4, 5
OK, SLOT_EMPTY, JAM, DROPPED, OUTPUT_FULL, ESTOP, INVALID, ABORTED = range(8)


async def run(client: TcpClient, *commands: list[int]) -> list[tuple[int, int]]:
    """Queue commands in one write; return (result, detail) of each once all completed."""
    before = (await client.status())["completion_count"]
    await client.queue(*commands)
    last = (commands[-1][0] << 16) | commands[-1][1]
    s = await client.wait_completed(last)
    entries = await client.completions(before + 1, s["completion_count"])
    return [(e["result"], e["detail"]) for e in entries]


def serials(packs: list[dict[str, object]]) -> list[object]:
    return [p["serial"] for p in packs]


async def test_store_is_fifo_and_pick_takes_oldest(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)
    sim.put_input([pack(1), pack(2), pack(3)])
    assert sim.ledger()["slots"] == {}  # put at the input point, not yet stored
    results = await run(client, *[command(seq + i, STORE, 17, 0, 1) for i in range(3)])
    assert results == [(OK, 1)] * 3
    ledger = sim.ledger()
    assert ledger["input"] == []
    assert serials(ledger["slots"]["17"]) == ["S1", "S2", "S3"]
    assert await run(client, command(10, PICK, 17, 3, 2)) == [(OK, 2)]
    ledger = sim.ledger()
    assert serials(ledger["slots"]["17"]) == ["S3"]
    tote = ledger["outputs"]["3"]
    assert serials(tote["packs"]) == ["S1", "S2"]
    assert {p["pick_seq"] for p in tote["packs"]} == {10}
    assert await run(client, command(11, PICK, 17, 3, 2)) == [(SLOT_EMPTY, 1)]
    assert "17" not in sim.ledger()["slots"]
    assert await run(client, command(12, SCAN_SLOT, 17)) == [(OK, 0)]


async def test_store_refusals(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)
    assert await run(client, command(seq, STORE, 5, 0, 1)) == [(INVALID, 5)]
    sim.put_slot(5, [pack(i) for i in range(10)])
    sim.put_input([pack(20, batch="OTHER"), pack(21)])
    assert await run(client, command(seq + 1, STORE, 6, 0, 1)) == [(OK, 1)]  # OTHER to 6
    sim.put_input([pack(22)])  # input now: S21, S22 (batch B1)
    assert await run(client, command(seq + 2, STORE, 6, 0, 1)) == [(INVALID, 7)]
    assert await run(client, command(seq + 3, STORE, 5, 0, 1)) == [(INVALID, 6)]
    assert serials(sim.ledger()["input"]) == ["S21", "S22"]  # refused packs stay put
    assert await run(client, command(seq + 4, SCAN_SLOT, 5)) == [(OK, 10)]
    with pytest.raises(SimulatorError):
        sim.put_slot(6, [pack(30)])  # a technician cannot mix batches either


async def test_invalid_reasons(client: TcpClient) -> None:
    assert await run(client, command(1, PICK, 1, 1, 1)) == [(INVALID, 8)]  # not homed
    seq = await homed(client, 2)
    results = await run(
        client,
        command(seq, 9),
        command(seq + 1, PICK, 10000, 1, 1),
        command(seq + 2, PICK, 1, 5, 1),
        command(seq + 3, PICK, 1, 0, 1),
        command(seq + 4, PICK, 1, 1, 0),
        command(seq + 5, PICK, 1, 1, 11),
        command(seq + 6, STORE, 1, 0, 2),
        command(seq + 7, RELEASE_TOTE, 0, 0),
        command(seq + 8, SCAN_SLOT, 0x10000),
    )
    assert results == [(INVALID, r) for r in (1, 2, 3, 3, 4, 4, 4, 3, 2)]


async def test_output_full_and_release_tote(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)
    for slot in range(4):
        sim.put_slot(slot, [pack(slot * 10 + i, batch=f"B{slot}") for i in range(10)])
    sim.put_slot(4, [pack(99, batch="B4")])
    picks = [command(seq + i, PICK, i, 1, 10) for i in range(4)]
    assert await run(client, *picks) == [(OK, 10)] * 4
    assert (await client.status())["output_full"] == 0b0001
    assert await run(client, command(seq + 4, PICK, 4, 1, 1)) == [(OUTPUT_FULL, 0)]
    assert serials(sim.ledger()["slots"]["4"]) == ["S99"]
    first_tote = sim.ledger()["outputs"]["1"]["tote"]
    assert await run(client, command(seq + 5, RELEASE_TOTE, 0, 1)) == [(OK, 0)]
    assert (await client.status())["output_full"] == 0
    ledger = sim.ledger()
    assert ledger["outputs"]["1"]["packs"] == []
    assert ledger["outputs"]["1"]["tote"] not in (first_tote, 2, 3, 4)
    released = ledger["totes"]
    assert [(t["tote"], t["output"], t["release_seq"]) for t in released] == [
        (first_tote, 1, seq + 5)
    ]
    assert len(released[0]["packs"]) == 40


async def test_jam_after_picks(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)
    sim.put_slot(8, [pack(i) for i in range(10)])
    sim.inject("jam", after_picks=1)
    results = await run(
        client,
        command(seq, PICK, 8, 2, 1),
        command(seq + 1, PICK, 8, 2, 3),
        command(seq + 2, PICK, 8, 2, 1),
    )
    assert results == [(OK, 1), (JAM, 2), (ABORTED, 0)]
    s = await client.status()
    assert (s["machine_state"], s["fault_code"]) == (3, 1)
    ledger = sim.ledger()
    assert serials(ledger["outputs"]["2"]["packs"]) == ["S0", "S1", "S2"]
    assert serials(ledger["jammed"]) == ["S3"]
    assert serials(ledger["slots"]["8"]) == ["S4", "S5", "S6", "S7", "S8", "S9"]
    with pytest.raises(ModbusError) as info:
        await client.write(102, [1])
    assert info.value.code == 4
    sim.clear("jam")
    await client.write(102, [1])
    s = await client.status()
    assert (s["machine_state"], s["fault_code"], s["flags"] & 1) == (0, 0, 1)  # still homed


async def test_dropped_pack(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)
    sim.put_slot(9, [pack(i) for i in range(5)])
    sim.inject("dropped")
    assert await run(client, command(seq, PICK, 9, 1, 3), command(seq + 1, HOME)) == [
        (DROPPED, 2),
        (ABORTED, 0),
    ]
    ledger = sim.ledger()
    assert serials(ledger["dropped"]) == ["S2"]
    assert ledger["dropped"][0]["pick_seq"] == seq
    assert serials(ledger["outputs"]["1"]["packs"]) == ["S0", "S1"]
    assert (await client.status())["fault_code"] == 2
    with pytest.raises(ModbusError):
        await client.write(102, [1])
    sim.clear("dropped")
    await client.write(102, [1])
    assert (await client.status())["machine_state"] == 0


async def test_slot_short_and_slot_empty(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)
    sim.put_slot(30, [pack(i) for i in range(5)])
    sim.put_slot(31, [pack(i, batch="X") for i in range(3)])
    taken = sim.inject("slot_short", slot=30, remove=2)["removed"]
    assert serials(taken) == ["S0", "S1"]
    sim.inject("slot_empty", slot=31)
    assert await run(client, command(seq, PICK, 30, 1, 5), command(seq + 1, PICK, 31, 1, 1)) == [
        (SLOT_EMPTY, 3),
        (SLOT_EMPTY, 0),
    ]
    assert serials(sim.ledger()["removed"]) == ["S0", "S1", "S0", "S1", "S2"]


async def test_unknown_fault_and_params_are_refused(sim: Simulator) -> None:
    with pytest.raises(SimulatorError):
        sim.inject("meteor")
    with pytest.raises(SimulatorError):
        sim.inject("jam", after_pick=1)
    with pytest.raises(SimulatorError):
        sim.inject("slot_short", slot=-1)


async def test_motion_time_follows_the_document(sim: Simulator, client: TcpClient) -> None:
    seq = await homed(client)  # HOME: 5 s
    sim.put_slot(5203, [pack(1), pack(2)])
    await run(client, command(seq, PICK, 5203, 2, 2))
    # (0,0) -> slot (0.3, 0.08): 0.4 + 0.08; grip 2 x 0.8; -> output 2 (0, 0.4): 0.4 + 0.32;
    # drop 0.3.  Total 3.1 s.
    assert sim.ledger()["robot"]["machine_seconds"] == pytest.approx(8.1)


@pytest.fixture
async def timed(short_dir: Path) -> AsyncIterator[tuple[Simulator, TcpClient]]:
    """Motions at 20x the standard machine: HOME 0.25 s."""
    sim = Simulator(options(short_dir, instant=False, speed=20.0))
    await sim.start()
    client = await TcpClient().connect(sim.tcp_port or 0)
    yield sim, client
    await client.close()
    await sim.stop()


async def test_speed_divides_motion_time(timed: tuple[Simulator, TcpClient]) -> None:
    sim, client = timed
    began = time.monotonic()
    await homed(client)
    assert time.monotonic() - began >= 0.24
    robot = sim.ledger()["robot"]
    assert robot["busy_seconds"] == pytest.approx(0.25, abs=0.05)
    assert robot["elapsed_seconds"] >= robot["busy_seconds"]


async def test_estop_cuts_the_motion_short(timed: tuple[Simulator, TcpClient]) -> None:
    sim, client = timed
    seq = await homed(client)
    sim.put_slot(5203, [pack(1), pack(2)])
    await client.queue(command(seq, PICK, 5203, 2, 2), command(seq + 1, SCAN_SLOT, 1))
    await asyncio.sleep(0.05)
    assert (await client.status())["executing_seq"] == seq
    sim.inject("estop")
    s = await client.wait_completed(seq + 1)
    entries = await client.completions(s["completion_count"] - 1, s["completion_count"])
    assert [(e["result"], e["detail"]) for e in entries] == [(ESTOP, 0), (ABORTED, 0)]
    assert (s["machine_state"], s["fault_code"], s["flags"] & 9) == (4, 3, 8)
    assert serials(sim.ledger()["slots"]["5203"]) == ["S1", "S2"]  # nothing moved
    sim.clear("estop")
    await client.write(102, [1])
    assert (await client.status())["machine_state"] == 6  # HOME needed


async def test_door_open_lets_the_motion_finish(timed: tuple[Simulator, TcpClient]) -> None:
    sim, client = timed
    seq = await homed(client)
    sim.put_slot(7, [pack(1)])
    await client.queue(command(seq, PICK, 7, 1, 1), command(seq + 1, SCAN_SLOT, 1))
    await asyncio.sleep(0.03)
    sim.inject("door_open")
    s = await client.wait_completed(seq + 1)
    entries = await client.completions(s["completion_count"] - 1, s["completion_count"])
    assert [(e["result"], e["detail"]) for e in entries] == [(OK, 1), (ABORTED, 0)]
    assert (s["machine_state"], s["fault_code"], s["door"]) == (3, 4, 1)
    with pytest.raises(ModbusError):
        await client.write(102, [1])
    sim.clear("door_open")
    await client.write(102, [1])
    s = await client.status()
    assert (s["machine_state"], s["door"], s["flags"] & 1) == (0, 0, 1)


async def test_link_down_refuses_tcp_while_robot_keeps_working(
    timed: tuple[Simulator, TcpClient],
) -> None:
    sim, client = timed
    port = sim.tcp_port or 0
    await client.queue(command(1, HOME))
    sim.inject("link_down", seconds=0.4)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await client.read(0, 1)
    with pytest.raises(OSError):
        await TcpClient().connect(port)
    await asyncio.sleep(0.45)
    again = await TcpClient().connect(port)
    try:
        s = await again.status()
        assert s["last_completed_seq"] == 1  # HOME went on while the link was down
        assert s["flags"] & 1
    finally:
        await again.close()


async def test_delay_holds_responses(sim: Simulator, client: TcpClient) -> None:
    sim.inject("delay", ms=150)
    began = time.monotonic()
    await client.read(0, 1)
    assert time.monotonic() - began >= 0.14
    sim.clear("delay")
    began = time.monotonic()
    await client.read(0, 1)
    assert time.monotonic() - began < 0.1


async def test_corrupt_frames_on_tcp(sim: Simulator) -> None:
    port = sim.tcp_port or 0
    sim.inject("corrupt_frame", count=2)  # alternate: transaction id, then MBAP length
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack(">HHHB", 7, 0, 6, 1) + read_pdu(0, 1))
        tid, _, length, _ = struct.unpack(">HHHB", await reader.readexactly(7))
        assert tid != 7 and length == 5
        await reader.readexactly(4)
        writer.write(struct.pack(">HHHB", 8, 0, 6, 1) + read_pdu(0, 1))
        tid, _, length, _ = struct.unpack(">HHHB", await reader.readexactly(7))
        assert tid == 8 and length == 7  # claims two bytes that never come
        await reader.readexactly(4)
        writer.write(struct.pack(">HHHB", 9, 0, 6, 1) + read_pdu(0, 1))
        tid, _, length, _ = struct.unpack(">HHHB", await reader.readexactly(7))
        assert (tid, length) == (9, 5)  # count used up: back to normal
    finally:
        writer.close()


async def test_clearing_link_down_listens_again_at_once(sim: Simulator) -> None:
    port = sim.tcp_port or 0
    sim.inject("link_down", seconds=30)
    with pytest.raises(OSError):
        await TcpClient().connect(port)
    sim.clear("link_down")
    await asyncio.sleep(0.05)
    client = await TcpClient().connect(port)
    try:
        assert (await client.status())["protocol_version"] == 1
    finally:
        await client.close()
