"""Errors of the robot driver. Every failure of a call is one of these; none is data."""

from __future__ import annotations

EXCEPTION_NAMES = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SLAVE DEVICE FAILURE",
    6: "SLAVE DEVICE BUSY",
}


class RobotError(Exception):
    """Base of every error the robot driver raises."""


class RobotTimeout(RobotError):
    """The robot did not answer within the call's timeout; the link may still be up."""


class RobotLinkDown(RobotError):
    """No connection to the robot; calls fail fast until the next reconnect attempt is due."""


class BadReply(RobotError):
    """A reply arrived that does not belong to the request (wrong function, address, or
    an undecodable frame)."""


class ModbusExceptionReply(RobotError):
    """The robot answered with a Modbus exception.

    ``function_code`` is the request's function code (3, 6 or 16); ``exception_code`` is the
    raw exception code of the reply."""

    def __init__(self, function_code: int, exception_code: int, address: int) -> None:
        self.function_code = function_code
        self.exception_code = exception_code
        self.address = address
        name = EXCEPTION_NAMES.get(exception_code, "unknown")
        super().__init__(
            f"robot answered FC{function_code:02d} at register {address} with exception "
            f"{exception_code:02d} ({name})"
        )


class SequenceRejected(ModbusExceptionReply):
    """Mailbox write refused with exception 03: sequence numbers not above
    last_accepted_seq or not increasing (or a malformed write). Nothing was queued."""


class QueueFull(ModbusExceptionReply):
    """Mailbox write refused with exception 06: not enough room in the queue, or the robot
    is in CONTROLLER_LOST. Nothing was queued."""


class ResetRefused(ModbusExceptionReply):
    """RESET answered with exception 04: the cause of the fault is still there (jam not
    cleared, door open, emergency stop pressed). A person has to act first."""


class ShortReply(RobotError):
    """The reply carried fewer registers than asked for."""

    def __init__(self, expected: int, got: int, address: int) -> None:
        self.expected = expected
        self.got = got
        self.address = address
        super().__init__(f"robot answered a read of {expected} registers at {address} with {got}")


class CompletionsLost(RobotError):
    """More than 64 completions were asked for: the older ones are overwritten in the
    robot's ring and must be reconciled another way."""

    def __init__(self, after_number: int, completion_count: int) -> None:
        self.after_number = after_number
        self.completion_count = completion_count
        super().__init__(
            f"completions {after_number + 1}..{completion_count - 64} are no longer in the "
            f"robot's 64-entry ring (asked after {after_number}, robot is at {completion_count})"
        )
