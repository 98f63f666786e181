"""The register map over Modbus TCP, checked against docs/robot-protocol.md."""

from __future__ import annotations

import asyncio
import struct

import pytest

from dispenser.testing.modbus_client import (
    ModbusError,
    TcpClient,
    command,
    pack,
    read_pdu,
    write_pdu,
)
from dispenser.testing.simulator import homed
from firmware_sim import Simulator

HOME, STORE, PICK, RELEASE_TOTE, SCAN_SLOT = 1, 2, 3, 4, 5


async def test_status_block_promises(client: TcpClient) -> None:
    s = await client.status()
    assert s["protocol_version"] == 1
    assert s["firmware_version"] == 256
    assert s["machine_state"] == 6  # NOT_HOMED at power-up
    assert s["fault_code"] == 0
    assert s["queue_depth"] == 0
    assert s["queue_capacity"] == 32
    assert s["output_count"] == 4
    assert (s["sides"], s["levels"], s["columns"]) == (2, 25, 200)
    assert (s["slot_capacity"], s["tote_capacity"]) == (10, 40)
    assert s["last_accepted_seq"] == s["last_completed_seq"] == s["completion_count"] == 0
    assert await client.read(26, 6) == [0] * 6
    assert await client.read(1000, 120) == [0] * 120  # the mailbox reads as zeros


async def test_heartbeat_counts_every_100_ms(client: TcpClient) -> None:
    first = (await client.read(4, 1))[0]
    await asyncio.sleep(0.35)
    second = (await client.read(4, 1))[0]
    assert 2 <= (second - first) % 65536 <= 5


async def test_transaction_id_echoed_and_foreign_unit_gets_exception_04(
    client: TcpClient,
) -> None:
    for _ in range(3):
        tid, unit, body = await client.raw(read_pdu(0, 1))
        assert tid == client.tid and unit == 1 and body[0] == 3
    _, unit, body = await client.raw(read_pdu(0, 1), unit=7)
    assert unit == 7
    assert body == bytes([0x83, 4])
    _, _, body = await client.raw(read_pdu(0, 1), unit=0)
    assert body == bytes([0x83, 4])


@pytest.mark.parametrize(
    ("pdu", "exception"),
    [
        (struct.pack(">BHH", 4, 0, 1), 1),  # FC04 is not served
        (struct.pack(">BHH", 1, 0, 1), 1),
        (read_pdu(30, 3), 2),  # runs past the status block
        (read_pdu(32, 1), 2),
        (read_pdu(99, 2), 2),
        (read_pdu(2500, 13), 2),
        (read_pdu(0, 126), 3),  # more than 125 registers
        (read_pdu(0, 0), 3),
        (write_pdu(0, [1]), 2),  # status is read-only
        (write_pdu(103, [0]), 2),
        (write_pdu(2000, [1, 2]), 2),
        (write_pdu(200, [1]), 2),
        (write_pdu(101, [50]), 3),  # watchdog timeout 1..99 is not defined
        (write_pdu(101, [60001]), 3),
        (write_pdu(102, [3]), 3),
        (write_pdu(1000, [0] * 7), 3),  # not a multiple of 8
        (write_pdu(1000, [1]), 3),  # FC06 into the mailbox
        (write_pdu(1008, command(1, HOME)), 3),  # start address other than 1000
        (write_pdu(1000, [v for i in range(16) for v in command(i + 1, HOME)][:123]), 3),
        (write_pdu(1000, command(0, HOME)), 3),  # seq must be >= 1
    ],
)
async def test_exceptions(client: TcpClient, pdu: bytes, exception: int) -> None:
    with pytest.raises(ModbusError) as info:
        await client.request(pdu)
    assert info.value.code == exception
    assert (await client.status())["last_accepted_seq"] == 0


async def test_watchdog_timeout_register_is_copied_into_status(client: TcpClient) -> None:
    await client.write(101, [2500])
    assert await client.read(100, 4) == [0, 2500, 0, 0]
    assert (await client.status())["watchdog_timeout_ms"] == 2500
    assert (await client.status())["flags"] & 4
    await client.write(100, [77])
    assert (await client.read(100, 1)) == [77]
    await client.write(101, [0])
    assert not (await client.status())["flags"] & 4


async def test_sequence_rules_take_a_write_whole_or_not_at_all(client: TcpClient) -> None:
    await client.queue(command(41, HOME))
    assert (await client.status())["last_accepted_seq"] == 41
    for bad in ([command(41, SCAN_SLOT, 1)], [command(43, SCAN_SLOT), command(42, SCAN_SLOT)],
                [command(45, SCAN_SLOT), command(45, SCAN_SLOT)]):  # fmt: skip
        with pytest.raises(ModbusError) as info:
            await client.queue(*bad)
        assert info.value.code == 3
        assert (await client.status())["last_accepted_seq"] == 41
    await client.queue(command(50, SCAN_SLOT), command(51, SCAN_SLOT), command(70, SCAN_SLOT))
    s = await client.wait_completed(70)
    assert s["last_accepted_seq"] == 70
    assert s["completion_count"] == 4
    assert [e["seq"] for e in await client.completions(1, 4)] == [41, 50, 51, 70]


