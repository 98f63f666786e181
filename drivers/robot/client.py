"""Async Modbus client for the picking robot (TCP or RTU), one request at a time.

The client speaks commands, statuses and completions (docs/robot-protocol.md); it knows
nothing about what the packs are for. Every call has a timeout and fails with a
:class:`~drivers.robot.errors.RobotError`; exception replies and short replies are errors,
never data.

Link handling: after a connection loss, calls raise :class:`RobotLinkDown` at once until the
next reconnect attempt is due; attempts are spaced by an exponential backoff between
``backoff_s`` bounds, and a successful call resets it. pymodbus' own retries and automatic
reconnects are switched off so that these timeouts and this backoff are the ones in force.

Size: the link and the calls are one piece. Every call goes through ``_transact``, which
holds the one-request-at-a-time lock, the timeout, the RTU line's quiet time, the link state
with its reconnect backoff and the traffic counters, and turns each failure into one
``RobotError``; the public calls after it are short. The register layout and the wire
formats are in ``codec``, the errors in ``errors``; the rest here is what ties the driver to
pymodbus (its clients, two PDU classes that decode and encode in one struct call).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    WriteMultipleRegistersRequest,
)

from drivers.robot import codec
from drivers.robot.codec import Command, Completion, InputScan, RobotStatus
from drivers.robot.errors import (
    BadReply,
    CompletionsLost,
    ModbusExceptionReply,
    QueueFull,
    ResetRefused,
    RobotError,
    RobotLinkDown,
    RobotTimeout,
    SequenceRejected,
    ShortReply,
)

FC_READ_HOLDING = 3
FC_WRITE_SINGLE = 6
FC_WRITE_MULTIPLE = 16

_ModbusClient = AsyncModbusTcpClient | AsyncModbusSerialClient


_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")


class _ReadHoldingRegistersReply(ReadHoldingRegistersResponse):
    """An FC03 reply decoded with one struct call (pymodbus' own class makes one call per
    register: a third of a 120-register ring read's decoding). Registered on this driver's
    pymodbus client only; anything unusual goes to pymodbus' own decoding."""

    def decode(self, data: bytes) -> None:
        size = data[0] if data else 0
        if size and not size % 2 and size < len(data):
            self.registers = list(struct.unpack_from(f">{size // 2}H", data, 1))
        else:
            super().decode(data)

    def __str__(self) -> str:
        # pymodbus formats every decoded reply for a debug line, logged or not (11 us for
        # 120 registers); the registers are written out only when that line is logged.
        if _PYMODBUS_LOG.isEnabledFor(logging.DEBUG):
            return super().__str__()
        return f"{type(self).__name__}(dev_id={self.dev_id}, registers={len(self.registers)})"


class _WriteMultipleRegistersRequest(WriteMultipleRegistersRequest):
    """FC16 request encoded with one struct call (pymodbus' own class: one per register)."""

    def encode(self) -> bytes:
        head = (self.address, self.count, self.count * 2)
        return struct.pack(f">HHB{len(self.registers)}H", *head, *self.registers)


@dataclass
class TrafficStats:
    """Counters of one client's Modbus traffic, for diagnostics.

    ``errors`` is keyed by kind: ``exception_NN`` (raw Modbus exception code), ``timeout``,
    ``short_reply``, ``bad_reply``, ``link_down`` (a call refused or broken by a lost link)
    and ``connect_failed``. Latencies are kept for the most recent ``ring_size`` answered
    transactions."""

    ring_size: int = 1024
    transactions: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    _latencies: deque[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._latencies = deque(maxlen=self.ring_size)

    def record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)

    def _quantile(self, q: float) -> float | None:
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def latency_p50_s(self) -> float | None:
        return self._quantile(0.50)

    @property
    def latency_p99_s(self) -> float | None:
        return self._quantile(0.99)

    def snapshot(self) -> dict[str, Any]:
        """A plain dict for logs and the diagnostics API."""
        return {
            "transactions": self.transactions,
            "reconnects": self.reconnects,
            "errors": dict(self.errors),
            "latency_p50_s": self.latency_p50_s,
            "latency_p99_s": self.latency_p99_s,
            "latency_samples": len(self._latencies),
        }


class RobotClient:
    """One connection to one robot. Build it with :meth:`tcp` or :meth:`rtu`."""

    def __init__(
        self,
        factory: Callable[[float], _ModbusClient],
        *,
        peer: str,
        device_id: int = 1,
        timeout_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        serial_line: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        low, high = backoff_s
        if not 0 < low <= high:
            raise ValueError("backoff_s must be (min, max) with 0 < min <= max")
        self._factory = factory
        self.peer = peer
        self.device_id = device_id
        self.timeout_s = timeout_s
        self._backoff = (low, high)
        self._delay = low
        self._next_attempt = 0.0
        self._serial_line = serial_line
        self._quiet_until = 0.0
        self._mb: _ModbusClient | None = None
        self._closed = False
        self._ever_connected = False
        self._lock = asyncio.Lock()
        self._watchdog_counter = 0
        self.stats = TrafficStats()

    # ------------------------------------------------------------------ construction

    @classmethod
    def tcp(
        cls,
        host: str,
        port: int,
        *,
        device_id: int = 1,
        timeout_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> RobotClient:
        def factory(pymodbus_timeout: float) -> _ModbusClient:
            return AsyncModbusTcpClient(
                host,
                port=port,
                framer=FramerType.SOCKET,
                timeout=pymodbus_timeout,
                retries=0,
                reconnect_delay=0,
            )

        return cls(
            factory,
            peer=f"tcp://{host}:{port}",
            device_id=device_id,
            timeout_s=timeout_s,
            backoff_s=backoff_s,
        )

    @classmethod
    def rtu(
        cls,
        device: str,
        *,
        baudrate: int = 115200,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        device_id: int = 1,
        timeout_s: float = 1.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> RobotClient:
        def factory(pymodbus_timeout: float) -> _ModbusClient:
            return AsyncModbusSerialClient(
                device,
                framer=FramerType.RTU,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=parity,
                stopbits=stopbits,
                timeout=pymodbus_timeout,
                retries=0,
                reconnect_delay=0,
            )

        return cls(
            factory,
            peer=f"rtu://{device}@{baudrate}",
            device_id=device_id,
            timeout_s=timeout_s,
            backoff_s=backoff_s,
            serial_line=True,
        )

    # ------------------------------------------------------------------ link

    @property
    def connected(self) -> bool:
        return self._mb is not None and self._mb.connected

    async def connect(self) -> None:
        """Open the link now (ignoring the backoff). Raises RobotLinkDown on failure."""
        async with self._lock:
            self._closed = False
            self._next_attempt = 0.0
            if not self.connected:
                await self._open()

    async def close(self) -> None:
        """Close the link; later calls raise RobotLinkDown until :meth:`connect`."""
        async with self._lock:
            self._closed = True
            self._discard_client()

    async def __aenter__(self) -> RobotClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _discard_client(self) -> None:
        mb, self._mb = self._mb, None
        if mb is not None:
            mb.close()

    def _link_lost(self) -> None:
        """Forget the connection and schedule the next attempt after the current delay."""
        self._discard_client()
        self._schedule_attempt()

    def _schedule_attempt(self) -> None:
        self._next_attempt = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self._backoff[1])

    async def _open(self) -> None:
        # pymodbus' own response timeout is set well beyond ours so that ours (which maps to
        # RobotTimeout) always fires first; connecting is bounded by ours too.
        mb = self._factory(self.timeout_s * 2 + 1.0)
        ok = False
        try:
            async with asyncio.timeout(self.timeout_s):
                ok = await mb.connect()
        except TimeoutError:
            ok = False
        if not ok:
            mb.close()
            self.stats.errors["connect_failed"] += 1
            self._schedule_attempt()
            raise RobotLinkDown(f"cannot connect to the robot at {self.peer}")
        mb.ctx.trace_connect = self._make_disconnect_hook(mb)
        mb.register(_ReadHoldingRegistersReply)
        self._mb = mb
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True

    def _make_disconnect_hook(self, mb: _ModbusClient) -> Callable[[bool], None]:
        # pymodbus leaves a request waiting until its timeout when the peer closes the
        # connection; failing the pending answer at once lets the call report the lost link.
        def hook(connected: bool) -> None:
            if connected:
                return
            future = getattr(mb.ctx, "response_future", None)
            if isinstance(future, asyncio.Future) and not future.done():
                future.set_exception(ConnectionException("connection lost"))

        return hook

    async def _link(self) -> _ModbusClient:
        if self._closed:
            self.stats.errors["link_down"] += 1
            raise RobotLinkDown(f"robot client for {self.peer} is closed")
        if self._mb is not None and self._mb.connected:
            return self._mb
        if self._mb is not None:
            self._link_lost()
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            self.stats.errors["link_down"] += 1
            raise RobotLinkDown(
                f"link to the robot at {self.peer} is down; next attempt in {wait:.2f} s"
            )
        await self._open()
        assert self._mb is not None
        return self._mb

    # ------------------------------------------------------------------ transactions

    async def _transact(
        self, fc: int, address: int, *, count: int = 0, values: Sequence[int] = ()
    ) -> list[int]:
        async with self._lock:
            mb = await self._link()
            if self._serial_line:
                quiet = self._quiet_until - time.monotonic()
                if quiet > 0:
                    await asyncio.sleep(quiet)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await self._send(mb, fc, address, count, values)
            except TimeoutError:
                self.stats.errors["timeout"] += 1
                if not mb.connected:
                    self._link_lost()
                    raise RobotLinkDown(f"link to the robot at {self.peer} lost") from None
                if self._serial_line:
                    # A late answer must not be taken for the next request's (RTU frames
                    # carry no transaction id): keep the line quiet for one timeout.
                    self._quiet_until = time.monotonic() + self.timeout_s
                raise RobotTimeout(
                    f"robot at {self.peer} did not answer FC{fc:02d} at {address} "
                    f"within {self.timeout_s} s"
                ) from None
            except ConnectionException as exc:
                self.stats.errors["link_down"] += 1
                self._link_lost()
                raise RobotLinkDown(f"link to the robot at {self.peer} lost: {exc}") from exc
            except ModbusException as exc:
                if not mb.connected:
                    self.stats.errors["link_down"] += 1
                    self._link_lost()
                    raise RobotLinkDown(f"link to the robot at {self.peer} lost: {exc}") from exc
                self.stats.errors["bad_reply"] += 1
                raise BadReply(f"unusable reply from the robot at {self.peer}: {exc}") from exc
            except OSError as exc:
                self.stats.errors["link_down"] += 1
                self._link_lost()
                raise RobotLinkDown(f"link to the robot at {self.peer} lost: {exc}") from exc
            except asyncio.CancelledError:
                if self._serial_line:  # the answer may still come: keep it from the next call
                    self._quiet_until = time.monotonic() + self.timeout_s
                raise
            self.stats.transactions += 1
            self.stats.record_latency(time.perf_counter() - started)
            registers = self._check_reply(reply, fc, address, count, values)
            self._delay = self._backoff[0]
            return registers

    async def _send(
        self, mb: _ModbusClient, fc: int, address: int, count: int, values: Sequence[int]
    ) -> ModbusPDU:
        if fc == FC_READ_HOLDING:
            return await mb.read_holding_registers(address, count=count, device_id=self.device_id)
        if fc == FC_WRITE_SINGLE:
            return await mb.write_register(address, values[0], device_id=self.device_id)
        request = _WriteMultipleRegistersRequest(
            address=address, registers=list(values), dev_id=self.device_id
        )
        reply: ModbusPDU = await mb.execute(False, request)
        return reply

    def _check_reply(
        self, reply: ModbusPDU, fc: int, address: int, count: int, values: Sequence[int]
    ) -> list[int]:
        if reply.isError():
            code = int(getattr(reply, "exception_code", 0))
            self.stats.errors[f"exception_{code:02d}"] += 1
            raise _exception_error(fc, address, code)
        if reply.function_code != fc:
            self.stats.errors["bad_reply"] += 1
            raise BadReply(f"asked FC{fc:02d}, robot answered FC{reply.function_code:02d}")
        if fc == FC_READ_HOLDING:
            registers = list(reply.registers)
            if len(registers) < count:
                self.stats.errors["short_reply"] += 1
                raise ShortReply(expected=count, got=len(registers), address=address)
            if len(registers) > count:
                self.stats.errors["bad_reply"] += 1
                raise BadReply(f"asked {count} registers at {address}, got {len(registers)}")
            return registers
        if reply.address != address:
            self.stats.errors["bad_reply"] += 1
            raise BadReply(f"write to {address} acknowledged for {reply.address}")
        if fc == FC_WRITE_MULTIPLE and reply.count != len(values):
            self.stats.errors["short_reply"] += 1
            raise ShortReply(expected=len(values), got=reply.count, address=address)
        return []

    # ------------------------------------------------------------------ public calls

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers (diagnostics). At most 125 per call."""
        if not 1 <= count <= codec.MAX_READ_REGISTERS:
            raise ValueError(f"count must be 1..{codec.MAX_READ_REGISTERS}, got {count}")
        return await self._transact(FC_READ_HOLDING, address, count=count)

    async def read_status(self) -> RobotStatus:
        """The status block, in one FC03 of 32 registers."""
        regs = await self._transact(FC_READ_HOLDING, codec.STATUS_ADDRESS, count=codec.STATUS_COUNT)
        return _decode(codec.decode_status, regs)

    async def queue(self, commands: Sequence[Command]) -> None:
        """Queue commands in order, at most 15 per FC16 write.

        Each write is taken whole or not at all. When a later write of a long sequence fails,
        the earlier writes were taken: read ``last_accepted_seq`` to know where it stopped."""
        for start in range(0, len(commands), codec.MAX_COMMANDS_PER_WRITE):
            chunk = commands[start : start + codec.MAX_COMMANDS_PER_WRITE]
            values = _encode(chunk)
            await self._transact(FC_WRITE_MULTIPLE, codec.MAILBOX_ADDRESS, values=values)

    async def read_completions(self, after_number: int, completion_count: int) -> list[Completion]:
        """Completions ``after_number + 1 .. completion_count`` in order, read in as few FC03
        as the ring allows (at most 15 entries per read, split where the ring wraps).

        Raises CompletionsLost when more than 64 are asked for."""
        if after_number < 0 or completion_count < 0:
            raise ValueError("completion numbers are not negative")
        if completion_count <= after_number:
            return []
        if completion_count - after_number > codec.RING_ENTRIES:
            raise CompletionsLost(after_number, completion_count)
        out: list[Completion] = []
        for address, count, first in codec.ring_reads(after_number, completion_count):
            regs = await self._transact(FC_READ_HOLDING, address, count=count)
            try:
                out += codec.decode_completions(first, regs)
            except codec.CodecError as exc:
                last = first + count // codec.ENTRY_REGISTERS - 1
                raise BadReply(f"completions {first}..{last} do not decode: {exc}") from exc
        return out

    async def read_input(self) -> InputScan:
        """The input scanner block (one FC03 of 64 registers)."""
        regs = await self._transact(FC_READ_HOLDING, codec.INPUT_ADDRESS, count=codec.INPUT_COUNT)
        return _decode(codec.decode_input, regs)

    async def set_watchdog(self, timeout_ms: int) -> None:
        """Arm the robot's watchdog (100-60000 ms) or disable it (0)."""
        if timeout_ms != 0 and not codec.WATCHDOG_MIN_MS <= timeout_ms <= codec.WATCHDOG_MAX_MS:
            raise ValueError(f"watchdog timeout must be 0 or 100..60000 ms, got {timeout_ms}")
        await self._transact(FC_WRITE_SINGLE, codec.WATCHDOG_TIMEOUT_ADDRESS, values=[timeout_ms])

    async def refresh_watchdog(self) -> None:
        """Write the watchdog refresh register (a changing value, handy in traffic traces)."""
        self._watchdog_counter = (self._watchdog_counter + 1) & codec.U16_MAX
        await self._transact(
            FC_WRITE_SINGLE, codec.WATCHDOG_REFRESH_ADDRESS, values=[self._watchdog_counter]
        )

    async def reset(self) -> None:
        """RESET: clears FAULT, ESTOP or CONTROLLER_LOST if the cause is gone, else raises
        ResetRefused (exception 04)."""
        await self._transact(
            FC_WRITE_SINGLE, codec.CONTROL_COMMAND_ADDRESS, values=[codec.CONTROL_RESET]
        )

    async def abort_queue(self) -> None:
        """ABORT_QUEUE: every queued command not yet in motion completes ABORTED."""
        await self._transact(
            FC_WRITE_SINGLE, codec.CONTROL_COMMAND_ADDRESS, values=[codec.CONTROL_ABORT_QUEUE]
        )


def _exception_error(fc: int, address: int, code: int) -> ModbusExceptionReply:
    if fc == FC_WRITE_MULTIPLE and address == codec.MAILBOX_ADDRESS:
        if code == 3:
            return SequenceRejected(fc, code, address)
        if code == 6:
            return QueueFull(fc, code, address)
    if fc == FC_WRITE_SINGLE and address == codec.CONTROL_COMMAND_ADDRESS and code == 4:
        return ResetRefused(fc, code, address)
    return ModbusExceptionReply(fc, code, address)


def _encode(commands: Sequence[Command]) -> list[int]:
    try:
        return codec.encode_commands(commands)
    except codec.CodecError as exc:
        raise ValueError(str(exc)) from exc


T = TypeVar("T")


def _decode(decoder: Callable[[list[int]], T], regs: list[int]) -> T:
    try:
        return decoder(regs)
    except codec.CodecError as exc:
        raise BadReply(f"robot sent registers that do not decode: {exc}") from exc


__all__ = ["RobotClient", "RobotError", "TrafficStats"]
