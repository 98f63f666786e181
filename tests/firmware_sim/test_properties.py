"""Property tests: random operations never create, lose or duplicate a pack, and every
accepted command completes exactly once, in acceptance order. Also: the printer's output
does not depend on how the byte stream is cut into reads."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.testing.modbus_client import command, decode_entry
from firmware_sim import Simulator, SimulatorOptions
from firmware_sim.codes import ModbusException
from firmware_sim.printer import Printer

SLOTS = [0, 1, 5203, 9999]
GTINS = ["04150123456782", "09501101530003"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(1, 3), st.sampled_from(GTINS)),
        st.tuples(
            st.just("cmd"),
            st.lists(
                st.one_of(
                    st.tuples(st.just(2), st.sampled_from(SLOTS), st.just(0), st.just(1)),
                    st.tuples(
                        st.just(3), st.sampled_from(SLOTS), st.integers(1, 4), st.integers(1, 4)
                    ),
                    st.tuples(st.just(4), st.just(0), st.integers(1, 4), st.just(0)),
                    st.tuples(
                        st.integers(1, 6),
                        st.sampled_from([*SLOTS, 10000]),
                        st.integers(0, 5),
                        st.integers(0, 11),
                    ),
                ),
                min_size=1,
                max_size=6,
            ),
        ),
        st.tuples(st.just("fault"), st.sampled_from(["jam", "dropped", "estop", "door_open"])),
        st.tuples(st.just("short"), st.sampled_from(SLOTS)),
        st.just(("clear_reset",)),
        st.just(("abort",)),
    ),
    max_size=25,
)


def places(ledger: dict[str, Any]) -> list[str]:
    serials = [p["serial"] for packs in ledger["slots"].values() for p in packs]
    serials += [p["serial"] for p in ledger["input"]]
    serials += [p["serial"] for o in ledger["outputs"].values() for p in o["packs"]]
    serials += [p["serial"] for t in ledger["totes"] for p in t["packs"]]
    for key in ("dropped", "jammed", "removed"):
        serials += [p["serial"] for p in ledger[key]]
    return serials


async def scenario(ops: list[tuple[Any, ...]]) -> None:
    sim = Simulator(SimulatorOptions(tcp_port=None, instant=True))
    await sim.start()
    regs = sim.registers
    seq, accepted, serial = 0, [], 0
    try:
        regs.write(1000, command(seq := seq + 1, 1))
        accepted.append(seq)
        for op in ops:
            if op[0] == "put":
                packs = []
                for _ in range(op[1]):
                    serial += 1
                    packs.append({"gtin": op[2], "batch": "B", "expiry": "2030-01-31",
                                  "serial": f"S{serial}"})  # fmt: skip
                sim.put_input(packs)
            elif op[0] == "cmd":
                values: list[int] = []
                first = seq + 1
                for opcode, slot, output, count in op[1]:
                    seq += 1
                    values += command(seq, opcode, slot, output, count)
                try:
                    regs.write(1000, values)
                    accepted.extend(range(first, seq + 1))
                except ModbusException as exc:
                    assert exc.code == 6  # queue full or controller lost, nothing queued
                    seq = first - 1
            elif op[0] == "fault":
                sim.inject(op[1])
            elif op[0] == "short":
                sim.inject("slot_short", slot=op[1], remove=1)
            elif op[0] == "clear_reset":
                sim.clear()
                regs.write(102, [1])
            else:
                regs.write(102, [2])
            for _ in range(3):
                await asyncio.sleep(0)
        sim.clear()
        regs.write(102, [1])
        for _ in range(200):
            if not sim.robot.queue:
                break
            await asyncio.sleep(0)
        ledger = sim.ledger()
        everything = places(ledger)
        assert sorted(everything) == sorted(f"S{i}" for i in range(1, serial + 1))
        status = regs.status_block()
        count = (status[16] << 16) | status[17]
        assert count == len(accepted)
        ring = regs.read(2000, 120) + regs.read(2120, 120) + regs.read(2240, 120)
        ring += regs.read(2360, 120) + regs.read(2480, 32)
        done = [
            decode_entry(ring[8 * ((c - 1) % 64) : 8 * ((c - 1) % 64) + 8])["seq"]
            for c in range(max(1, count - 63), count + 1)
        ]
        assert done == accepted[-len(done) :]
    finally:
        await sim.stop()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_packs_are_conserved_and_completions_are_exactly_once(ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(scenario(ops))


@given(st.lists(st.sampled_from([b"^XA", b"^FDx", b"^FS", b"^XZ", b"~HS", b"~JA", b"~PP",
                                 b"~PS", b"~", b"junk", b"\r\n"]), max_size=30),
       st.lists(st.integers(1, 7), max_size=40))  # fmt: skip
def test_printer_output_does_not_depend_on_read_boundaries(
    parts: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(parts)
    whole = Printer()
    reply_whole = whole.feed(data)
    pieces = Printer()
    reply_pieces, i = b"", 0
    for cut in [*cuts, len(data)]:
        reply_pieces += pieces.feed(data[i : i + cut])
        i += cut
    reply_pieces += pieces.feed(data[i:])
    assert [(x["zpl"], x["printed"], x["cancelled"]) for x in pieces.labels] == [
        (x["zpl"], x["printed"], x["cancelled"]) for x in whole.labels
    ]
    assert reply_pieces == reply_whole


# --- machine state against an oracle -----------------------------------------------------

EVENTS = ["estop", "release", "door", "close", "reset", "home"]


async def machine_scenario(events: list[str]) -> None:
    sim = Simulator(SimulatorOptions(tcp_port=None, instant=True))
    await sim.start()
    regs = sim.registers
    # Oracle, straight from the tables of protocol §3.1/§3.2 and the RESET rule of §2.2.
    pressed = door = homed = False
    fault = 0
    seq = 0
    try:
        for event in events:
            if event == "estop":
                sim.inject("estop")
                pressed, homed, fault = True, False, 3
            elif event == "release":
                sim.clear("estop")
                pressed = False
            elif event == "door":
                sim.inject("door_open")
                door = True
                fault = fault or 4
            elif event == "close":
                sim.clear("door_open")
                door = False
            elif event == "reset":
                try:
                    regs.write(102, [1])
                    assert not (pressed or door)
                    fault = 0
                except ModbusException as exc:
                    assert exc.code == 4 and (pressed or door)
            elif event == "home" and fault == 0:
                seq += 1
                regs.write(1000, command(seq, 1))
                for _ in range(5):
                    await asyncio.sleep(0)
                homed = True
            status = regs.status_block()
            expected_state = {3: 4, 4: 3}.get(fault, 0 if homed else 6)
            assert (status[2], status[3]) == (expected_state, fault), event
            assert (status[7], status[8] & 1, bool(status[8] & 8)) == (int(door), homed, pressed)
    finally:
        await sim.stop()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(EVENTS), max_size=30))
def test_machine_state_follows_the_tables(events: list[str]) -> None:
    asyncio.run(machine_scenario(events))
