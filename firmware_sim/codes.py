"""Numeric codes of the robot protocol (docs/robot-protocol.md §3), in one place."""

from __future__ import annotations

from enum import IntEnum


class MachineState(IntEnum):
    IDLE = 0
    BUSY = 1
    HOMING = 2
    FAULT = 3
    ESTOP = 4
    CONTROLLER_LOST = 5
    NOT_HOMED = 6


class Fault(IntEnum):
    NONE = 0
    JAM = 1
    DROPPED = 2
    ESTOP = 3
    DOOR_OPEN = 4
    CONTROLLER_LOST = 5


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


class Invalid(IntEnum):
    UNKNOWN_OPCODE = 1
    SLOT_RANGE = 2
    OUTPUT_RANGE = 3
    COUNT_RANGE = 4
    NO_INPUT_PACK = 5
    SLOT_FULL = 6
    MIXED_SLOT = 7
    NOT_HOMED = 8


class ModbusException(Exception):
    """A request the robot answers with a Modbus exception code (§1, §2)."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_ADDRESS = 2
    ILLEGAL_VALUE = 3
    DEVICE_FAILURE = 4
    DEVICE_BUSY = 6

    def __init__(self, code: int, why: str = "") -> None:
        super().__init__(f"modbus exception {code}: {why}" if why else f"modbus exception {code}")
        self.code = code
