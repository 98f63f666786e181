"""Read-only views the core hands out, and how a shipment's view is built. Views may
carry patient data (for labels and packing slips); never log them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dispenser.core.billing import BillingLine, bill_item, totals
from dispenser.core.checks import Hold
from dispenser.core.states import OrderState, PackState, ShipmentState

if TYPE_CHECKING:
    from dispenser.core.formulary import Drug, Formulary
    from dispenser.core.shipments import Line, Shipment


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
    drug_code: str
    batch: str
    expiry: date
    serial: str | None
    state: PackState
    slot: int | None
    shipment_id: str | None
    order_id: str | None
    task_id: str | None = None  # the output task it was picked for
    # Derived, never stored (``dispenser.core.expiry``): an in-stock pack that can serve
    # no order any more, and one whose expiry day is over. False for packs not in stock.
    near_expiry: bool = False
    expired: bool = False


@dataclass(frozen=True, slots=True)
class StockCounts:
    """Packs in the machine: ``in_stock`` (whatever their expiry), of which
    ``near_expiry`` (expired ones included) and of those ``expired``; ``quarantined``
    (never in stock, never allocated)."""

    in_stock: int
    near_expiry: int
    expired: int
    quarantined: int

    def as_dict(self) -> dict[str, int]:
        return {"in_stock": self.in_stock, "near_expiry": self.near_expiry,
                "expired": self.expired, "quarantined": self.quarantined}


@dataclass(frozen=True, slots=True)
class PackScan:
    """A scan that passed the loading checks."""

    drug_code: str
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


def shipment_view(sh: Shipment, *, lines: Sequence[Line], first_body: Mapping[str, Any] | None,
                  formulary: Formulary, travel: Sequence[tuple[float, int]],
                  pack: Callable[[int], PackView], priority: str) -> ShipmentView:
    """The view of a shipment: ``lines`` are its lines (or, forming or held with nothing
    reserved, its orders' items as asked for), ``first_body`` the body of its first order
    (patient and delivery for the label), ``travel`` the robot's travel key per slot (pick
    lists are sorted by it)."""
    drugs: dict[str, Drug] = {ln.drug_code: formulary[ln.drug_code] for ln in lines}
    robot = [PickLine(ln.item, ln.drug_code, s, n) for ln in lines for s, n in ln.reserved]
    if len(robot) > 1:
        robot.sort(key=lambda p: travel[p.slot])
    manual = [ManualLine(ln.item, ln.drug_code, drugs[ln.drug_code].label, ln.to_send,
                         [pack(p) for p in ln.packs], drugs[ln.drug_code].fridge)
              for ln in lines if not ln.robot]
    billing: list[BillingLine] = [bill_item(ln.order_id, drugs[ln.drug_code], ln.to_send)
                                  for ln in lines if ln.to_send]
    total, covered, self_pay = totals(billing)
    patient = first_body["patient"] if first_body else {}
    delivery = first_body["delivery"] if first_body else {}
    return ShipmentView(
        shipment_id=sh.shipment_id, state=sh.state, order_ids=list(sh.order_ids),
        patient_id=sh.patient_id, patient_name=patient.get("name", ""),
        patient_phone=patient.get("phone"), address=delivery.get("address", ""),
        window_start=sh.window_start,
        window_end=datetime.fromisoformat(delivery["window_end"]) if delivery
        else sh.window_start,
        priority=priority, robot_picks=robot, manual_picks=manual,
        picked=[pack(p) for ln in lines if ln.robot for p in ln.packs],
        owed=[OwedLine(ln.item, ln.drug_code, ln.owed) for ln in lines if ln.owed],
        short=[OwedLine(ln.item, ln.drug_code, ln.short) for ln in lines if ln.short],
        billing=billing, total=total, covered=covered, self_pay=self_pay,
        fridge=any(d.fridge for d in drugs.values()), holds=list(sh.holds),
        created_at=sh.created_at)
