"""Pure encoding and decoding of the robot's registers (docs/robot-protocol.md).

No I/O here: these functions turn commands into mailbox registers and register blocks into
typed values, so they can be tested with exact register lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

PROTOCOL_VERSION = 1

STATUS_ADDRESS = 0
STATUS_COUNT = 32
CONTROL_ADDRESS = 100
WATCHDOG_REFRESH_ADDRESS = 100
WATCHDOG_TIMEOUT_ADDRESS = 101
CONTROL_COMMAND_ADDRESS = 102
INPUT_ADDRESS = 200
INPUT_COUNT = 64
INPUT_TEXT_MAX_BYTES = 120
MAILBOX_ADDRESS = 1000
COMMAND_REGISTERS = 8
MAX_COMMANDS_PER_WRITE = 15
RING_ADDRESS = 2000
RING_ENTRIES = 64
ENTRY_REGISTERS = 8
MAX_READ_REGISTERS = 125

CONTROL_RESET = 1
CONTROL_ABORT_QUEUE = 2

WATCHDOG_MIN_MS = 100
WATCHDOG_MAX_MS = 60000


class Opcode(IntEnum):
    HOME = 1
    STORE = 2
    PICK = 3
    RELEASE_TOTE = 4
    SCAN_SLOT = 5


class Result(IntEnum):
    OK = 0
    SLOT_EMPTY = 1
    JAM = 2
    DROPPED = 3
    OUTPUT_FULL = 4
    ESTOP = 5
    INVALID = 6
    ABORTED = 7


class MachineState(IntEnum):
    IDLE = 0
    BUSY = 1
    HOMING = 2
    FAULT = 3
    ESTOP = 4
    CONTROLLER_LOST = 5
    NOT_HOMED = 6


class FaultCode(IntEnum):
    NONE = 0
    JAM = 1
    DROPPED = 2
    ESTOP = 3
    DOOR_OPEN = 4
    CONTROLLER_LOST = 5


class InvalidReason(IntEnum):
    """Detail of a completion with result INVALID (§3.5)."""

    UNKNOWN_OPCODE = 1
    SLOT_OUT_OF_RANGE = 2
    OUTPUT_OUT_OF_RANGE = 3
    COUNT_OUT_OF_RANGE = 4
    NO_PACK_AT_INPUT = 5
    SLOT_FULL = 6
    MIXED_SLOT = 7
    NOT_HOMED = 8


class CodecError(ValueError):
    """A value cannot be encoded, or registers do not have the documented shape."""


U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF


@dataclass(frozen=True)
class Command:
    """One mailbox command. Field values are checked by the robot, not here (§2.4),
    except that they must fit their registers."""

    seq: int
    opcode: Opcode
    slot: int = 0
    output: int = 0
    count: int = 0


@dataclass(frozen=True)
class Completion:
    """One completion ring entry; ``number`` is its 1-based completion number.

    ``opcode`` stays a plain int: the ring reports whatever opcode was queued, including
    unknown ones that completed INVALID."""

    number: int
    seq: int
    opcode: int
    result: Result
    detail: int
    slot: int
    output: int

    @property
    def invalid_reason(self) -> InvalidReason | None:
        """The reason of an INVALID completion, None for other results or unknown reasons."""
        if self.result is not Result.INVALID:
            return None
        try:
            return InvalidReason(self.detail)
        except ValueError:
            return None


@dataclass(frozen=True)
class RobotStatus:
    """The status block (registers 0-31) decoded."""

    protocol_version: int
    firmware_version: int
    machine_state: MachineState
    fault_code: FaultCode
    heartbeat: int
    queue_depth: int
    queue_capacity: int
    door_open: bool
    homed: bool
    input_present: bool
    watchdog_armed: bool
    estop_pressed: bool
    output_count: int
    output_full: frozenset[int]
    input_count: int
    last_accepted_seq: int
    last_completed_seq: int
    completion_count: int
    executing_seq: int
    watchdog_timeout_ms: int
    sides: int
    levels: int
    columns: int
    slot_capacity: int
    tote_capacity: int

    @property
    def queue_free(self) -> int:
        return max(0, self.queue_capacity - self.queue_depth)


@dataclass(frozen=True)
class InputScan:
    """The input scanner block: whether a pack lies at the input point and its scan."""

    present: bool
    data: str


def _u32(high: int, low: int) -> int:
    return (high << 16) | low


def _split_u32(value: int, name: str) -> tuple[int, int]:
    if not 0 <= value <= U32_MAX:
        raise CodecError(f"{name}={value} does not fit in 32 bits")
    return value >> 16, value & U16_MAX


def _check_u16(value: int, name: str) -> int:
    if not 0 <= value <= U16_MAX:
        raise CodecError(f"{name}={value} does not fit in 16 bits")
    return value


def _check_registers(regs: Sequence[int], expected: int, what: str) -> None:
    if len(regs) != expected:
        raise CodecError(f"{what} needs {expected} registers, got {len(regs)}")
    for value in regs:
        if not 0 <= value <= U16_MAX:
            raise CodecError(f"{what}: register value {value} is not a u16")


def encode_command(cmd: Command) -> list[int]:
    """The 8 mailbox registers of one command."""
    if cmd.seq < 1:
        raise CodecError(f"seq must be >= 1, got {cmd.seq}")
    seq_hi, seq_lo = _split_u32(cmd.seq, "seq")
    slot_hi, slot_lo = _split_u32(cmd.slot, "slot")
    return [
        seq_hi,
        seq_lo,
        _check_u16(int(cmd.opcode), "opcode"),
        slot_hi,
        slot_lo,
        _check_u16(cmd.output, "output"),
        _check_u16(cmd.count, "count"),
        0,
    ]


def encode_commands(cmds: Iterable[Command]) -> list[int]:
    """Registers for one mailbox write, in order. Length and seq order are not checked here:
    the client splits into writes of at most 15 and the robot judges sequence numbers."""
    regs: list[int] = []
    for cmd in cmds:
        seq, opcode, slot, output, count = cmd.seq, cmd.opcode, cmd.slot, cmd.output, cmd.count
        if (
            1 <= seq <= U32_MAX
            and 0 <= slot <= U32_MAX
            and 0 <= opcode <= U16_MAX
            and 0 <= output <= U16_MAX
            and 0 <= count <= U16_MAX
        ):
            regs += (seq >> 16, seq & U16_MAX, opcode, slot >> 16, slot & U16_MAX, output, count, 0)
        else:
            regs.extend(encode_command(cmd))  # raises CodecError naming the field
    return regs


def decode_commands(regs: Sequence[int]) -> list[Command]:
    """Inverse of :func:`encode_commands` (used by tests and diagnostics).

    Raises CodecError for a length that is not a multiple of 8 or an unknown opcode."""
    if len(regs) % COMMAND_REGISTERS:
        raise CodecError(f"mailbox length {len(regs)} is not a multiple of 8")
    out: list[Command] = []
    for i in range(0, len(regs), COMMAND_REGISTERS):
        r = regs[i : i + COMMAND_REGISTERS]
        _check_registers(r, COMMAND_REGISTERS, "command")
        try:
            opcode = Opcode(r[2])
        except ValueError as exc:
            raise CodecError(f"unknown opcode {r[2]}") from exc
        out.append(
            Command(
                seq=_u32(r[0], r[1]),
                opcode=opcode,
                slot=_u32(r[3], r[4]),
                output=r[5],
                count=r[6],
            )
        )
    return out


# Lookups by register value: cheaper than calling an enum for every status and ring entry.
_MACHINE_STATES = {int(m): m for m in MachineState}
_FAULT_CODES = {int(f): f for f in FaultCode}
_RESULTS = {int(r): r for r in Result}
_OUTPUT_SETS: dict[int, frozenset[int]] = {}


def _output_set(bits: int) -> frozenset[int]:
    """The outputs whose bit is set in ``bits`` (a u16), computed once per distinct value."""
    found = _OUTPUT_SETS.get(bits)
    if found is None:
        found = frozenset(k + 1 for k in range(16) if bits & (1 << k))
        if len(_OUTPUT_SETS) < 4096:
            _OUTPUT_SETS[bits] = found
    return found


def _check_block(regs: Sequence[int], expected: int, what: str) -> None:
    """Length and u16 range of a whole block, checked in one pass of builtins."""
    if len(regs) != expected:
        raise CodecError(f"{what} needs {expected} registers, got {len(regs)}")
    if regs and (min(regs) < 0 or max(regs) > U16_MAX):
        _check_registers(regs, expected, what)  # raises, naming the value


def decode_status(regs: Sequence[int]) -> RobotStatus:
    """Decode the 32 registers of the status block. Unknown state or fault codes raise
    CodecError: a controller must not guess what an undocumented state means."""
    _check_block(regs, STATUS_COUNT, "status block")
    flags = regs[8]
    state = _MACHINE_STATES.get(regs[2])
    if state is None:
        raise CodecError(f"unknown machine_state {regs[2]}")
    fault = _FAULT_CODES.get(regs[3])
    if fault is None:
        raise CodecError(f"unknown fault_code {regs[3]}")
    return RobotStatus(
        protocol_version=regs[0],
        firmware_version=regs[1],
        machine_state=state,
        fault_code=fault,
        heartbeat=regs[4],
        queue_depth=regs[5],
        queue_capacity=regs[6],
        door_open=regs[7] != 0,
        homed=bool(flags & 0x1),
        input_present=bool(flags & 0x2),
        watchdog_armed=bool(flags & 0x4),
        estop_pressed=bool(flags & 0x8),
        output_count=regs[9],
        output_full=_output_set(regs[10]),
        input_count=regs[11],
        last_accepted_seq=_u32(regs[12], regs[13]),
        last_completed_seq=_u32(regs[14], regs[15]),
        completion_count=_u32(regs[16], regs[17]),
        executing_seq=_u32(regs[18], regs[19]),
        watchdog_timeout_ms=regs[20],
        sides=regs[21],
        levels=regs[22],
        columns=regs[23],
        slot_capacity=regs[24],
        tote_capacity=regs[25],
    )


def decode_completion(number: int, regs: Sequence[int]) -> Completion:
    """Decode one 8-register ring entry holding completion ``number``."""
    _check_block(regs, ENTRY_REGISTERS, "completion entry")
    return decode_completions(number, regs)[0]


def decode_completions(first_number: int, regs: Sequence[int]) -> list[Completion]:
    """Decode consecutive ring entries (8 registers each) holding completions
    ``first_number``, ``first_number + 1``, ... as one FC03 returned them."""
    if len(regs) % ENTRY_REGISTERS or not regs:
        raise CodecError(f"completion entries need a multiple of 8 registers, got {len(regs)}")
    _check_block(regs, len(regs), "completion entry")
    results = _RESULTS
    new = object.__new__
    out: list[Completion] = []
    number = first_number
    for i in range(0, len(regs), ENTRY_REGISTERS):
        seq_hi, seq_lo, opcode, result, detail, slot_hi, slot_lo, output = regs[i : i + 8]
        decoded = results.get(result)
        if decoded is None:
            raise CodecError(f"unknown result {result}")
        # The frozen dataclass filled without its __init__ (one setattr per field): the
        # same object, built in a third of the time; tests compare it with Completion(...).
        completion = new(Completion)
        completion.__dict__.update(
            number=number,
            seq=(seq_hi << 16) | seq_lo,
            opcode=opcode,
            result=decoded,
            detail=detail,
            slot=(slot_hi << 16) | slot_lo,
            output=output,
        )
        out.append(completion)
        number += 1
    return out


def ring_entry(number: int) -> int:
    """Ring entry index (0..63) of completion ``number`` (1-based)."""
    if number < 1:
        raise CodecError(f"completion numbers start at 1, got {number}")
    return (number - 1) % RING_ENTRIES


def ring_reads(after_number: int, completion_count: int) -> list[tuple[int, int, int]]:
    """The FC03 reads that fetch completions after_number+1..completion_count.

    Returns (address, register count, first completion number) for each read, as few as
    possible: contiguous ring entries in one read of at most 15 entries (120 registers),
    split where the ring wraps. The caller checks the 64-entry limit first."""
    reads: list[tuple[int, int, int]] = []
    number = after_number + 1
    per_read = 120 // ENTRY_REGISTERS
    while number <= completion_count:
        entry = ring_entry(number)
        run = min(completion_count - number + 1, RING_ENTRIES - entry, per_read)
        reads.append((RING_ADDRESS + entry * ENTRY_REGISTERS, run * ENTRY_REGISTERS, number))
        number += run
    return reads


def decode_input(regs: Sequence[int]) -> InputScan:
    """Decode the 64 registers of the input scanner block (200-263)."""
    _check_registers(regs, INPUT_COUNT, "input scanner block")
    length = regs[1]
    if length > INPUT_TEXT_MAX_BYTES:
        raise CodecError(f"scan length {length} exceeds {INPUT_TEXT_MAX_BYTES} bytes")
    raw = bytearray()
    for value in regs[2 : 2 + 60]:
        raw.append(value >> 8)
        raw.append(value & 0xFF)
    return InputScan(present=regs[0] != 0, data=bytes(raw[:length]).decode("utf-8", "replace"))