async def test_worked_example_of_the_document(sim: Simulator, client: TcpClient) -> None:
    """§5: 2 packs from slot 5203 to output 2, then release the tote (seq 42, 43)."""
    sim.put_slot(5203, [pack(1), pack(2)])
    await client.queue(command(41, HOME))
    await client.wait_completed(41)
    c = (await client.status())["completion_count"]
    await client.write(
        1000,
        [0x0000, 0x002A, 0x0003, 0x0000, 0x1453, 0x0002, 0x0002, 0x0000,
         0x0000, 0x002B, 0x0004, 0x0000, 0x0000, 0x0002, 0x0000, 0x0000],
    )  # fmt: skip
    assert (await client.read(12, 2)) == [0, 43]
    s = await client.wait_completed(43)
    assert s["completion_count"] == c + 2
    assert await client.read(2000 + 8 * (c % 64), 16) == [
        0x0000, 0x002A, 0x0003, 0x0000, 0x0002, 0x0000, 0x1453, 0x0002,
        0x0000, 0x002B, 0x0004, 0x0000, 0x0000, 0x0000, 0x0000, 0x0002,
    ]  # fmt: skip
    ledger = sim.ledger()
    assert ledger["totes"][0]["output"] == 2
    assert [p["serial"] for p in ledger["totes"][0]["packs"]] == ["S1", "S2"]
    assert ledger["totes"][0]["release_seq"] == 43


async def test_completion_ring_wraps_after_64(client: TcpClient) -> None:
    seq = await homed(client)
    for batch in range(5):
        await client.queue(*[command(seq + batch * 15 + i, SCAN_SLOT, i) for i in range(15)])
        await client.wait_completed(seq + batch * 15 + 14)
    s = await client.status()
    assert s["completion_count"] == 76
    assert s["last_completed_seq"] == 76
    first_kept = await client.entry(13)
    assert first_kept["seq"] == 13 and first_kept["slot"] == 11
    assert (await client.entry(76))["seq"] == 76
    ring = [
        v
        for start in range(2000, 2512, 120)
        for v in await client.read(start, min(120, 2512 - start))
    ]
    assert len(ring) == 512


async def test_queue_full_is_exception_06_and_nothing_queued(short_dir: object) -> None:
    from pathlib import Path

    from dispenser.testing.simulator import options

    sim = Simulator(options(Path(str(short_dir)), instant=False, speed=5.0))  # HOME = 1 s
    await sim.start()
    c = await TcpClient().connect(sim.tcp_port or 0)
    try:
        await c.queue(*[command(i, HOME) for i in range(1, 16)])
        await c.queue(*[command(i, HOME) for i in range(16, 31)])
        with pytest.raises(ModbusError) as info:
            await c.queue(*[command(i, HOME) for i in range(31, 34)])
        assert info.value.code == 6
        s = await c.status()
        assert s["queue_depth"] == 30 and s["last_accepted_seq"] == 30
        assert s["machine_state"] == 2  # HOMING
        assert s["executing_seq"] == 1
        await c.queue(command(31, HOME), command(32, HOME))
        with pytest.raises(ModbusError) as info:
            await c.queue(command(33, HOME))
        assert info.value.code == 6
        # ABORT_QUEUE: everything but the motion in progress completes ABORTED, after it
        # (completions keep acceptance order).
        await c.write(102, [2])
        await asyncio.sleep(0.05)
        s = await c.status()
        assert s["queue_depth"] == 32 and s["completion_count"] == 0  # seq 1 still moving
        s = await c.wait_completed(32)
        assert s["queue_depth"] == 0 and s["completion_count"] == 32
        entries = await c.completions(1, 32)
        assert [e["result"] for e in entries] == [0] + [7] * 31
        assert [e["seq"] for e in entries] == list(range(1, 33))
    finally:
        await c.close()
        await sim.stop()


async def test_watchdog_expiry_is_controller_lost(client: TcpClient) -> None:
    seq = await homed(client)
    await client.write(101, [100])
    for _ in range(5):
        await asyncio.sleep(0.04)
        await client.write(100, [1])
    assert (await client.status())["machine_state"] == 0
    await asyncio.sleep(0.3)
    s = await client.status()
    assert (s["machine_state"], s["fault_code"]) == (5, 5)
    with pytest.raises(ModbusError) as info:
        await client.queue(command(seq, SCAN_SLOT))
    assert info.value.code == 6
    await client.write(101, [0])
    await client.write(102, [1])  # RESET
    s = await client.status()
    assert (s["machine_state"], s["fault_code"]) == (0, 0)
    await client.queue(command(seq, SCAN_SLOT))
    assert (await client.wait_completed(seq))["last_completed_seq"] == seq


