"""Shipments: orders of one patient to one address that share a tote, a label and a
packing slip. In-memory form plus its JSON image in the journal (``shipments.data``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispenser.checks import Hold
from dispenser.states import ShipmentState

# Built once (``json.dumps`` with options builds an encoder per call). The data is a tree
# built for the row, never circular: no check (it took a third of the encoding).
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


@dataclass(slots=True)
class Line:
    """One order item inside a shipment."""

    order_id: str
    drug_code: str
    quantity: int
    days_supply: int
    robot: bool
    reserved: list[list[int]] = field(default_factory=list)  # [[slot, count]] not yet picked
    packs: list[int] = field(default_factory=list)  # picked or confirmed pack ids
    owed: int = 0  # needed but not reserved (stock went missing during picking)
    short: int = 0  # not sent at all (partial dispensing)

    @property
    def item(self) -> str:
        return f"{self.order_id}/{self.drug_code}"

    @property
    def reserved_count(self) -> int:
        """Packs reserved and not yet picked."""
        return sum(n for _, n in self.reserved) if self.reserved else 0

    @property
    def to_send(self) -> int:
        return self.quantity - self.short

    @property
    def done(self) -> bool:
        return len(self.packs) >= self.to_send

    @property
    def as_ordered(self) -> bool:
        """Nothing reserved, picked, owed or short: the order item and nothing more."""
        return not (self.reserved or self.packs or self.owed or self.short)

    def as_json(self) -> list[Any]:
        return [self.order_id, self.drug_code, self.quantity, self.days_supply, self.robot,
                self.reserved, self.packs, self.owed, self.short]

    @classmethod
    def from_json(cls, v: list[Any]) -> Line:
        return cls(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8])


@dataclass(slots=True)
class Shipment:
    shipment_id: str
    seq: int
    patient_id: str
    address_key: str
    state: ShipmentState
    created_at: datetime
    close_at: datetime  # when the merge window ends
    window_start: datetime
    priority_rank: int
    arrival: int  # lowest order seq: first come, first served
    order_ids: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)

    @property
    def urgent(self) -> bool:
        return self.priority_rank == 0

    def schedule_key(self) -> tuple[float, int, int]:
        """Delivery window start, then priority, then arrival.

        The window start is compared as a POSIX timestamp (exact to the microsecond):
        parsed times each carry their own tzinfo object, and aware datetimes with different
        tzinfo objects compare through utcoffset() calls, which made sorting a merge
        round's 10,000 shipments three times slower."""
        return self.window_start.timestamp(), self.priority_rank, self.arrival

    @property
    def lines_as_ordered(self) -> bool:
        """Held with no lines, or lines that are just its orders' items. Such a shipment
        is stored without lines (``"lines": null``) and loads with none: the ``Dispensary``
        makes them from its orders when stock is tried again. When stock is short, most of
        a merge round's shipments are held, and their lines were half of what the round
        encoded and wrote for shipments."""
        return self.state is ShipmentState.HELD and all(ln.as_ordered for ln in self.lines)

    def data_json(self) -> str:
        lines = None if self.lines_as_ordered else [ln.as_json() for ln in self.lines]
        return _ENCODER.encode({
            "close_at": self.close_at.isoformat(), "window_start": self.window_start.isoformat(),
            "priority_rank": self.priority_rank, "arrival": self.arrival,
            "order_ids": self.order_ids, "lines": lines,
            "holds": [[h.code, h.detail, h.drug_code] for h in self.holds],
        })

    @classmethod
    def from_row(cls, shipment_id: str, seq: int, patient_id: str, address_key: str,
                 state: str, created_at: str, data: str) -> Shipment:
        """The shipment of a journal row; stored without lines (see ``lines_as_ordered``),
        it comes with none."""
        d = json.loads(data)
        return cls(shipment_id, seq, patient_id, address_key, ShipmentState(state),
                   datetime.fromisoformat(created_at), datetime.fromisoformat(d["close_at"]),
                   datetime.fromisoformat(d["window_start"]), d["priority_rank"], d["arrival"],
                   d["order_ids"], [Line.from_json(v) for v in d["lines"] or ()],
                   [Hold(*h) for h in d["holds"]])

    def slots_reserved(self) -> set[int]:
        return {s for ln in self.lines for s, _ in ln.reserved}
