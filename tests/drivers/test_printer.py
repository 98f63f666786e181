"""Printer driver: the ~HS parser with exact answers, and the client over real serial lines
(the simulator's printer pty, a pty nobody answers on, pyserial's loop://)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers.printer.client import LabelsOutcome, Printer, PrintOutcome
from drivers.printer.status import (
    MalformedStatus,
    NotReadyReason,
    PrinterStatus,
    parse_host_status,
)
from drivers.printer.transport import PrinterLinkDown, SerialTransport
from drivers.printer.zpl import Label

pytestmark = pytest.mark.timeout(60)


def hs(one: str, two: str = "001,0,0,0,0,2,6,0,00000000,1,000", three: str = "1234,0") -> bytes:
    return b"".join(b"\x02" + s.encode() + b"\x03\r\n" for s in (one, two, three))


READY = "030,0,0,1218,000,0,0,0,000,0,0,0"


def test_ready_printer() -> None:
    status = parse_host_status(hs(READY))
    assert status == PrinterStatus(reasons=[], formats_in_buffer=0)
    assert status.ready


@pytest.mark.parametrize(
    ("one", "two", "reasons"),
    [
        ("030,1,0,1218,000,0,0,0,000,0,0,0", None, [NotReadyReason.PAPER_OUT]),
        ("030,0,1,1218,000,0,0,0,000,0,0,0", None, [NotReadyReason.PAUSED]),
        (READY, "001,0,1,0,0,2,6,0,00000000,1,000", [NotReadyReason.HEAD_OPEN]),
        (READY, "001,0,0,1,0,2,6,0,00000000,1,000", [NotReadyReason.RIBBON_OUT]),
        ("030,0,0,1218,007,1,0,0,000,0,0,0", None, [NotReadyReason.BUFFER_FULL]),
        (
            "030,1,1,1218,000,0,0,0,000,1,1,1",
            "001,0,1,0,0,2,6,0,00000000,1,000",
            [
                NotReadyReason.PAPER_OUT,
                NotReadyReason.PAUSED,
                NotReadyReason.HEAD_OPEN,
                NotReadyReason.CORRUPT_RAM,
                NotReadyReason.UNDER_TEMPERATURE,
                NotReadyReason.OVER_TEMPERATURE,
            ],
        ),
    ],
)
def test_not_ready_reasons(one: str, two: str | None, reasons: list[NotReadyReason]) -> None:
    raw = hs(one) if two is None else hs(one, two)
    status = parse_host_status(raw)
    assert status.reasons == reasons and not status.ready


def test_counters_and_flags() -> None:
    status = parse_host_status(
        hs("030,0,0,1218,012,0,0,1,000,0,0,0", "001,0,0,0,0,2,6,1,00000042,1,000")
    )
    assert status.formats_in_buffer == 12 and status.partial_format
    assert status.label_waiting and status.labels_remaining == 42 and status.ready


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"~HS",
        hs(READY)[:-3],  # third string cut short
        hs(READY) + hs(READY),  # six strings
        hs("030,0,0,1218,000,0,0,0,000,0,0"),  # 11 fields
        hs("030,x,0,1218,000,0,0,0,000,0,0,0"),
        hs("030,2,0,1218,000,0,0,0,000,0,0,0"),  # a flag that is not 0/1
        hs(READY).replace(b"\x02", b"", 1),
    ],
)
def test_malformed_answers_are_typed_errors(raw: bytes) -> None:
    with pytest.raises(MalformedStatus):
        parse_host_status(raw)


# --- over real serial lines ------------------------------------------------------------

simulator = pytest.importorskip("firmware_sim.simulator", reason="simulator not available")


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Any]:
    s = simulator.Simulator(
        simulator.SimulatorOptions(
            tcp_port=None, printer_link=str(tmp_path / "printer"), instant=True
        )
    )
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def printer(sim: Any) -> AsyncIterator[Printer]:
    p = Printer.serial(sim.printer_link, timeout_s=0.3, confirm_timeout_s=0.5)
    yield p
    await p.close()


def label(text: str = "Zhang Wei") -> bytes:
    return Label(400, 200).text(10, 10, text).code128(10, 60, "SHP-1").build()


async def test_prints_when_ready_and_the_simulator_received_the_exact_bytes(
    sim: Any, printer: Printer
) -> None:
    assert (await printer.status()).ready
    zpl = label("张伟 ^XZ")
    assert await printer.print_label(zpl) == PrintOutcome(printed=True, reasons=[])
    printed = sim.ledger()["labels"]
    assert [(lbl["zpl"].encode(), lbl["printed"]) for lbl in printed] == [(zpl, True)]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("paper_out", NotReadyReason.PAPER_OUT),
        ("head_open", NotReadyReason.HEAD_OPEN),
        ("printer_pause", NotReadyReason.PAUSED),
    ],
)
async def test_not_ready_printer_refuses_and_prints_nothing(
    sim: Any, printer: Printer, fault: str, reason: NotReadyReason
) -> None:
    sim.inject(fault)
    status = await printer.status()
    assert status.reasons == [reason]
    outcome = await printer.print_label(label())
    assert outcome == PrintOutcome(printed=False, reasons=[reason])
    sim.clear(fault)
    assert sim.ledger()["labels"] == []  # nothing waits to print behind the person's back
    assert (await printer.print_label(label())).printed


async def test_fault_between_check_and_print_cancels_the_waiting_format(
    sim: Any, printer: Printer
) -> None:
    # paper runs out right after the status check: the format waits in the printer; the
    # driver reports "not printed" and cancels it so it cannot print later as a duplicate
    original = printer._status_blocking
    calls = 0

    def status_then_paper_out() -> PrinterStatus:
        nonlocal calls
        calls += 1
        result = original()
        if calls == 1:
            sim.inject("paper_out")
        return result

    printer._status_blocking = status_then_paper_out  # type: ignore[method-assign]
    outcome = await printer.print_label(label())
    assert outcome == PrintOutcome(printed=False, reasons=[NotReadyReason.PAPER_OUT])
    await asyncio.sleep(0.05)
    sim.clear("paper_out")
    labels = sim.ledger()["labels"]
    assert len(labels) == 1 and labels[0]["cancelled"] and not labels[0]["printed"]


async def test_silent_line_is_no_response() -> None:
    master, slave = os.openpty()
    try:
        p = Printer.serial(os.ttyname(slave), timeout_s=0.2)
        assert (await p.status()).reasons == [NotReadyReason.NO_RESPONSE]
        assert await p.print_label(label()) == PrintOutcome(False, [NotReadyReason.NO_RESPONSE])
        await p.close()
    finally:
        os.close(master)
        os.close(slave)


async def test_missing_line_is_link_down(tmp_path: Path) -> None:
    p = Printer.serial(str(tmp_path / "no-such-tty"), timeout_s=0.2)
    assert (await p.status()).reasons == [NotReadyReason.LINK_DOWN]
    assert (await p.print_label(label())).reasons == [NotReadyReason.LINK_DOWN]
    with pytest.raises(PrinterLinkDown):
        SerialTransport(str(tmp_path / "no-such-tty"))


async def test_garbage_answer_is_malformed_status() -> None:
    # loop:// echoes what is written: "~HS" comes back instead of a host status
    p = Printer.serial("loop://", timeout_s=0.2)
    with pytest.raises(MalformedStatus):
        await p.status()
    await p.close()


async def test_refuses_bytes_that_are_not_one_label(printer: Printer) -> None:
    with pytest.raises(ValueError):
        await printer.print_label(b"~JA")


def test_serial_transport_moves_exact_bytes_over_a_loop() -> None:
    line = SerialTransport("loop://", timeout_s=0.2)
    try:
        line.write(b"\x02abc\x03\r\n\x02def\x03\r\n")
        assert line.read_until(b"\x03\r\n", count=2) == b"\x02abc\x03\r\n\x02def\x03\r\n"
        line.write(b"partial")
        assert line.read_until(b"\x03\r\n", timeout_s=0.1) == b"partial"  # timed out
        line.write(b"stale")
        line.discard_input()
        assert line.read_until(b"\n", timeout_s=0.05) == b""
    finally:
        line.close()


async def test_printer_line_gone_and_back(tmp_path: Path) -> None:
    link = str(tmp_path / "printer")
    options = simulator.SimulatorOptions(tcp_port=None, printer_link=link)
    first = simulator.Simulator(options)
    await first.start()
    p = Printer.serial(link, timeout_s=0.2)
    try:
        assert (await p.status()).ready
        await first.stop()
        gone = await p.status()
        assert not gone.ready
        assert gone.reasons[0] in (NotReadyReason.LINK_DOWN, NotReadyReason.NO_RESPONSE)
        second = simulator.Simulator(simulator.SimulatorOptions(tcp_port=None, printer_link=link))
        await second.start()
        try:
            back = await p.status()
            if not back.ready:  # the first call after a failure may still see the old line
                back = await p.status()
            assert back.ready
            assert (await p.print_label(label())).printed
        finally:
            await second.stop()
    finally:
        await p.close()


async def test_labels_sent_together_print_in_order_with_one_confirmation(
    sim: Any, printer: Printer
) -> None:
    exchanges = 0
    original = printer._exchange

    async def counting(work: Any) -> Any:
        nonlocal exchanges
        exchanges += 1
        return await original(work)

    printer._exchange = counting  # type: ignore[method-assign]
    first, second = label("label"), label("slip")
    assert await printer.print_labels([first, second]) == LabelsOutcome(printed=2, reasons=[])
    # a status before, then both formats and the status request in one write
    assert exchanges == 2
    printed = sim.ledger()["labels"]
    assert [(lbl["zpl"].encode(), lbl["printed"]) for lbl in printed] == [
        (first, True),
        (second, True),
    ]


async def test_labels_sent_together_into_a_fault_are_all_cancelled(
    sim: Any, printer: Printer
) -> None:
    original = printer._status_blocking

    def status_then_paper_out() -> PrinterStatus:
        result = original()
        sim.inject("paper_out")
        return result

    printer._status_blocking = status_then_paper_out  # type: ignore[method-assign]
    outcome = await printer.print_labels([label("label"), label("slip")])
    assert outcome == LabelsOutcome(printed=0, reasons=[NotReadyReason.PAPER_OUT])
    await asyncio.sleep(0.05)
    sim.clear("paper_out")
    labels = sim.ledger()["labels"]
    assert len(labels) == 2 and all(lbl["cancelled"] and not lbl["printed"] for lbl in labels)


async def test_labels_sent_together_refused_by_a_printer_not_ready(
    sim: Any, printer: Printer
) -> None:
    sim.inject("head_open")
    outcome = await printer.print_labels([label("label"), label("slip")])
    assert outcome == LabelsOutcome(printed=0, reasons=[NotReadyReason.HEAD_OPEN])
    sim.clear("head_open")
    assert sim.ledger()["labels"] == []
