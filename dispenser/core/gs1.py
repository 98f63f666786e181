"""GS1 DataMatrix pack scans: (01) GTIN, (17) expiry, (10) batch, (21) serial.

Accepts scans with or without the ``]d2`` symbology prefix and with GS (0x1D) separators
after variable-length fields. Expiry day ``00`` means the last day of the month.
"""

from __future__ import annotations

import functools
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
    the robot's input scanner, and a GS1 parse costs about 100 us."""
    text = scan.strip("\r\n")
    # Some scanners send FNC1 as a leading GS; biip wants it without.
    if text.startswith(GS):
        text = text[1:]
    if not text:
        raise LoadRefused("unreadable", "empty scan; scan the pack's DataMatrix again")
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


def compose_scan(gtin: str, expiry: str, batch: str, serial: str, prefix: bool = True) -> str:
    """Build a scan string (for tests and the simulator): expiry as YYMMDD."""
    return (("]d2" if prefix else "") + f"01{gtin}17{expiry}10{batch}{GS}21{serial}")
