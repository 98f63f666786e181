"""Transports: Modbus TCP server, Modbus RTU on a pseudo-terminal, and the pty port itself.

Link faults (delay, corrupted frames, link down) are applied here, between the register
map and the wire, so the robot model never knows about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

from firmware_sim.modbus import (
    MBAP,
    RegisterBank,
    exception_pdu,
    handle_pdu,
    rtu_check,
    rtu_frame,
    rtu_request_length,
)

# A pty hides inter-character timing, so an RTU frame of unknown length ends after this
# much silence (3.5 characters at 115200 baud would be 0.3 ms; a pty needs slack).
RTU_GAP = 0.01


@dataclass
class LinkFaults:
    """Conditions injected on the Modbus links; shared by TCP and RTU."""

    down_until: float = 0.0
    delay: float = 0.0
    corrupt: int = 0
    corrupt_mode: str = "alternate"
    corrupted: int = 0

    def down(self) -> bool:
        return self.down_until > 0.0 and time.monotonic() < self.down_until

    def take_corruption(self) -> str | None:
        """Consume one corrupted response; returns "tid" or "length" (TCP's two kinds)."""
        if self.corrupt <= 0:
            return None
        self.corrupt -= 1
        self.corrupted += 1
        if self.corrupt_mode != "alternate":
            return self.corrupt_mode
        return "tid" if self.corrupted % 2 else "length"


@dataclass
class LinkCounters:
    requests: int = 0
    exceptions: int = 0
    ignored: int = 0


def _send_later(faults: LinkFaults, send: Callable[[bytes], object], frame: bytes) -> None:
    if faults.delay > 0:
        asyncio.get_running_loop().call_later(faults.delay, send, frame)
    else:
        send(frame)


# --- Modbus TCP --------------------------------------------------------------------------


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: TcpServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.server.faults.down():
            transport.abort()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        server = self.server
        while len(buffer) >= 8:
            tid, protocol, length, unit = MBAP.unpack_from(buffer)
            if protocol != 0 or not 2 <= length <= 254:
                # Not Modbus: nothing sensible can follow on this stream.
                server.counters.ignored += 1
                if self.transport is not None:
                    self.transport.abort()
                return
            end = 6 + length
            if len(buffer) < end:
                return
            pdu = bytes(buffer[7:end])
            del buffer[:end]
            server.counters.requests += 1
            if unit != server.device_id:
                response = exception_pdu(pdu[0], 4)
            else:
                response = handle_pdu(server.bank, pdu)
            if response[0] & 0x80:
                server.counters.exceptions += 1
            header_len = len(response) + 1
            corruption = server.faults.take_corruption()
            if corruption == "tid":
                tid ^= 0x5A5A
            elif corruption == "length":
                header_len += 2
            frame = MBAP.pack(tid, 0, header_len, unit) + response
            _send_later(server.faults, self._write, frame)


class TcpServer:
    """Modbus TCP server; ``port`` 0 picks a free port (see :attr:`port` once started)."""

    def __init__(
        self, host: str, port: int, bank: RegisterBank, device_id: int, faults: LinkFaults
    ) -> None:
        self.host = host
        self.port = port
        self.bank = bank
        self.device_id = device_id
        self.faults = faults
        self.counters = LinkCounters()
        self.connections: set[_TcpConnection] = set()
        self._server: asyncio.Server | None = None
        self._reopen: asyncio.Handle | None = None
        self._relisten_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _TcpConnection(self), self.host, self.port, reuse_address=True
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    def _drop_connections(self) -> None:
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self.connections.clear()

    def link_down(self, seconds: float) -> None:
        """Close every connection and stop listening for ``seconds``; then listen again."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_connections()
        if self._reopen is not None:
            self._reopen.cancel()
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(seconds, self._schedule_relisten)

    def link_up(self) -> None:
        """End a link_down early: listen again now."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._server is None:
            self._reopen = asyncio.get_running_loop().call_soon(self._schedule_relisten)

    def _schedule_relisten(self) -> None:
        self._reopen = None
        self._relisten_task = asyncio.get_running_loop().create_task(self._relisten())

    async def _relisten(self) -> None:
        if self._server is None:
            try:
                await self.start()
            except OSError as exc:
                # Someone took the port meanwhile: retry rather than stay down for good.
                print(
                    f"dispenser-sim: cannot listen again on {self.host}:{self.port}: {exc}",
                    file=sys.stderr,
                )
                self._reopen = asyncio.get_running_loop().call_later(0.5, self._schedule_relisten)

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._relisten_task is not None:
            self._relisten_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relisten_task
            self._relisten_task = None
        if self._server is not None:
            self._server.close()
            self._drop_connections()
            await self._server.wait_closed()
            self._server = None
        self._drop_connections()


# --- pseudo-terminal port ----------------------------------------------------------------


class PtyPort:
    """One pty pair: we hold the master; clients open the slave through a symlink.

    The slave stays open here too, so a client closing it does not hang up the master.
    """

    def __init__(self, link: str, on_data: Callable[[bytes], None]) -> None:
        self.link = link
        self.on_data = on_data
        self.master = -1
        self.slave = -1
        self.device = ""

    def open(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(self.link):
                os.unlink(self.link)
        os.symlink(self.device, self.link)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data:
            self.on_data(data)

    def write(self, data: bytes) -> None:
        if self.master < 0:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, data)

    def close(self) -> None:
        if self.master >= 0:
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = -1
        with contextlib.suppress(OSError):
            if os.path.islink(self.link) and os.readlink(self.link) == self.device:
                os.unlink(self.link)


# --- Modbus RTU --------------------------------------------------------------------------


class RtuServer:
    """Modbus RTU slave on a pty: silent on a foreign address or a bad CRC."""

    def __init__(self, link: str, bank: RegisterBank, device_id: int, faults: LinkFaults) -> None:
        self.bank = bank
        self.device_id = device_id
        self.faults = faults
        self.counters = LinkCounters()
        self.port = PtyPort(link, self._on_data)
        self.buffer = bytearray()
        self._gap: asyncio.TimerHandle | None = None

    @property
    def device(self) -> str:
        return self.port.device

    async def start(self) -> None:
        self.port.open()

    async def stop(self) -> None:
        if self._gap is not None:
            self._gap.cancel()
        self.port.close()

    def _on_data(self, data: bytes) -> None:
        if self.faults.down():
            self.buffer.clear()
            return
        self.buffer += data
        if self._gap is not None:
            self._gap.cancel()
            self._gap = None
        buffer = self.buffer
        while buffer:
            length = rtu_request_length(buffer)
            if not length or len(buffer) < length:
                break
            frame = bytes(buffer[:length])
            if not rtu_check(frame):
                # Lost framing: drop what we have, resynchronise on the next silence.
                self.counters.ignored += 1
                buffer.clear()
                break
            del buffer[:length]
            self._handle(frame)
        if buffer:
            self._gap = asyncio.get_running_loop().call_later(RTU_GAP, self._silence)

    def _silence(self) -> None:
        """End of frame by silence: a frame of unknown function code, or garbage."""
        self._gap = None
        frame = bytes(self.buffer)
        self.buffer.clear()
        if rtu_check(frame):
            self._handle(frame)
        else:
            self.counters.ignored += 1

    def _handle(self, frame: bytes) -> None:
        address = frame[0]
        if address not in (self.device_id, 0):
            self.counters.ignored += 1
            return
        self.counters.requests += 1
        response = handle_pdu(self.bank, frame[1:-2])
        if address == 0:
            return  # broadcast: executed, never answered
        if response[0] & 0x80:
            self.counters.exceptions += 1
        out = rtu_frame(address, response)
        if self.faults.take_corruption() is not None:
            out = out[:-1] + bytes((out[-1] ^ 0xFF,))
        _send_later(self.faults, self.port.write, out)
