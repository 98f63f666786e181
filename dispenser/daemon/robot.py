"""The picking robot as the daemon sees it: a small typed interface.

The robot ledger, the tote planner, loading and faults talk to the robot only through
``Robot`` and the values below; none of them knows a wire protocol. The Modbus robot of
docs/robot-protocol.md is presented as a ``Robot`` by ``dispenser.daemon.modbus_robot``;
another kind of robot needs another such adapter and nothing else.

What any robot must offer (the contract the ledger's exactly-once rests on):

- commands carry a ``seq`` that only grows; the robot reports the highest seq it accepted
  (``Status.last_accepted_seq``), so after a crash the daemon knows what never reached it;
- every accepted command ends in exactly one ``Completion``, numbered from 1 without gaps
  (``Status.completion_count``), and the last 64 can be read again;
- a watchdog: the robot stops (``RobotMode.CONTROLLER_LOST``) when the daemon is silent
  longer than the timeout it set.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "COMPLETION_RING",
    "Command",
    "CommandsRefused",
    "Completion",
    "CompletionsLost",
    "InputScan",
    "Motion",
    "Outcome",
    "Refusal",
    "ResetRefused",
    "Robot",
    "RobotFault",
    "RobotMode",
    "RobotRefused",
    "RobotUnavailable",
    "Status",
]

# How many completions the robot keeps to be read again.
COMPLETION_RING = 64


class Motion(enum.Enum):
    """What a command makes the robot do (stored as an intent's ``purpose``)."""

    HOME = "home"
    STORE = "store"  # the pack at the input point into a slot
    PICK = "pick"  # packs from a slot into the tote at an output
    HAND_ON = "hand_on"  # the tote at an output goes on to packing
    SCAN_SLOT = "scan"  # count the packs in a slot


class Outcome(enum.Enum):
    OK = "ok"
    SLOT_EMPTY = "slot_empty"  # fewer packs than asked: ``detail`` says how many moved
    JAM = "jam"
    DROPPED = "dropped"
    OUTPUT_FULL = "output_full"
    ESTOP = "estop"
    INVALID = "invalid"  # refused before moving (``Completion.refusal`` says why)
    ABORTED = "aborted"  # never started (queue aborted, fault before it)


class Refusal(enum.Enum):
    """Why the robot refused a command (an INVALID outcome)."""

    UNKNOWN_COMMAND = "unknown_command"
    SLOT_OUT_OF_RANGE = "slot_out_of_range"
    OUTPUT_OUT_OF_RANGE = "output_out_of_range"
    COUNT_OUT_OF_RANGE = "count_out_of_range"
    NO_PACK_AT_INPUT = "no_pack_at_input"
    SLOT_FULL = "slot_full"
    MIXED_SLOT = "mixed_slot"
    NOT_HOMED = "not_homed"


class RobotMode(enum.Enum):
    IDLE = "idle"
    BUSY = "busy"
    HOMING = "homing"
    FAULT = "fault"
    ESTOP = "estop"
    CONTROLLER_LOST = "controller_lost"  # its watchdog expired: the daemon was silent
    NOT_HOMED = "not_homed"


class RobotFault(enum.Enum):
    NONE = "none"
    JAM = "jam"
    DROPPED = "dropped"
    ESTOP = "estop"
    DOOR_OPEN = "door_open"
    CONTROLLER_LOST = "controller_lost"


@dataclass(frozen=True, slots=True)
class Command:
    seq: int
    motion: Motion
    slot: int = 0
    output: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """How a command ended; ``number`` counts completions from 1. ``detail``: packs moved
    (PICK, STORE, SCAN_SLOT: packs counted)."""

    number: int
    seq: int
    outcome: Outcome
    detail: int
    refusal: Refusal | None = None
    code: int = 0  # the robot's own result code, journaled with the intent


@dataclass(frozen=True, slots=True)
class Status:
    """The robot's state, read once per cycle."""

    protocol_version: int
    firmware_version: int
    mode: RobotMode
    fault: RobotFault
    queue_depth: int
    queue_capacity: int
    door_open: bool
    homed: bool
    estop_pressed: bool
    output_count: int
    output_full: frozenset[int]
    input_count: int
    last_accepted_seq: int
    last_completed_seq: int
    completion_count: int
    executing_seq: int
    sides: int
    levels: int
    columns: int
    slot_capacity: int
    tote_capacity: int

    @property
    def geometry(self) -> tuple[int, int, int, int]:
        """(sides, levels, columns, slot capacity) of its storage."""
        return self.sides, self.levels, self.columns, self.slot_capacity


@dataclass(frozen=True, slots=True)
class InputScan:
    """Whether a pack lies at the input point, and what the robot's scanner read."""

    present: bool
    data: str


class RobotUnavailable(Exception):
    """The robot could not be asked or did not answer (link down, timeout, bad reply)."""


class RobotRefused(RobotUnavailable):
    """The robot answered with a refusal of the request itself (``code`` is its own)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class CommandsRefused(RobotRefused):
    """None of the commands were queued. ``resync``: the robot refused their seqs (the
    daemon must reconcile before sending again); otherwise its queue was full or it was
    not ready."""

    def __init__(self, message: str, code: int, resync: bool) -> None:
        super().__init__(message, code)
        self.resync = resync


class ResetRefused(RobotRefused):
    """The robot refused to reset: the cause of its fault is still there."""


class CompletionsLost(RobotUnavailable):
    """Completions not yet applied are no longer in the robot's ring."""


class Robot(Protocol):
    """What the daemon needs of a picking robot. Every call has its own timeout and
    raises ``RobotUnavailable`` (or a subclass) when it fails."""

    @property
    def peer(self) -> str:
        """Where the robot is (for logs and ``system.info``)."""
        ...

    async def read_status(self) -> Status: ...

    async def read_completions(self, after: int, upto: int) -> list[Completion]:
        """Completions ``after + 1`` .. ``upto`` (at most ``COMPLETION_RING``)."""
        ...

    async def queue(self, commands: Sequence[Command]) -> None:
        """Queue commands (at most ``max_per_queue`` at once): all or none."""
        ...

    @property
    def max_per_queue(self) -> int: ...

    async def read_input(self) -> InputScan: ...

    async def set_watchdog(self, timeout_ms: int) -> None:
        """Arm the watchdog (0: off)."""
        ...

    async def refresh_watchdog(self) -> None: ...

    async def reset(self) -> None:
        """Leave a fault, an emergency stop or CONTROLLER_LOST (``ResetRefused`` when the
        cause is still there)."""
        ...

    async def abort_queue(self) -> None:
        """Drop the queued commands (they complete ABORTED); the motion in progress ends."""
        ...

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Raw registers, for a technician's diagnostics."""
        ...

    def traffic(self) -> dict[str, Any]:
        """Transactions, errors, reconnects and latency (``diag.stats``)."""
        ...

    async def close(self) -> None: ...
