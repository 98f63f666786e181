"""A small Modbus client for the tests, written from docs/robot-protocol.md alone.

Frames are packed by hand with struct: nothing is shared with the simulator or the drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import struct
import termios
import time
import tty
from typing import Any

STATUS_FIELDS = [
    "protocol_version", "firmware_version", "machine_state", "fault_code", "heartbeat",
    "queue_depth", "queue_capacity", "door", "flags", "output_count", "output_full",
    "input_count",
]  # fmt: skip


class ModbusError(Exception):
    def __init__(self, function: int, code: int) -> None:
        super().__init__(f"function {function:#x} answered exception {code}")
        self.function = function
        self.code = code


def u32(hi: int, lo: int) -> int:
    return (hi << 16) | lo


def decode_status(regs: list[int]) -> dict[str, int]:
    """Name the 32 registers of the status block as §2.1 does."""
    out = dict(zip(STATUS_FIELDS, regs[:12], strict=True))
    out["last_accepted_seq"] = u32(regs[12], regs[13])
    out["last_completed_seq"] = u32(regs[14], regs[15])
    out["completion_count"] = u32(regs[16], regs[17])
    out["executing_seq"] = u32(regs[18], regs[19])
    for i, name in enumerate(
        ["watchdog_timeout_ms", "sides", "levels", "columns", "slot_capacity", "tote_capacity"],
        20,
    ):
        out[name] = regs[i]
    return out


def command(seq: int, opcode: int, slot: int = 0, output: int = 0, count: int = 0) -> list[int]:
    """One 8-register mailbox command (§2.4)."""
    return [seq >> 16, seq & 0xFFFF, opcode, slot >> 16, slot & 0xFFFF, output, count, 0]


def decode_entry(regs: list[int]) -> dict[str, int]:
    """One 8-register completion ring entry (§2.5)."""
    return {
        "seq": u32(regs[0], regs[1]),
        "opcode": regs[2],
        "result": regs[3],
        "detail": regs[4],
        "slot": u32(regs[5], regs[6]),
        "output": regs[7],
    }


def read_pdu(address: int, count: int) -> bytes:
    return struct.pack(">BHH", 3, address, count)


def write_pdu(address: int, values: list[int]) -> bytes:
    if len(values) == 1:
        return struct.pack(">BHH", 6, address, values[0])
    return struct.pack(f">BHHB{len(values)}H", 16, address, len(values), 2 * len(values), *values)


def parse_response(request: bytes, response: bytes) -> list[int]:
    if response[0] == request[0] | 0x80:
        raise ModbusError(request[0], response[1])
    assert response[0] == request[0], response
    if request[0] == 3:
        n = response[1] // 2
        assert len(response) == 2 + 2 * n
        return list(struct.unpack(f">{n}H", response[2:]))
    return []


class TcpClient:
    """Modbus TCP: MBAP header by hand, one request at a time, checks the echoed id."""

    def __init__(self, unit: int = 1) -> None:
        self.unit = unit
        self.tid = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int, host: str = "127.0.0.1") -> TcpClient:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()

    async def raw(self, pdu: bytes, unit: int | None = None) -> tuple[int, int, bytes]:
        """Send one PDU; return (transaction id, unit id, response PDU) as received."""
        assert self.reader is not None and self.writer is not None
        self.tid = (self.tid + 1) & 0xFFFF
        unit = self.unit if unit is None else unit
        self.writer.write(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu)
        header = await asyncio.wait_for(self.reader.readexactly(7), 2)
        tid, protocol, length, unit_back = struct.unpack(">HHHB", header)
        assert protocol == 0
        body = await asyncio.wait_for(self.reader.readexactly(length - 1), 2)
        return tid, unit_back, body

    async def pipelined(self, pdus: list[bytes]) -> list[bytes]:
        """Send several PDUs in one segment, then read their responses (in order)."""
        assert self.reader is not None and self.writer is not None
        frames, tids = b"", []
        for pdu in pdus:
            self.tid = (self.tid + 1) & 0xFFFF
            tids.append(self.tid)
            frames += struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, self.unit) + pdu
        self.writer.write(frames)
        bodies = []
        for tid in tids:
            header = await asyncio.wait_for(self.reader.readexactly(7), 2)
            tid_back, _protocol, length, _unit = struct.unpack(">HHHB", header)
            assert tid_back == tid
            bodies.append(await asyncio.wait_for(self.reader.readexactly(length - 1), 2))
        return bodies

    async def request(self, pdu: bytes, unit: int | None = None) -> list[int]:
        tid, unit_back, body = await self.raw(pdu, unit)
        assert tid == self.tid, "transaction id not echoed"
        assert unit_back == (self.unit if unit is None else unit)
        return parse_response(pdu, body)

    async def read(self, address: int, count: int) -> list[int]:
        return await self.request(read_pdu(address, count))

    async def write(self, address: int, values: list[int]) -> None:
        await self.request(write_pdu(address, values))

    async def status(self) -> dict[str, int]:
        return decode_status(await self.read(0, 32))

    async def queue(self, *commands: list[int]) -> None:
        await self.write(1000, [v for c in commands for v in c])

    async def entry(self, c: int) -> dict[str, int]:
        """Completion number c (1-based)."""
        e = (c - 1) % 64
        return decode_entry(await self.read(2000 + 8 * e, 8))

    async def wait_completed(self, seq: int, timeout: float = 5.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status()
            if status["last_completed_seq"] >= seq:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"seq {seq} not completed: {status}")
            await asyncio.sleep(0.005)

    async def completions(self, first: int, last: int) -> list[dict[str, int]]:
        return [await self.entry(c) for c in range(first, last + 1)]


# --- RTU ---------------------------------------------------------------------------------


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS written out bit by bit (independent of the simulator's table)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu(address: int, pdu: bytes) -> bytes:
    body = bytes([address]) + pdu
    return body + struct.pack("<H", crc16(body))


class RtuClient:
    """Blocking RTU client on a serial device (the simulator's pty link)."""

    def __init__(self, path: str, address: int = 1) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        termios.tcflush(self.fd, termios.TCIOFLUSH)
        self.address = address

    def close(self) -> None:
        os.close(self.fd)

    def exchange(self, frame: bytes, timeout: float = 0.5) -> bytes:
        """Write a frame; collect the answer until 50 ms of silence (b"" if none)."""
        os.write(self.fd, frame)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = 0.05 if out else deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(wait, 0))
            if not ready:
                if out:
                    break
                continue
            out += os.read(self.fd, 1024)
        return out

    def request(self, pdu: bytes, address: int | None = None) -> list[int]:
        address = self.address if address is None else address
        answer = self.exchange(rtu(address, pdu))
        assert answer, "no answer"
        assert answer[0] == address
        assert crc16(answer[:-2]) == struct.unpack("<H", answer[-2:])[0], "bad CRC"
        return parse_response(pdu, answer[1:-2])


def pack(n: int, gtin: str = "04150123456782", batch: str = "B1", **kw: Any) -> dict[str, str]:
    """A test pack with serial S{n}."""
    return {"gtin": gtin, "batch": batch, "expiry": kw.get("expiry", "2027-05-31"),
            "serial": kw.get("serial", f"S{n}")}  # fmt: skip
