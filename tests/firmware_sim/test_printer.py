"""The label printer: ZPL formats kept as labels, ~HS in each state, buffer while not ready."""

from __future__ import annotations

import asyncio
import os
import select
import termios
import time
import tty

import pytest

from firmware_sim import Simulator
from firmware_sim.printer import Printer

LABEL = b"^XA^FO20,20^A0N,30,30^FDOrder 1001^FS^XZ"


def host_status(reply: bytes) -> dict[str, str]:
    """Parse the three STX...ETX CR LF strings of ~HS into the manual's field letters."""
    strings = reply.split(b"\r\n")
    assert strings[-1] == b"" and len(strings) == 4
    fields = []
    for s in strings[:3]:
        assert s[:1] == b"\x02" and s[-1:] == b"\x03"
        fields.append(s[1:-1].decode().split(","))
    one, two, three = fields
    assert len(one) == 12 and len(two) == 11 and len(three) == 2
    return {
        "paper_out": one[1], "pause": one[2], "formats": one[4], "partial": one[7],
        "head_up": two[2], "labels_remaining": two[8],
    }  # fmt: skip


def test_formats_are_split_and_kept() -> None:
    p = Printer()
    assert p.feed(b"noise" + LABEL + b"\r\n" + LABEL.replace(b"1001", b"1002")) == b""
    assert [label["zpl"] for label in p.labels] == [
        LABEL.decode(),
        LABEL.decode().replace("1001", "1002"),
    ]
    assert all(label["printed"] for label in p.labels)


def test_formats_split_across_writes_and_host_status_in_the_middle() -> None:
    p = Printer()
    replies = b""
    for i in range(0, len(LABEL), 3):
        replies += p.feed(LABEL[i : i + 3])
        if i == 9:
            replies += p.feed(b"~H")
            replies += p.feed(b"S")
    assert host_status(replies)["partial"] == "1"
    assert [label["zpl"] for label in p.labels] == [LABEL.decode()]  # ~HS not in the label


@pytest.mark.parametrize(
    ("condition", "flag"),
    [("paper_out", "paper_out"), ("head_open", "head_up"), ("paused", "pause")],
)
def test_not_ready_buffers_formats_until_cleared(condition: str, flag: str) -> None:
    p = Printer()
    assert host_status(p.feed(b"~HS")) == {
        "paper_out": "0", "pause": "0", "formats": "000", "partial": "0",
        "head_up": "0", "labels_remaining": "00000000",
    }  # fmt: skip
    p.set_condition(condition, True)
    status = host_status(p.feed(LABEL + LABEL + b"~HS"))
    assert status[flag] == "1" and status["formats"] == "002"
    assert [label["printed"] for label in p.labels] == [False, False]
    p.set_condition(condition, False)
    status = host_status(p.feed(b"~hs"))
    assert status[flag] == "0" and status["formats"] == "000"
    assert [label["printed"] for label in p.labels] == [True, True]


def test_resume_and_cancel_all() -> None:
    p = Printer()
    p.feed(b"~PP" + LABEL)
    assert p.state()["buffered"] == 1
    p.feed(b"~PS")
    assert p.labels[0]["printed"] and not p.paused
    p.set_condition("paper_out", True)
    p.feed(LABEL + LABEL)
    p.feed(b"~JA")
    assert host_status(p.feed(b"~HS"))["formats"] == "000"
    p.set_condition("paper_out", False)
    assert [(label["printed"], label["cancelled"]) for label in p.labels] == [
        (True, False),
        (False, True),
        (False, True),
    ]


def _exchange(path: str, data: bytes, wait: float = 0.3) -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        termios.tcflush(fd, termios.TCIOFLUSH)
        os.write(fd, data)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and out.count(b"\r\n") < 3 * data.count(b"~HS"):
            if select.select([fd], [], [], 0.05)[0]:
                out += os.read(fd, 4096)
        return out
    finally:
        os.close(fd)


async def test_printer_on_its_pty_in_each_state(sim: Simulator) -> None:
    assert sim.printer_link is not None and os.path.islink(sim.printer_link)
    link = sim.printer_link
    reply = await asyncio.to_thread(_exchange, link, LABEL + b"~HS")
    assert host_status(reply)["formats"] == "000"
    for fault, flag in (("paper_out", "paper_out"), ("head_open", "head_up"),
                        ("printer_pause", "pause")):  # fmt: skip
        sim.inject(fault)
        reply = await asyncio.to_thread(_exchange, link, LABEL + b"~HS")
        status = host_status(reply)
        assert status[flag] == "1" and status["formats"] == "001"
        sim.clear(fault)
    ledger = sim.ledger()
    assert len(ledger["labels"]) == 4 and all(label["printed"] for label in ledger["labels"])
    assert ledger["labels"][0]["zpl"] == LABEL.decode()
    assert ledger["printer"]["ready"]


def test_byte_by_byte_stream_gives_the_same_labels() -> None:
    data = b"x^xa^FDa^FS^xz junk ^XA^FDb~HS^FS^XZ^XA^FD^XZ"
    whole = Printer()
    whole.feed(data)
    pieces = Printer()
    replies = b"".join(pieces.feed(data[i : i + 1]) for i in range(len(data)))
    assert [label["zpl"] for label in pieces.labels] == [label["zpl"] for label in whole.labels]
    assert [label["zpl"] for label in whole.labels] == [
        "^xa^FDa^FS^xz",
        "^XA^FDb^FS^XZ",
        "^XA^FD^XZ",
    ]
    assert host_status(replies)["partial"] == "1"
