"""Packs as physical objects: identity (GS1 data) and where the robot put them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_GTIN = re.compile(r"^[0-9]{14}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_GS = "\x1d"
# How a group separator is typed where the control character cannot be (a shell, a file).
GS_SPELLINGS = ("<GS>", "{GS}", "\\x1d", "\\x1D", "^]")
# Symbology identifiers a scanner may put in front (GS1 DataMatrix, GS1-128, GS1 QR).
_SYMBOLOGY = ("]d2", "]C1", "]Q3")
# The elements a pack's code carries: fixed-length GTIN and expiry, variable batch, serial.
_FIXED = {"01": 14, "17": 6}
_VARIABLE = ("10", "21")


class PackError(ValueError):
    """A pack description that no physical pack could have."""


@dataclass(slots=True)
class Pack:
    """One box. ``pick_seq`` is the seq of the PICK that took it out of storage, if any."""

    gtin: str
    batch: str
    expiry: str
    serial: str
    pick_seq: int | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Pack:
        if not isinstance(data, dict):
            raise PackError("a pack is an object with gtin, batch, expiry, serial")
        unknown = set(data) - {"gtin", "batch", "expiry", "serial", "pick_seq"}
        if unknown:
            raise PackError(f"unknown pack fields: {sorted(unknown)}")
        gtin = data.get("gtin")
        batch = data.get("batch", "")
        expiry = data.get("expiry", "")
        serial = data.get("serial", "")
        if not isinstance(gtin, str) or not _GTIN.match(gtin):
            raise PackError(f"gtin must be 14 digits, got {gtin!r}")
        for name, value in (("batch", batch), ("serial", serial)):
            if not isinstance(value, str) or len(value) > 20 or _GS in value:
                raise PackError(f"{name} must be text of at most 20 characters, got {value!r}")
        if not isinstance(expiry, str) or (expiry and not _DATE.match(expiry)):
            raise PackError(f"expiry must be YYYY-MM-DD, got {expiry!r}")
        pick_seq = data.get("pick_seq")
        if pick_seq is not None and not isinstance(pick_seq, int):
            raise PackError("pick_seq must be an integer")
        return cls(gtin, batch, expiry, serial, pick_seq)

    @classmethod
    def from_scan(cls, text: str) -> Pack:
        """The pack a GS1 element string describes: (01) GTIN, (17) expiry YYMMDD, (10)
        batch, (21) serial, in any order; a variable-length element ends at a group
        separator (the character, or one of ``GS_SPELLINGS``) or at the end."""
        data = text.strip()
        for spelling in GS_SPELLINGS:
            data = data.replace(spelling, _GS)
        if data.startswith(_SYMBOLOGY):
            data = data[3:]
        found: dict[str, str] = {}
        i = 0
        while i < len(data):
            if data[i] == _GS:
                i += 1
                continue
            ai = data[i:i + 2]
            if ai in _FIXED:
                size = _FIXED[ai]
                value = data[i + 2:i + 2 + size]
                if len(value) != size or not value.isdigit():
                    raise PackError(f"({ai}) takes {size} digits, got {value!r}")
                i += 2 + size
            elif ai in _VARIABLE:
                end = data.find(_GS, i + 2)
                end = len(data) if end < 0 else end
                value = data[i + 2:end]
                i = end
            else:
                raise PackError(f"{data[i:i + 8]!r} at position {i + 1}: the input scanner "
                                "reads (01) GTIN, (17) expiry, (10) batch and (21) serial")
            if ai in found:
                raise PackError(f"({ai}) appears twice")
            found[ai] = value
        if "01" not in found:
            raise PackError("the scan has no GTIN (01)")
        expiry = found.get("17", "")
        if expiry:
            expiry = f"20{expiry[:2]}-{expiry[2:4]}-{expiry[4:]}"
        return cls.from_dict({"gtin": found["01"], "batch": found.get("10", ""),
                              "expiry": expiry, "serial": found.get("21", "")})

    def scan_text(self) -> str:
        """The element string as typed in a shell: the group separator spelled ``<GS>``."""
        return self.gs1().replace(_GS, "<GS>")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gtin": self.gtin,
            "batch": self.batch,
            "expiry": self.expiry,
            "serial": self.serial,
        }
        if self.pick_seq is not None:
            out["pick_seq"] = self.pick_seq
        return out

    def gs1(self) -> str:
        """The GS1 element string the input scanner reads (no ``]d2`` prefix).

        Fixed-length fields first; the batch is variable length, so a GS ends it when a
        serial follows. A pack without expiry or batch simply lacks that element.
        """
        parts = ["01", self.gtin]
        if self.expiry:
            parts += ["17", self.expiry[2:4], self.expiry[5:7], self.expiry[8:10]]
        if self.batch:
            parts += ["10", self.batch]
            if self.serial:
                parts.append(_GS)
        if self.serial:
            parts += ["21", self.serial]
        return "".join(parts)

    def same_article(self, other: Pack) -> bool:
        """True when both packs may share a slot: same drug (GTIN) and same batch."""
        return self.gtin == other.gtin and self.batch == other.batch
