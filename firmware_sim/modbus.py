"""Modbus PDU handling and frame codecs (MBAP for TCP, address + CRC for RTU).

Pure functions on bytes: no sockets here. ``handle_pdu`` turns a request PDU into a response
PDU against a :class:`RegisterBank`; the transports wrap it in MBAP or RTU frames.
"""

from __future__ import annotations

import struct
from typing import Protocol

from firmware_sim.codes import ModbusException

MAX_READ = 125
MAX_WRITE = 123

_U16 = struct.Struct(">H")
_ADDR_COUNT = struct.Struct(">HH")
_FC16_HEAD = struct.Struct(">HHB")
MBAP = struct.Struct(">HHHB")


class RegisterBank(Protocol):
    """Holding registers; methods raise :class:`ModbusException` to refuse a request."""

    def read(self, address: int, count: int) -> list[int]: ...

    def write(self, address: int, values: list[int]) -> None: ...


def exception_pdu(function: int, code: int) -> bytes:
    return bytes((function | 0x80, code))


def handle_pdu(bank: RegisterBank, pdu: bytes) -> bytes:
    """Execute one request PDU (function code + data) and return the response PDU."""
    function = pdu[0]
    try:
        if function == 3:
            if len(pdu) != 5:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "FC03 length")
            address, count = _ADDR_COUNT.unpack_from(pdu, 1)
            if not 1 <= count <= MAX_READ:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "FC03 count")
            values = bank.read(address, count)
            return struct.pack(f">BB{count}H", 3, 2 * count, *values)
        if function == 6:
            if len(pdu) != 5:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "FC06 length")
            address, value = _ADDR_COUNT.unpack_from(pdu, 1)
            bank.write(address, [value])
            return pdu
        if function == 16:
            if len(pdu) < 6:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "FC16 length")
            address, count, nbytes = _FC16_HEAD.unpack_from(pdu, 1)
            if not 1 <= count <= MAX_WRITE or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "FC16 count")
            bank.write(address, list(struct.unpack_from(f">{count}H", pdu, 6)))
            return pdu[:5]
        raise ModbusException(ModbusException.ILLEGAL_FUNCTION, f"function {function}")
    except ModbusException as exc:
        return exception_pdu(function, exc.code)


# --- RTU ---------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(address: int, pdu: bytes) -> bytes:
    """Address + PDU + CRC (low byte first)."""
    body = bytes((address,)) + pdu
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


def rtu_check(frame: bytes) -> bool:
    """True when the frame's last two bytes are the CRC of the rest."""
    if len(frame) < 4:
        return False
    crc = crc16(frame[:-2])
    return frame[-2] == crc & 0xFF and frame[-1] == crc >> 8


def rtu_request_length(buffer: bytes | bytearray) -> int | None:
    """Length of the request frame at the start of ``buffer`` judged by its function code.

    None when the buffer is too short to tell, 0 when the function code has no known
    request length (the frame then ends at the next silent interval).
    """
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if function in (3, 6):
        return 8
    if function == 16:
        if len(buffer) < 7:
            return None
        return 9 + buffer[6]
    return 0
