"""The Modbus robot of docs/robot-protocol.md as a ``Robot`` (``dispenser.daemon.robot``).

``drivers.robot`` speaks the protocol (registers, function codes, exception replies);
this adapter turns its values and errors into the daemon's. It is the only module of the
daemon that imports the robot driver.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from dispenser.config import RobotConfig
from dispenser.daemon.robot import (
    Command,
    CommandsRefused,
    Completion,
    CompletionsLost,
    InputScan,
    Motion,
    Outcome,
    Refusal,
    ResetRefused,
    RobotFault,
    RobotMode,
    RobotRefused,
    RobotUnavailable,
    Status,
)
from drivers.robot import codec
from drivers.robot import errors as wire
from drivers.robot.client import RobotClient

__all__ = ["ModbusRobot"]

T = TypeVar("T")

_OPCODE = {Motion.HOME: codec.Opcode.HOME, Motion.STORE: codec.Opcode.STORE,
           Motion.PICK: codec.Opcode.PICK, Motion.HAND_ON: codec.Opcode.RELEASE_TOTE,
           Motion.SCAN_SLOT: codec.Opcode.SCAN_SLOT}
_OUTCOME = {r: Outcome[r.name] for r in codec.Result}
_MODE = {m: RobotMode[m.name] for m in codec.MachineState}
_FAULT = {f: RobotFault[f.name] for f in codec.FaultCode}
_REFUSAL: dict[codec.InvalidReason, Refusal] = {
    r: Refusal.UNKNOWN_COMMAND if r is codec.InvalidReason.UNKNOWN_OPCODE else Refusal[r.name]
    for r in codec.InvalidReason}


def _completion(c: codec.Completion) -> Completion:
    reason = c.invalid_reason
    return Completion(c.number, c.seq, _OUTCOME[c.result], c.detail,
                      _REFUSAL[reason] if reason is not None else None,
                      int(c.result))


def _status(s: codec.RobotStatus) -> Status:
    return Status(
        protocol_version=s.protocol_version, firmware_version=s.firmware_version,
        mode=_MODE[s.machine_state], fault=_FAULT[s.fault_code], queue_depth=s.queue_depth,
        queue_capacity=s.queue_capacity, door_open=s.door_open, homed=s.homed,
        estop_pressed=s.estop_pressed, output_count=s.output_count, output_full=s.output_full,
        input_count=s.input_count, last_accepted_seq=s.last_accepted_seq,
        last_completed_seq=s.last_completed_seq, completion_count=s.completion_count,
        executing_seq=s.executing_seq, sides=s.sides, levels=s.levels, columns=s.columns,
        slot_capacity=s.slot_capacity, tote_capacity=s.tote_capacity)


async def _call(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one driver call; its errors become the daemon's."""
    try:
        return await fn()
    except wire.QueueFull as exc:
        raise CommandsRefused(str(exc), exc.exception_code, resync=False) from exc
    except wire.SequenceRejected as exc:
        raise CommandsRefused(str(exc), exc.exception_code, resync=True) from exc
    except wire.ResetRefused as exc:
        raise ResetRefused(str(exc), exc.exception_code) from exc
    except wire.ModbusExceptionReply as exc:
        raise RobotRefused(str(exc), exc.exception_code) from exc
    except wire.CompletionsLost as exc:
        raise CompletionsLost(str(exc)) from exc
    except wire.RobotError as exc:
        raise RobotUnavailable(str(exc)) from exc


class ModbusRobot:
    """A ``Robot`` over Modbus TCP or RTU."""

    max_per_queue = codec.MAX_COMMANDS_PER_WRITE

    def __init__(self, client: RobotClient) -> None:
        self.client = client

    @classmethod
    def from_config(cls, r: RobotConfig) -> ModbusRobot:
        backoff = (r.retry_backoff_s, max(r.retry_backoff_s, 5.0))
        if r.transport == "tcp":
            return cls(RobotClient.tcp(r.host, r.port, device_id=r.device_id,
                                       timeout_s=r.timeout_s, backoff_s=backoff))
        return cls(RobotClient.rtu(r.device, baudrate=r.baudrate, parity=r.parity,
                                   device_id=r.device_id, timeout_s=r.timeout_s,
                                   backoff_s=backoff))

    @property
    def peer(self) -> str:
        return self.client.peer

    async def read_status(self) -> Status:
        return _status(await _call(self.client.read_status))

    async def read_completions(self, after: int, upto: int) -> list[Completion]:
        found = await _call(lambda: self.client.read_completions(after, upto))
        return [_completion(c) for c in found]

    async def queue(self, commands: Sequence[Command]) -> None:
        wire_commands = [codec.Command(c.seq, _OPCODE[c.motion], c.slot, c.output, c.count)
                         for c in commands]
        await _call(lambda: self.client.queue(wire_commands))

    async def read_input(self) -> InputScan:
        scan = await _call(self.client.read_input)
        return InputScan(scan.present, scan.data)

    async def set_watchdog(self, timeout_ms: int) -> None:
        await _call(lambda: self.client.set_watchdog(timeout_ms))

    async def refresh_watchdog(self) -> None:
        await _call(self.client.refresh_watchdog)

    async def reset(self) -> None:
        await _call(self.client.reset)

    async def abort_queue(self) -> None:
        await _call(self.client.abort_queue)

    async def read_registers(self, address: int, count: int) -> list[int]:
        return await _call(lambda: self.client.read_registers(address, count))

    def traffic(self) -> dict[str, Any]:
        return self.client.stats.snapshot()

    async def close(self) -> None:
        await self.client.close()
