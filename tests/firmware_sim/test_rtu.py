"""Modbus RTU on the simulator's pty: the same map, CRC checked, silence where due."""

from __future__ import annotations

import asyncio
import struct

import pytest

from dispenser.testing.modbus_client import (
    ModbusError,
    RtuClient,
    command,
    crc16,
    decode_status,
    read_pdu,
    rtu,
    write_pdu,
)
from firmware_sim import Simulator


async def in_thread(sim: Simulator, job):  # type: ignore[no-untyped-def]
    """Blocking serial I/O runs in a thread so the in-process simulator keeps serving."""
    assert sim.rtu_link is not None
    return await asyncio.to_thread(job, RtuClient(sim.rtu_link))


async def test_status_and_a_queued_command_over_rtu(sim: Simulator) -> None:
    def job(c: RtuClient) -> dict[str, int]:
        try:
            c.request(write_pdu(1000, command(5, 1)))
            for _ in range(100):
                s = decode_status(c.request(read_pdu(0, 32)))
                if s["last_completed_seq"] == 5:
                    return s
            raise AssertionError("HOME did not complete")
        finally:
            c.close()

    s = await in_thread(sim, job)
    assert (s["protocol_version"], s["queue_capacity"], s["machine_state"]) == (1, 32, 0)
    assert s["last_accepted_seq"] == 5 and s["completion_count"] == 1


async def test_exceptions_over_rtu(sim: Simulator) -> None:
    def job(c: RtuClient) -> list[int]:
        codes = []
        try:
            for pdu in (read_pdu(40, 1), write_pdu(1000, [1, 2]), struct.pack(">BHH", 4, 0, 1)):
                with pytest.raises(ModbusError) as info:
                    c.request(pdu)
                codes.append(info.value.code)
            # A function code of unknown request length is framed by silence.
            answer = c.exchange(rtu(1, bytes([0x2B, 0x0E, 0x01, 0x00])))
            codes.append(answer[2])
        finally:
            c.close()
        return codes

    assert await in_thread(sim, job) == [2, 3, 1, 1]


async def test_silent_on_foreign_address_and_bad_crc(sim: Simulator) -> None:
    def job(c: RtuClient) -> tuple[bytes, bytes, list[int]]:
        try:
            foreign = c.exchange(rtu(2, read_pdu(0, 1)), timeout=0.2)
            frame = bytearray(rtu(1, read_pdu(0, 1)))
            frame[-1] ^= 0x55
            bad = c.exchange(bytes(frame), timeout=0.2)
            after = c.request(read_pdu(0, 1))  # and it still answers a good frame
        finally:
            c.close()
        return foreign, bad, after

    foreign, bad, after = await in_thread(sim, job)
    assert foreign == b"" and bad == b"" and after == [1]
    assert sim.rtu is not None and sim.rtu.counters.ignored >= 2


async def test_broadcast_write_is_executed_without_answer(sim: Simulator) -> None:
    def job(c: RtuClient) -> bytes:
        try:
            return c.exchange(rtu(0, write_pdu(101, [3000])), timeout=0.2)
        finally:
            c.close()

    assert await in_thread(sim, job) == b""
    assert sim.robot.watchdog_timeout_ms == 3000


async def test_corrupt_frame_and_link_down_on_rtu(sim: Simulator) -> None:
    sim.inject("corrupt_frame", count=1)

    def corrupted(c: RtuClient) -> bytes:
        try:
            return c.exchange(rtu(1, read_pdu(0, 1)))
        finally:
            c.close()

    answer = await in_thread(sim, corrupted)
    assert len(answer) == 7 and answer[:3] == bytes([1, 3, 2])
    assert crc16(answer[:-2]) != struct.unpack("<H", answer[-2:])[0]
    sim.inject("link_down", seconds=0.3)
    assert await in_thread(sim, corrupted) == b""
    await asyncio.sleep(0.3)

    def normal(c: RtuClient) -> list[int]:
        try:
            return c.request(read_pdu(0, 1))
        finally:
            c.close()

    assert await in_thread(sim, normal) == [1]
