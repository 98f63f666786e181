"""The ``[wwks2]`` configuration table: the WWKS2 front door for pharmacy software.

A pydantic model like every other table (unknown keys refused, every problem reported with
its key path); :mod:`dispenser.config` embeds it as ``Config.wwks2``.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DEFAULT_PORT", "Wwks2Config"]

DEFAULT_PORT = 6050
_INT32 = 2**31 - 1


class Wwks2Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = "127.0.0.1"
    # 6050 is WWKS2's port (6053 when a pharmacy has several systems); 0 picks a free
    # port (tests).
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    # This storage system's WWKS2 subscriber id; 999 is the customary robot id.
    subscriber_id: int = Field(default=999, ge=1, le=_INT32)
    manufacturer: str = Field(default="dispenser", min_length=1, max_length=100)
    product: str = Field(default="dispenserd", min_length=1, max_length=100)
    # WWKS2 has no authentication: only these addresses (or networks, "10.1.2.0/24") may
    # connect; others are refused at once and counted.
    allowed_clients: tuple[str, ...] = Field(default=("127.0.0.1", "::1"), min_length=1)
    # Longest accepted message; a longer one closes that connection.
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=4096, le=100 * 1024 * 1024)
    # WWKS2 OutputDestination -> the machine's output point (1..robot.outputs). Empty:
    # destination N is output point N.
    output_destinations: dict[int, int] = Field(default_factory=dict)
    # Where an IMS article id comes from: "drug_code" (the ArticleId is the drug's GTIN;
    # an EAN-13 is read with a leading 0) or "article_master" (the ArticleMasterSet maps
    # article ids to drug codes).
    article_mapping: Literal["drug_code", "article_master"] = "drug_code"
    # "local": the machine decides on each loaded pack (formulary, expiry ...);
    # "wwks2": it also asks the pharmacy software (InputRequest) and stores only what it
    # allows.
    input_mode: Literal["local", "wwks2"] = "local"
    # How long to wait for the pharmacy software's InputResponse before giving up.
    input_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # The server sends KeepAliveRequest this often after the handshake; a client that sent
    # nothing since the previous one is closed. 0 turns it off.
    keepalive_interval_s: float = Field(default=15.0, ge=0, le=3600)
    # StockInfoMessage broadcasts are coalesced: at most one per interval.
    stock_message_interval_s: float = Field(default=1.0, ge=0.05, le=60)
    # Finished output tasks stay queryable (TaskInfo) at least this long.
    task_retention_days: int = Field(default=7, ge=7, le=3650)

    @field_validator("allowed_clients")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = []
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                bad.append(item)
        if bad:
            raise ValueError(f"not an IP address or network: {', '.join(map(repr, bad))}")
        return value

    @field_validator("output_destinations")
    @classmethod
    def _destinations(cls, value: dict[int, int]) -> dict[int, int]:
        bad = [f"{k} -> {v}" for k, v in value.items() if not (0 < k <= _INT32 and v > 0)]
        if bad:
            raise ValueError(f"destinations and output points are positive numbers: "
                             f"{', '.join(bad)}")
        return value

    def allows(self, address: str) -> bool:
        """Whether a peer at ``address`` may connect (IPv4-mapped IPv6 counts as IPv4)."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in ipaddress.ip_network(item, strict=False)
                   for item in self.allowed_clients)

    def output_point(self, destination: int) -> int | None:
        """The machine's output point for a WWKS2 OutputDestination, None if unknown."""
        if not self.output_destinations:
            return destination if destination > 0 else None
        return self.output_destinations.get(destination)

    def destination_of(self, output_point: int) -> int:
        """The WWKS2 OutputDestination reported for packs that went to ``output_point``."""
        if not self.output_destinations:
            return output_point
        for destination, point in sorted(self.output_destinations.items()):
            if point == output_point:
                return destination
        return output_point
