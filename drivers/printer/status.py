"""Parse the printer's answer to ``~HS`` (Zebra host status) into a typed status. No I/O.

The answer is three strings, each ``STX ... ETX CR LF``::

    aaa,b,c,dddd,eee,f,g,h,iii,j,k,l      b paper out, c pause, eee formats in buffer,
                                          f buffer full, h partial format, j corrupt RAM,
                                          k under temperature, l over temperature
    mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www      o head up, p ribbon out, t label waiting,
                                          uuuuuuuu labels remaining in batch
    xxxx,y                                password, static RAM installed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

STX = 0x02
ETX = 0x03
FRAME_END = b"\x03\r\n"


class NotReadyReason(Enum):
    PAPER_OUT = "paper_out"
    HEAD_OPEN = "head_open"
    PAUSED = "paused"
    RIBBON_OUT = "ribbon_out"
    BUFFER_FULL = "buffer_full"
    CORRUPT_RAM = "corrupt_ram"
    UNDER_TEMPERATURE = "under_temperature"
    OVER_TEMPERATURE = "over_temperature"
    NO_RESPONSE = "no_response"
    LINK_DOWN = "link_down"
    NOT_CONFIRMED = "not_confirmed"


class PrinterError(Exception):
    """Base of the printer driver's errors."""


class MalformedStatus(PrinterError):
    """The printer's answer to ``~HS`` is not three well-formed host status strings."""

    def __init__(self, message: str, raw: bytes) -> None:
        self.raw = raw
        super().__init__(f"{message}: {raw[:120]!r}")


@dataclass(frozen=True)
class PrinterStatus:
    """What the printer said about itself; ``ready`` is True only when ``reasons`` is empty."""

    reasons: list[NotReadyReason] = field(default_factory=list)
    formats_in_buffer: int = 0
    partial_format: bool = False
    label_waiting: bool = False
    labels_remaining: int = 0

    @property
    def ready(self) -> bool:
        return not self.reasons

    @classmethod
    def no_response(cls) -> PrinterStatus:
        return cls(reasons=[NotReadyReason.NO_RESPONSE])


def _split_frames(raw: bytes) -> list[bytes]:
    frames: list[bytes] = []
    rest = raw.lstrip(b"\r\n")
    while rest:
        if rest[0] != STX:
            raise MalformedStatus("host status string does not start with STX", raw)
        end = rest.find(FRAME_END)
        if end < 0:
            raise MalformedStatus("host status string does not end with ETX CR LF", raw)
        frames.append(rest[1:end])
        rest = rest[end + len(FRAME_END) :].lstrip(b"\r\n")
    return frames


def _fields(frame: bytes, widths: list[int], which: str, raw: bytes) -> list[int]:
    parts = frame.split(b",")
    if len(parts) != len(widths):
        raise MalformedStatus(f"{which} host status string needs {len(widths)} fields", raw)
    values: list[int] = []
    for part, width in zip(parts, widths, strict=True):
        if len(part) != width or not part.isdigit():
            raise MalformedStatus(f"{which} host status field {part!r} is not {width} digits", raw)
        values.append(int(part))
    return values


def _flag(value: int, name: str, raw: bytes) -> bool:
    if value not in (0, 1):
        raise MalformedStatus(f"host status flag {name} is {value}, not 0 or 1", raw)
    return value == 1


def parse_host_status(raw: bytes) -> PrinterStatus:
    """Parse a complete ``~HS`` answer; raise :class:`MalformedStatus` for anything else."""
    frames = _split_frames(raw)
    if len(frames) != 3:
        raise MalformedStatus(f"expected 3 host status strings, got {len(frames)}", raw)
    one = _fields(frames[0], [3, 1, 1, 4, 3, 1, 1, 1, 3, 1, 1, 1], "first", raw)
    two = _fields(frames[1], [3, 1, 1, 1, 1, 1, 1, 1, 8, 1, 3], "second", raw)
    _fields(frames[2], [4, 1], "third", raw)
    checks = [
        (one[1], NotReadyReason.PAPER_OUT, "paper out"),
        (one[2], NotReadyReason.PAUSED, "pause"),
        (two[2], NotReadyReason.HEAD_OPEN, "head up"),
        (two[3], NotReadyReason.RIBBON_OUT, "ribbon out"),
        (one[5], NotReadyReason.BUFFER_FULL, "buffer full"),
        (one[9], NotReadyReason.CORRUPT_RAM, "corrupt RAM"),
        (one[10], NotReadyReason.UNDER_TEMPERATURE, "under temperature"),
        (one[11], NotReadyReason.OVER_TEMPERATURE, "over temperature"),
    ]
    reasons = [reason for value, reason, name in checks if _flag(value, name, raw)]
    return PrinterStatus(
        reasons=reasons,
        formats_in_buffer=one[4],
        partial_format=_flag(one[7], "partial format", raw),
        label_waiting=_flag(two[7], "label waiting", raw),
        labels_remaining=two[8],
    )
