"""Packs as physical objects: identity (GS1 data) and where the robot put them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_GTIN = re.compile(r"^[0-9]{14}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_GS = "\x1d"


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
