"""Driver for the picking robot (Modbus TCP/RTU, docs/robot-protocol.md).

It speaks commands, statuses and completions; it knows nothing about orders or shipments.
"""

from drivers.robot.client import RobotClient, TrafficStats
from drivers.robot.codec import (
    Command,
    Completion,
    FaultCode,
    InputScan,
    InvalidReason,
    MachineState,
    Opcode,
    Result,
    RobotStatus,
)
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

__all__ = [
    "BadReply",
    "Command",
    "Completion",
    "CompletionsLost",
    "FaultCode",
    "InputScan",
    "InvalidReason",
    "MachineState",
    "ModbusExceptionReply",
    "Opcode",
    "QueueFull",
    "ResetRefused",
    "Result",
    "RobotClient",
    "RobotError",
    "RobotLinkDown",
    "RobotStatus",
    "RobotTimeout",
    "SequenceRejected",
    "ShortReply",
    "TrafficStats",
]
