"""The simulator's own frame codec: CRC, RTU framing, PDU handling (exact bytes)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from dispenser.testing import modbus_client as client
from firmware_sim.modbus import crc16, handle_pdu, rtu_check, rtu_frame, rtu_request_length
from firmware_sim.registers import RobotRegisters
from firmware_sim.robot import Robot


def test_crc_of_the_textbook_frame() -> None:
    # Read 10 holding registers from address 0 of device 1: CRC bytes C5 CD on the wire.
    assert rtu_frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")


@given(st.binary(max_size=256))
def test_crc_agrees_with_a_bitwise_implementation(data: bytes) -> None:
    assert crc16(data) == client.crc16(data)


@given(st.integers(0, 247), st.binary(min_size=1, max_size=252))
def test_rtu_frame_round_trip(address: int, pdu: bytes) -> None:
    frame = rtu_frame(address, pdu)
    assert rtu_check(frame)
    assert frame[0] == address and frame[1:-2] == pdu


@given(st.integers(0, 247), st.binary(min_size=1, max_size=64), st.data())
def test_any_single_bit_error_is_detected(address: int, pdu: bytes, data: st.DataObject) -> None:
    frame = bytearray(rtu_frame(address, pdu))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 1 << (bit % 8)
    assert not rtu_check(bytes(frame))


requests = st.one_of(
    st.tuples(st.integers(0, 65535), st.integers(0, 200)).map(lambda t: client.read_pdu(*t)),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(
        lambda t: client.write_pdu(t[0], [t[1]])
    ),
    st.tuples(st.integers(0, 65535), st.lists(st.integers(0, 65535), min_size=2, max_size=123)).map(
        lambda t: client.write_pdu(*t)
    ),
)


@given(st.integers(1, 247), requests, st.binary(max_size=20))
def test_request_length_finds_the_frame_end(address: int, pdu: bytes, tail: bytes) -> None:
    frame = rtu_frame(address, pdu)
    stream = frame + tail
    for cut in range(1, len(frame)):
        assert rtu_request_length(stream[:cut]) in (None, len(frame))
    assert rtu_request_length(stream) == len(frame)


@given(requests)
def test_every_request_gets_a_well_formed_response(pdu: bytes) -> None:
    response = handle_pdu(RobotRegisters(Robot()), pdu)
    if response[0] & 0x80:
        assert response[0] == pdu[0] | 0x80 and len(response) == 2
        assert response[1] in (2, 3, 4, 6)
    elif pdu[0] == 3:
        assert response[1] == 2 * struct.unpack(">H", pdu[3:5])[0]
    elif pdu[0] == 6:
        assert response == pdu
    else:
        assert response == pdu[:5]


def test_exact_bytes_of_a_status_read_and_an_exception() -> None:
    bank = RobotRegisters(Robot())
    # protocol_version 1, firmware_version 0x0100
    assert handle_pdu(bank, bytes.fromhex("0300000002")) == bytes.fromhex("030400010100")
    assert handle_pdu(bank, bytes.fromhex("0400000001")) == bytes.fromhex("8401")
    assert handle_pdu(bank, bytes.fromhex("0300200001")) == bytes.fromhex("8302")
