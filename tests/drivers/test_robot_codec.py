"""Robot codec: exact registers from docs/robot-protocol.md and a round-trip property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.robot import codec
from drivers.robot.codec import (
    Command,
    FaultCode,
    InvalidReason,
    MachineState,
    Opcode,
    Result,
    decode_commands,
    decode_completion,
    decode_input,
    decode_status,
    encode_commands,
    ring_reads,
)


def test_worked_example_commands_encode_to_the_documented_registers() -> None:
    # docs/robot-protocol.md §5 step 2
    regs = encode_commands(
        [
            Command(seq=42, opcode=Opcode.PICK, slot=5203, output=2, count=2),
            Command(seq=43, opcode=Opcode.RELEASE_TOTE, output=2),
        ]
    )
    assert regs == [
        0x0000, 0x002A, 0x0003, 0x0000, 0x1453, 0x0002, 0x0002, 0x0000,
        0x0000, 0x002B, 0x0004, 0x0000, 0x0000, 0x0002, 0x0000, 0x0000,
    ]  # fmt: skip


def test_worked_example_completions_decode() -> None:
    ring = [
        0x0000, 0x002A, 0x0003, 0x0000, 0x0002, 0x0000, 0x1453, 0x0002,
        0x0000, 0x002B, 0x0004, 0x0000, 0x0000, 0x0000, 0x0000, 0x0002,
    ]  # fmt: skip
    first = decode_completion(1, ring[:8])
    second = decode_completion(2, ring[8:])
    assert first == codec.Completion(
        number=1, seq=42, opcode=3, result=Result.OK, detail=2, slot=5203, output=2
    )
    assert second.seq == 43 and second.opcode == Opcode.RELEASE_TOTE and second.output == 2
    assert first.invalid_reason is None


def test_invalid_completion_exposes_its_reason() -> None:
    c = decode_completion(7, [0, 9, 3, 6, 8, 0, 1, 1])
    assert c.result is Result.INVALID
    assert c.invalid_reason is InvalidReason.NOT_HOMED
    unknown = decode_completion(8, [0, 10, 99, 6, 1, 0, 0, 0])
    assert unknown.opcode == 99 and unknown.invalid_reason is InvalidReason.UNKNOWN_OPCODE


def test_large_seq_and_slot_use_high_word_first() -> None:
    regs = encode_commands([Command(seq=0x12345678, opcode=Opcode.SCAN_SLOT, slot=0x0001_0002)])
    assert regs == [0x1234, 0x5678, 5, 0x0001, 0x0002, 0, 0, 0]


@pytest.mark.parametrize(
    "cmd",
    [
        Command(seq=0, opcode=Opcode.HOME),
        Command(seq=2**32, opcode=Opcode.HOME),
        Command(seq=1, opcode=Opcode.PICK, slot=-1),
        Command(seq=1, opcode=Opcode.PICK, output=70000),
        Command(seq=1, opcode=Opcode.PICK, count=-2),
    ],
)
def test_values_that_do_not_fit_are_refused(cmd: Command) -> None:
    with pytest.raises(codec.CodecError):
        encode_commands([cmd])


def _status_regs() -> list[int]:
    regs = [0] * 32
    regs[0:12] = [1, 256, 1, 0, 65535, 3, 32, 1, 0b1011, 4, 0b0101, 2]
    regs[12:20] = [0x0001, 0x0002, 0, 41, 0, 70, 0, 42]
    regs[20:26] = [2000, 2, 25, 200, 10, 40]
    return regs


def test_status_block_decodes_every_field() -> None:
    s = decode_status(_status_regs())
    assert (s.protocol_version, s.firmware_version) == (1, 256)
    assert s.machine_state is MachineState.BUSY and s.fault_code is FaultCode.NONE
    assert (s.heartbeat, s.queue_depth, s.queue_capacity, s.queue_free) == (65535, 3, 32, 29)
    assert s.door_open and s.homed and s.input_present is True
    assert not s.watchdog_armed and s.estop_pressed
    assert s.output_count == 4 and s.output_full == frozenset({1, 3})
    assert s.input_count == 2
    assert s.last_accepted_seq == 0x0001_0002
    assert (s.last_completed_seq, s.completion_count, s.executing_seq) == (41, 70, 42)
    assert s.watchdog_timeout_ms == 2000
    assert (s.sides, s.levels, s.columns, s.slot_capacity, s.tote_capacity) == (2, 25, 200, 10, 40)


def test_status_with_undocumented_state_or_wrong_length_is_an_error() -> None:
    regs = _status_regs()
    regs[2] = 9
    with pytest.raises(codec.CodecError, match="machine_state"):
        decode_status(regs)
    with pytest.raises(codec.CodecError, match="32 registers"):
        decode_status(_status_regs()[:31])


def test_input_scan_text_is_two_bytes_per_register_high_first() -> None:
    text = b"0104012345678901\x1d10AB"
    regs = [1, len(text)] + [0] * 62
    padded = text + b"\0"
    for i in range(0, len(padded), 2):
        regs[2 + i // 2] = (padded[i] << 8) | padded[i + 1]
    scan = decode_input(regs)
    assert scan.present and scan.data == text.decode()
    assert decode_input([0] * 64) == codec.InputScan(present=False, data="")


def test_ring_reads_are_as_few_as_possible_and_wrap() -> None:
    assert ring_reads(0, 2) == [(2000, 16, 1)]
    assert ring_reads(5, 5) == []
    # 60 -> entries 60..63 then 0..3
    assert ring_reads(60, 68) == [(2000 + 60 * 8, 32, 61), (2000, 32, 65)]
    # the whole ring takes five reads of at most 120 registers
    reads = ring_reads(100, 164)
    assert len(reads) == 5 and all(n <= 120 for _, n, _ in reads)
    assert sum(n for _, n, _ in reads) == 512


commands = st.builds(
    Command,
    seq=st.integers(1, 2**32 - 1),
    opcode=st.sampled_from(Opcode),
    slot=st.integers(0, 2**32 - 1),
    output=st.integers(0, 0xFFFF),
    count=st.integers(0, 0xFFFF),
)


@given(st.lists(commands, max_size=15))
def test_command_codec_round_trips(cmds: list[Command]) -> None:
    regs = encode_commands(cmds)
    assert len(regs) == 8 * len(cmds)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert all(regs[i + 7] == 0 for i in range(0, len(regs), 8))
    assert decode_commands(regs) == cmds


@given(st.integers(0, 10_000), st.integers(0, 64))
def test_ring_reads_cover_exactly_the_asked_completions(after: int, n: int) -> None:
    numbers = []
    for address, count, first in ring_reads(after, after + n):
        assert address >= 2000 and address + count <= 2512 and count <= 120
        entries = count // 8
        for k in range(entries):
            assert (address - 2000) // 8 + k == (first + k - 1) % 64
            numbers.append(first + k)
    assert numbers == list(range(after + 1, after + n + 1))


entries = st.lists(
    st.tuples(
        st.integers(1, 2**32 - 1),
        st.integers(0, 0xFFFF),
        st.sampled_from(Result),
        st.integers(0, 0xFFFF),
        st.integers(0, 2**32 - 1),
        st.integers(0, 0xFFFF),
    ),
    min_size=1,
    max_size=15,
)


@given(st.integers(1, 10_000), entries)
def test_completions_decoded_in_one_block_are_the_documented_entries(
    first: int, items: list[tuple[int, int, Result, int, int, int]]
) -> None:
    regs: list[int] = []
    for seq, opcode, result, detail, slot, output in items:
        regs += [seq >> 16, seq & 0xFFFF, opcode, result, detail, slot >> 16, slot & 0xFFFF, output]
    block = codec.decode_completions(first, regs)
    expected = [
        codec.Completion(first + k, seq, opcode, result, detail, slot, output)
        for k, (seq, opcode, result, detail, slot, output) in enumerate(items)
    ]
    assert block == expected
    assert [hash(c) for c in block] == [hash(c) for c in expected]
    assert block[0] == decode_completion(first, regs[:8])
    assert all(type(c.result) is Result for c in block)


def test_completions_block_is_frozen_and_checked_like_single_entries() -> None:
    (c,) = codec.decode_completions(3, [0, 9, 3, 0, 1, 0, 5, 2])
    with pytest.raises(AttributeError):
        c.detail = 2  # type: ignore[misc]
    with pytest.raises(codec.CodecError, match="unknown result 8"):
        codec.decode_completions(1, [0, 9, 3, 0, 1, 0, 5, 2, 0, 10, 3, 8, 0, 0, 5, 2])
    with pytest.raises(codec.CodecError, match="not a u16"):
        codec.decode_completions(1, [0, 9, 3, 0, 1, 0, 5, 70000])
    with pytest.raises(codec.CodecError, match="multiple of 8"):
        codec.decode_completions(1, [0] * 12)
    with pytest.raises(codec.CodecError, match="8 registers"):
        decode_completion(1, [0] * 16)


def test_status_fault_code_and_register_range_are_checked() -> None:
    regs = _status_regs()
    regs[3] = 6
    with pytest.raises(codec.CodecError, match="fault_code"):
        decode_status(regs)
    regs = _status_regs()
    regs[30] = -1
    with pytest.raises(codec.CodecError, match="not a u16"):
        decode_status(regs)
    regs = _status_regs()
    regs[10] = 0xFFFF
    assert decode_status(regs).output_full == frozenset(range(1, 17))


def test_encoding_names_the_field_that_does_not_fit() -> None:
    with pytest.raises(codec.CodecError, match="output=70000"):
        encode_commands([Command(1, Opcode.PICK, 3, 1, 1), Command(2, Opcode.PICK, 3, 70000, 1)])
