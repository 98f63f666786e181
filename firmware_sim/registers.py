"""The robot's holding registers (docs/robot-protocol.md §2) over a :class:`Robot`."""

from __future__ import annotations

from firmware_sim.codes import ModbusException
from firmware_sim.robot import (
    COLUMNS,
    LEVELS,
    MAX_BATCH,
    QUEUE_CAPACITY,
    SIDES,
    SLOT_CAPACITY,
    TOTE_CAPACITY,
    Command,
    Robot,
)

PROTOCOL_VERSION = 1
FIRMWARE_VERSION = 0x0100

STATUS = (0, 32)
CONTROL = (100, 104)
SCANNER = (200, 264)
MAILBOX = (1000, 1120)
RING = (2000, 2512)

_ZEROS = [0] * 128


def _illegal_address(why: str) -> ModbusException:
    return ModbusException(ModbusException.ILLEGAL_ADDRESS, why)


class RobotRegisters:
    """Implements :class:`firmware_sim.modbus.RegisterBank` for the robot."""

    def __init__(self, robot: Robot) -> None:
        self.robot = robot
        self._scan_key: object = None
        self._scan: list[int] = [0] * 64

    def status_block(self) -> list[int]:
        r = self.robot
        flags = (
            (1 if r.homed else 0)
            | (2 if r.input else 0)
            | (4 if r.watchdog_timeout_ms else 0)
            | (8 if r.estop_pressed else 0)
        )
        las, lcs, cc = r.last_accepted_seq, r.last_completed_seq, r.completion_count
        ex = r.executing.seq if r.executing is not None else 0
        return [
            PROTOCOL_VERSION,
            FIRMWARE_VERSION,
            int(r.machine_state),
            r.fault_code,
            r.heartbeat(),
            len(r.queue),
            QUEUE_CAPACITY,
            1 if r.door_open else 0,
            flags,
            r.outputs,
            r.output_full_bits(),
            min(len(r.input), 0xFFFF),
            las >> 16,
            las & 0xFFFF,
            lcs >> 16,
            lcs & 0xFFFF,
            (cc >> 16) & 0xFFFF,
            cc & 0xFFFF,
            ex >> 16,
            ex & 0xFFFF,
            r.watchdog_timeout_ms,
            SIDES,
            LEVELS,
            COLUMNS,
            SLOT_CAPACITY,
            TOTE_CAPACITY,
            0,
            0,
            0,
            0,
            0,
            0,
        ]

    def scanner_block(self) -> list[int]:
        r = self.robot
        first = r.input[0] if r.input else None
        if first is not self._scan_key:
            # Recomputed only when another pack comes to the front.
            block = [0] * 64
            if first is not None:
                data = first.gs1().encode()[:120]
                block[0] = 1
                block[1] = len(data)
                padded = data + b"\x00" * (len(data) % 2)
                for i in range(0, len(padded), 2):
                    block[2 + i // 2] = (padded[i] << 8) | padded[i + 1]
            self._scan, self._scan_key = block, first
        return self._scan

    def read(self, address: int, count: int) -> list[int]:
        end = address + count
        r = self.robot
        if end <= STATUS[1]:
            return self.status_block()[address:end]
        if RING[0] <= address and end <= RING[1]:
            return r.ring[address - RING[0] : end - RING[0]]
        if CONTROL[0] <= address and end <= CONTROL[1]:
            block = [r.watchdog_value, r.watchdog_timeout_ms, 0, 0]
            return block[address - CONTROL[0] : end - CONTROL[0]]
        if SCANNER[0] <= address and end <= SCANNER[1]:
            return self.scanner_block()[address - SCANNER[0] : end - SCANNER[0]]
        if MAILBOX[0] <= address and end <= MAILBOX[1]:
            return _ZEROS[:count]
        raise _illegal_address(f"read {address}..{end - 1} is not inside one block")

    def write(self, address: int, values: list[int]) -> None:
        end = address + len(values)
        if MAILBOX[0] <= address < MAILBOX[1]:
            self._write_mailbox(address, values)
        elif CONTROL[0] <= address and end <= CONTROL[1] - 1:
            self._write_control(address, values)
        else:
            raise _illegal_address(f"registers {address}..{end - 1} are not writable")

    def _write_control(self, address: int, values: list[int]) -> None:
        for offset, value in enumerate(values, address):
            if offset == 101 and value != 0 and not 100 <= value <= 60000:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "watchdog 0 or 100..60000")
            if offset == 102 and value not in (1, 2):
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "control is 1 or 2")
        r = self.robot
        for offset, value in enumerate(values, address):
            if offset == 100:
                r.refresh_watchdog(value)
            elif offset == 101:
                r.set_watchdog_timeout(value)
            elif value == 1:
                r.reset()
            else:
                r.abort_queue()

    def _write_mailbox(self, address: int, values: list[int]) -> None:
        n = len(values)
        if address != MAILBOX[0] or n % 8 or not 1 <= n // 8 <= MAX_BATCH:
            raise ModbusException(
                ModbusException.ILLEGAL_VALUE, "mailbox takes 8 x 1..15 registers at 1000"
            )
        commands = [
            Command(
                seq=(values[i] << 16) | values[i + 1],
                opcode=values[i + 2],
                slot=(values[i + 3] << 16) | values[i + 4],
                output=values[i + 5],
                count=values[i + 6],
            )
            for i in range(0, n, 8)
        ]
        self.robot.accept(commands)
