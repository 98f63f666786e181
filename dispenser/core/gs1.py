"""GS1 DataMatrix pack scans: (01) GTIN, (17) expiry, (10) batch, (21) serial.

Accepts scans with or without the ``]d2`` symbology prefix and with GS (0x1D) separators
after variable-length fields. Expiry day ``00`` means the last day of the month.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date

import biip

from dispenser.core.errors import LoadRefused
from dispenser.core.formulary import is_valid_gtin14

GS = "\x1d"


@dataclass(frozen=True, slots=True)
class ScanData:
    gtin: str
    expiry: date | None
    batch: str | None
    serial: str | None


@functools.lru_cache(maxsize=4096)
def parse_scan(scan: str) -> ScanData:
    """Parse one pack scan; raise ``LoadRefused('unreadable', ...)`` if it is not GS1 with a
    valid GTIN-14. Missing expiry, batch or serial come back as None (the caller decides).

    The last few thousand scans parsed are remembered (the result is immutable): a pack's
    scan is read when staff load it, again when its STORE is planned, and once more from
    the robot's input scanner. A plain pack scan ((01)(17)(10)(21) and nothing else) is
    read without biip (0.4 ms of CPU per parse), with the same result; anything else goes
    through biip."""
    text = scan.strip("\r\n")
    # Some scanners send FNC1 as a leading GS; biip wants it without.
    if text.startswith(GS):
        text = text[1:]
    if not text:
        raise LoadRefused("unreadable", "empty scan; scan the pack's DataMatrix again")
    quick = _pack_scan(text)
    if quick is not None:
        return quick
    return _biip_scan(text)


def _biip_scan(text: str) -> ScanData:
    try:
        result = biip.parse(text)
    except Exception:  # biip raises its own ParseError subclasses and ValueError
        result = None
    message = result.gs1_message if result is not None else None
    if message is None:
        raise LoadRefused("unreadable", "the scan is not a GS1 DataMatrix with (01)(17)(10)"
                                        "(21); rescan, or load the pack by hand")
    fields: dict[str, str] = {}
    expiry: date | None = None
    for element in message.element_strings:
        ai = element.ai.ai
        fields[ai] = element.value
        if ai == "17":
            expiry = element.date
    gtin = fields.get("01", "")
    if not is_valid_gtin14(gtin):
        raise LoadRefused("unreadable", f"GTIN {gtin or '(none)'} in the scan is missing or has "
                                        "a wrong check digit; rescan the pack")
    return ScanData(gtin=gtin, expiry=expiry, batch=fields.get("10") or None,
                    serial=fields.get("21") or None)


# The variable-length fields a plain pack scan may have, with their maximum length; values
# of a plainer character set than GS1's (anything else goes through biip).
_VARIABLE = {"10": 20, "21": 20}
_PLAIN = re.compile(r"[0-9A-Za-z./-]+")


def _pack_scan(text: str) -> ScanData | None:
    """A scan of exactly (01) GTIN-14 with a right check digit, (17) and optionally (10),
    (21), each once, in any order, optionally after ``]d2``; None for anything else."""
    if text.startswith("]d2"):
        text = text[3:]
    fields: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        ai = text[i:i + 2]
        i += 2
        if ai in fields:
            return None
        if ai == "01" or ai == "17":
            size = 14 if ai == "01" else 6
            value = text[i:i + size]
            if len(value) != size or not value.isdigit() or not value.isascii():
                return None
            i += size
            if i < n and text[i] == GS:  # a separator after a fixed field is allowed
                i += 1
        elif ai in _VARIABLE:
            end = text.find(GS, i)
            end = n if end < 0 else end
            value = text[i:end]
            if not 0 < len(value) <= _VARIABLE[ai] or not _PLAIN.fullmatch(value):
                return None
            i = end + 1
        else:
            return None
        fields[ai] = value
    gtin, expiry = fields.get("01"), fields.get("17")
    if gtin is None or expiry is None or not is_valid_gtin14(gtin):
        return None
    day = _expiry(expiry)
    if day is None:
        return None
    return ScanData(gtin=gtin, expiry=day, batch=fields.get("10"), serial=fields.get("21"))


@functools.lru_cache(maxsize=1024)
def _expiry(yymmdd: str) -> date | None:
    """(17) as biip reads it (its century rule, day 00 the month's last day); None when
    biip does not take it. Few distinct dates occur, so each is asked once."""
    try:
        result = biip.parse("17" + yymmdd)
    except Exception:
        return None
    message = result.gs1_message
    if message is None or len(message.element_strings) != 1:
        return None
    return message.element_strings[0].date


def compose_scan(gtin: str, expiry: str, batch: str, serial: str, prefix: bool = True) -> str:
    """Build a scan string (for tests and the simulator): expiry as YYMMDD."""
    return (("]d2" if prefix else "") + f"01{gtin}17{expiry}10{batch}{GS}21{serial}")
