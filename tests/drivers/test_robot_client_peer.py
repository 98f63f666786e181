"""RobotClient against a hand-written Modbus TCP peer on loopback.

The peer answers as a test tells it, including answers a correct robot never gives: short
replies, silence, dropped connections. Every one must reach the caller as a typed error.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from dispenser.testing.modbus_peer import (
    ModbusPeer,
    exception_reply,
    read_reply,
    registers_handler,
)
from drivers.robot.client import RobotClient
from drivers.robot.codec import Command, Opcode
from drivers.robot.errors import (
    BadReply,
    CompletionsLost,
    ModbusExceptionReply,
    QueueFull,
    ResetRefused,
    RobotLinkDown,
    RobotTimeout,
    SequenceRejected,
    ShortReply,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def peer() -> AsyncIterator[ModbusPeer]:
    p = ModbusPeer(registers_handler({}))
    await p.start()
    yield p
    await p.stop()


async def test_short_reply_is_an_error_with_expected_and_got(peer: ModbusPeer) -> None:
    peer.handler = lambda fc, body: read_reply([1, 256, 0])
    client = RobotClient.tcp("127.0.0.1", peer.port, timeout_s=0.5)
    with pytest.raises(ShortReply) as err:
        await client.read_status()
    assert (err.value.expected, err.value.got, err.value.address) == (32, 3, 0)
    assert client.stats.errors["short_reply"] == 1
    await client.close()


async def test_longer_reply_than_asked_is_a_bad_reply(peer: ModbusPeer) -> None:
    peer.handler = lambda fc, body: read_reply([0] * 33)
    client = RobotClient.tcp("127.0.0.1", peer.port, timeout_s=0.5)
    with pytest.raises(BadReply):
        await client.read_status()
    await client.close()


@pytest.mark.parametrize(
    ("fc", "code", "error"),
    [(16, 3, SequenceRejected), (16, 6, QueueFull), (16, 4, ModbusExceptionReply)],
)
async def test_mailbox_exception_replies_are_typed(
    peer: ModbusPeer, fc: int, code: int, error: type[ModbusExceptionReply]
) -> None:
    peer.handler = lambda f, body: exception_reply(f, code)
    client = RobotClient.tcp("127.0.0.1", peer.port, timeout_s=0.5)
    with pytest.raises(error) as err:
        await client.queue([Command(seq=1, opcode=Opcode.HOME)])
    assert type(err.value) is error
    assert (err.value.function_code, err.value.exception_code) == (fc, code)
    assert client.stats.errors[f"exception_{code:02d}"] == 1
    await client.close()


async def test_reset_refused_and_read_exception(peer: ModbusPeer) -> None:
    peer.handler = lambda f, body: exception_reply(f, 4 if f == 6 else 2)
    client = RobotClient.tcp("127.0.0.1", peer.port, timeout_s=0.5)
    with pytest.raises(ResetRefused):
        await client.reset()
    with pytest.raises(ModbusExceptionReply) as err:
        await client.read_registers(500, 1)
    assert (err.value.function_code, err.value.exception_code, err.value.address) == (3, 2, 500)
    await client.close()


async def test_silence_is_a_timeout_and_the_link_stays_up(peer: ModbusPeer) -> None:
    answers: list[bool] = [False]

    def handle(fc: int, body: bytes) -> bytes | None:
        return read_reply([7] * struct.unpack(">H", body[2:4])[0]) if answers[0] else None

    peer.handler = handle
    client = RobotClient.tcp("127.0.0.1", peer.port, timeout_s=0.2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RobotTimeout):
        await client.read_registers(0, 2)
    assert 0.15 < loop.time() - t0 < 1.0
    assert client.connected
    answers[0] = True
    assert await client.read_registers(0, 2) == [7, 7]
    await client.close()


async def test_commands_are_written_in_chunks_of_fifteen(peer: ModbusPeer) -> None:
    client = RobotClient.tcp("127.0.0.1", peer.port)
    cmds = [Command(seq=i, opcode=Opcode.PICK, slot=i, output=1, count=1) for i in range(1, 33)]
    await client.queue(cmds)
    writes = [body for fc, body in peer.requests if fc == 16]
    assert [struct.unpack(">HHB", w[:5]) for w in writes] == [
        (1000, 120, 240),
        (1000, 120, 240),
        (1000, 16, 32),
    ]
    assert client.stats.transactions == 3
    await client.close()


async def test_completions_wrap_in_two_reads_and_more_than_64_are_lost(peer: ModbusPeer) -> None:
    regs: dict[int, int] = {}
    for entry in range(64):
        base = 2000 + 8 * entry
        regs.update({base + 1: 1000 + entry, base + 2: 3, base + 4: 1})
    peer.handler = registers_handler(regs)
    client = RobotClient.tcp("127.0.0.1", peer.port)
    got = await client.read_completions(62, 66)  # entries 62, 63, 0, 1
    assert [(c.number, c.seq) for c in got] == [(63, 1062), (64, 1063), (65, 1000), (66, 1001)]
    reads = [struct.unpack(">HH", b[:4]) for fc, b in peer.requests if fc == 3]
    assert reads == [(2000 + 62 * 8, 16), (2000, 16)]
    assert await client.read_completions(66, 66) == []
    with pytest.raises(CompletionsLost):
        await client.read_completions(1, 66)
    await client.close()


async def test_link_down_fails_fast_then_reconnects_with_backoff() -> None:
    p = ModbusPeer(registers_handler({0: 1}))
    await p.start()
    port = p.port
    client = RobotClient.tcp("127.0.0.1", port, timeout_s=0.3, backoff_s=(0.2, 0.8))
    assert await client.read_registers(0, 1) == [1]
    await p.stop()  # the robot goes away
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RobotLinkDown):
        await client.read_registers(0, 1)
    assert loop.time() - t0 < 0.25  # noticed the closed connection, not a timeout
    assert not client.connected
    # until the next attempt is due calls fail at once without touching the network
    t0 = loop.time()
    with pytest.raises(RobotLinkDown, match="next attempt"):
        await client.read_registers(0, 1)
    assert loop.time() - t0 < 0.05
    # attempts happen and fail while the robot is away; the delay grows up to the bound
    attempts_before = client.stats.errors["connect_failed"]
    deadline = loop.time() + 1.6
    while loop.time() < deadline:
        with contextlib.suppress(RobotLinkDown):
            await client.read_registers(0, 1)
        await asyncio.sleep(0.02)
    attempts = client.stats.errors["connect_failed"] - attempts_before
    assert 2 <= attempts <= 4  # 0.2 + 0.4 + 0.8 (+0.8): not one per call
    # the robot is back: the next due attempt reconnects, and success resets the backoff
    p2 = ModbusPeer(registers_handler({0: 2}))
    await p2.start(port)
    deadline = loop.time() + 2.0
    value = None
    while value is None and loop.time() < deadline:
        try:
            value = await client.read_registers(0, 1)
        except RobotLinkDown:
            await asyncio.sleep(0.05)
    assert value == [2]
    assert client.stats.reconnects == 1
    p2.drop_connections()
    await asyncio.sleep(0.05)
    with pytest.raises(RobotLinkDown):
        await client.read_registers(0, 1)
    await asyncio.sleep(0.25)  # back to the lower bound after a successful call
    assert await client.read_registers(0, 1) == [2]
    assert client.stats.reconnects == 2
    await client.close()
    await p2.stop()


async def test_peer_closing_mid_request_is_link_down_not_timeout(peer: ModbusPeer) -> None:
    peer.handler = lambda fc, body: "close"
    client = RobotClient.tcp("127.0.0.1", peer.port, timeout_s=2.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RobotLinkDown):
        await client.read_status()
    assert loop.time() - t0 < 1.0
    await client.close()


async def test_no_robot_listening_is_link_down() -> None:
    p = ModbusPeer(registers_handler({}))
    await p.start()
    port = p.port
    await p.stop()
    client = RobotClient.tcp("127.0.0.1", port, timeout_s=0.3)
    with pytest.raises(RobotLinkDown):
        await client.connect()
    await client.close()
    with pytest.raises(RobotLinkDown, match="closed"):
        await client.read_status()


async def test_one_request_at_a_time(peer: ModbusPeer) -> None:
    client = RobotClient.tcp("127.0.0.1", peer.port)
    results = await asyncio.gather(*(client.read_registers(i, 1) for i in range(20)))
    assert results == [[0]] * 20
    assert client.stats.transactions == 20
    assert client.stats.latency_p50_s is not None
    await client.close()


@pytest.mark.parametrize("count", [1, 2, 32, 120, 125])
def test_driver_pdus_encode_and_decode_like_pymodbus(count: int) -> None:
    import os

    from pymodbus.pdu.register_message import (
        ReadHoldingRegistersResponse,
        WriteMultipleRegistersRequest,
    )

    from drivers.robot.client import _ReadHoldingRegistersReply, _WriteMultipleRegistersRequest

    data = bytes([2 * count]) + os.urandom(2 * count)
    ours, theirs = _ReadHoldingRegistersReply(), ReadHoldingRegistersResponse()
    ours.decode(data)
    theirs.decode(data)
    assert ours.registers == theirs.registers
    assert f"registers={count}" in str(ours)
    regs = [(v * 7919) & 0xFFFF for v in range(count)]
    request = _WriteMultipleRegistersRequest(address=1000, registers=regs, dev_id=1)
    assert request.encode() == WriteMultipleRegistersRequest(address=1000, registers=regs).encode()