async def test_watchdog_expiries_are_counted_after_the_reset(
    sim: Simulator, client: TcpClient
) -> None:
    await homed(client)
    assert sim.status()["robot"]["watchdog_expiries"] == 0
    await client.write(101, [100])
    await asyncio.sleep(0.3)
    await client.write(101, [0])
    await client.write(102, [1])  # RESET: the state no longer shows it, the count does
    assert sim.status()["robot"]["state"] != "CONTROLLER_LOST"
    assert sim.status()["robot"]["watchdog_expiries"] == 1
    assert sim.ledger()["robot"]["watchdog_expiries"] == 1


async def test_watchdog_aborts_queue_after_motion_in_progress(short_dir: object) -> None:
    from pathlib import Path

    from dispenser.testing.simulator import options

    sim = Simulator(options(Path(str(short_dir)), instant=False, speed=25.0))  # HOME = 0.2 s
    await sim.start()
    c = await TcpClient().connect(sim.tcp_port or 0)
    try:
        await c.write(101, [100])
        await c.queue(command(1, HOME), command(2, HOME), command(3, HOME))
        await asyncio.sleep(0.5)
        s = await c.status()
        assert s["machine_state"] == 5
        entries = await c.completions(1, 3)
        assert [(e["seq"], e["result"]) for e in entries] == [(1, 0), (2, 7), (3, 7)]
    finally:
        await c.close()
        await sim.stop()


async def test_reset_refused_while_cause_persists_then_home_needed(
    sim: Simulator, client: TcpClient
) -> None:
    seq = await homed(client)
    sim.inject("estop")
    s = await client.status()
    assert (s["machine_state"], s["fault_code"]) == (4, 3)
    assert s["flags"] & 8 and not s["flags"] & 1
    with pytest.raises(ModbusError) as info:
        await client.write(102, [1])
    assert info.value.code == 4
    assert (await client.status())["machine_state"] == 4
    # Commands wait in ESTOP until the RESET.
    await client.queue(command(seq, SCAN_SLOT, 3))
    await asyncio.sleep(0.02)
    assert (await client.status())["queue_depth"] == 1
    sim.clear("estop")
    await client.write(102, [1])
    s = await client.wait_completed(seq)
    assert (s["machine_state"], s["fault_code"], s["flags"] & 1) == (6, 0, 0)
    entry = await client.entry(s["completion_count"])
    assert (entry["result"], entry["detail"]) == (6, 8)  # INVALID: not homed
    seq = await homed(client, seq + 1)
    assert (await client.status())["machine_state"] == 0


async def test_reset_with_no_fault_is_harmless(client: TcpClient) -> None:
    await client.write(102, [1])
    assert (await client.status())["machine_state"] == 6


async def test_scanner_shows_first_pack_at_input(sim: Simulator, client: TcpClient) -> None:
    assert await client.read(200, 2) == [0, 0]
    sim.put_input([pack(1, batch="LOT42", expiry="2027-05-31", serial="SN123"), pack(2)])
    regs = await client.read(200, 64)
    assert regs[0] == 1
    data = b"".join(struct.pack(">H", r) for r in regs[2:62])[: regs[1]]
    assert data == b"010415012345678217270531" + b"10LOT42\x1d21SN123"
    s = await client.status()
    assert s["input_count"] == 2 and s["flags"] & 2


async def test_instant_mode_runs_a_write_whole_after_answering_it(
    sim: Simulator, client: TcpClient
) -> None:
    # docs/simulator.md --instant: commands execute after the write is answered, one after
    # another; no request is answered in the middle of a write's commands.
    seq = await homed(client)
    assert sim.tcp is not None
    counters = sim.tcp.counters
    seen: list[int] = []
    complete = sim.robot._complete

    def record(*args: object) -> None:
        seen.append(counters.requests)
        complete(*args)  # type: ignore[arg-type]

    sim.robot._complete = record  # type: ignore[method-assign]
    before = counters.requests
    await client.queue(*[command(seq + i, SCAN_SLOT, i) for i in range(15)])
    s = await client.status()
    assert s["completion_count"] == 16 and s["last_completed_seq"] == seq + 14
    assert s["queue_depth"] == 0 and s["machine_state"] == 0
    # All 15 completed after the write was counted and before the status read was.
    assert seen == [before + 1] * 15
    results = [e["result"] for e in await client.completions(2, 16)]
    assert results == [0] * 15


async def test_instant_mode_answers_requests_between_queued_writes(
    sim: Simulator, client: TcpClient
) -> None:
    # Two writes and a status read sent together: all three are answered before the robot
    # runs any of the 30 commands (the executor hands the loop back after each write).
    seq = await homed(client)
    assert client.writer is not None
    pdus = [
        write_pdu(1000, [v for i in range(15) for v in command(seq + b * 15 + i, SCAN_SLOT, i)])
        for b in range(2)
    ] + [read_pdu(0, 32)]
    replies = await client.pipelined(pdus)
    status = struct.unpack(">32H", replies[2][2:])
    assert status[5] == 30  # queue_depth: nothing executed yet
    s = await client.wait_completed(seq + 29)
    assert s["completion_count"] == 31
