"""Read-only views the core hands out. Views may carry patient data (for labels and
packing slips); never log them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from dispenser.billing import BillingLine
from dispenser.checks import Hold
from dispenser.states import OrderState, PackState, ShipmentState


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    role: str


SYSTEM = Actor("dispenser", "system")


@dataclass(frozen=True, slots=True)
class ItemView:
    drug_code: str
    quantity: int
    days_supply: int


@dataclass(frozen=True, slots=True)
class OrderView:
    order_id: str
    state: OrderState
    patient_id: str
    priority: str
    received_at: datetime
    items: list[ItemView]
    holds: list[Hold] = field(default_factory=list)
    shipment_id: str | None = None


@dataclass(frozen=True, slots=True)
class PackView:
    pack_id: int
    gtin: str
    batch: str
    expiry: date
    serial: str | None
    state: PackState
    slot: int | None
    shipment_id: str | None
    order_id: str | None


@dataclass(frozen=True, slots=True)
class PackScan:
    """A scan that passed the loading checks."""

    gtin: str
    expiry: date
    batch: str
    serial: str | None
    name: str
    robot: bool


@dataclass(frozen=True, slots=True)
class PickLine:
    item: str  # "<order_id>/<drug_code>"
    drug_code: str
    slot: int
    count: int


@dataclass(frozen=True, slots=True)
class ManualLine:
    item: str
    drug_code: str
    name: str
    quantity: int
    confirmed: list[PackView]
    fridge: bool


@dataclass(frozen=True, slots=True)
class OwedLine:
    item: str
    drug_code: str
    count: int


@dataclass(frozen=True, slots=True)
class ShipmentView:
    shipment_id: str
    state: ShipmentState
    order_ids: list[str]
    patient_id: str
    patient_name: str
    patient_phone: str | None
    address: str
    window_start: datetime
    window_end: datetime
    priority: str
    robot_picks: list[PickLine]
    manual_picks: list[ManualLine]
    picked: list[PackView]
    owed: list[OwedLine]
    short: list[OwedLine]
    billing: list[BillingLine]
    total: Decimal
    covered: Decimal
    self_pay: Decimal
    fridge: bool
    holds: list[Hold]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DiscrepancyView:
    id: int
    time: str
    slot: int
    kind: str
    expected: int
    counted: int
    shipment_id: str | None
