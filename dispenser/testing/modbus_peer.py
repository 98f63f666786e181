"""A small Modbus TCP server written from the specification, for driver tests.

It shares no code with pymodbus or the simulator: it parses MBAP frames by hand and lets a
test decide each answer, so a test can produce replies a correct robot never sends (short
replies, silence, a closed connection).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

# handler(function_code, pdu body after the function code) -> reply PDU (function code
# included), None for silence, or the string "close" to drop the connection.
Handler = Callable[[int, bytes], "bytes | str | None"]


def read_reply(values: list[int]) -> bytes:
    return struct.pack(">BB", 3, 2 * len(values)) + b"".join(struct.pack(">H", v) for v in values)


def exception_reply(fc: int, code: int) -> bytes:
    return bytes([fc | 0x80, code])


class ModbusPeer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[int, bytes]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        for w in list(self._writers):
            w.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, proto, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                fc = pdu[0]
                self.requests.append((fc, pdu[1:]))
                answer = self.handler(fc, pdu[1:])
                if answer is None:
                    continue
                if answer == "close":
                    break
                assert isinstance(answer, bytes)
                writer.write(struct.pack(">HHHB", tid, proto, len(answer) + 1, unit) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def registers_handler(registers: dict[int, int]) -> Handler:
    """A well-behaved peer: FC03 reads and FC06/FC16 writes on a register dict."""

    def handle(fc: int, body: bytes) -> bytes | str | None:
        if fc == 3:
            address, count = struct.unpack(">HH", body[:4])
            return read_reply([registers.get(address + i, 0) for i in range(count)])
        if fc == 6:
            address, value = struct.unpack(">HH", body[:4])
            registers[address] = value
            return bytes([6]) + body[:4]
        if fc == 16:
            address, count = struct.unpack(">HH", body[:4])
            for i in range(count):
                registers[address + i] = struct.unpack(">H", body[5 + 2 * i : 7 + 2 * i])[0]
            return bytes([16]) + body[:4]
        return exception_reply(fc, 1)

    return handle
