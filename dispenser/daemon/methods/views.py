"""Views of the core as JSON for API replies. Lists and events never carry patient data;
only ``shipment.get`` (full) and ``order.get`` do."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from dispenser.core.views import OrderView, PackView, ShipmentView

__all__ = ["iso", "order_json", "pack_json", "shipment_json"]


def iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def order_json(view: OrderView) -> dict[str, Any]:
    return {
        "order_id": view.order_id, "state": view.state.value, "patient_id": view.patient_id,
        "priority": view.priority, "shipment_id": view.shipment_id,
        "received_at": iso(view.received_at),
        "hold_reasons": [h.as_dict() for h in view.holds],
        "items": [{"drug_code": i.drug_code, "quantity": i.quantity,
                   "days_supply": i.days_supply} for i in view.items],
    }


def pack_json(p: PackView) -> dict[str, Any]:
    return {"pack_id": p.pack_id, "drug_code": p.drug_code, "batch": p.batch,
            "expiry": iso(p.expiry), "serial": p.serial, "state": p.state.value, "slot": p.slot,
            "shipment_id": p.shipment_id, "order_id": p.order_id, "task_id": p.task_id,
            "near_expiry": p.near_expiry, "expired": p.expired}


def shipment_json(view: ShipmentView, output: int | None, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "shipment_id": view.shipment_id, "state": view.state.value,
        "order_ids": list(view.order_ids), "patient_id": view.patient_id,
        "priority": view.priority, "output": output, "fridge": view.fridge,
        "created_at": iso(view.created_at),
        "robot_picks": [{"item": p.item, "drug_code": p.drug_code, "slot": p.slot,
                         "count": p.count} for p in view.robot_picks],
        "manual_picks": [{"item": m.item, "drug_code": m.drug_code, "count": m.quantity,
                          "confirmed": len(m.confirmed), "fridge": m.fridge}
                         for m in view.manual_picks],
        "picked": len(view.picked),
        "item_count": len(view.picked) + sum(p.count for p in view.robot_picks)
        + sum(m.quantity for m in view.manual_picks),
        "owed": [{"item": o.item, "drug_code": o.drug_code, "count": o.count}
                 for o in view.owed],
        "short": [{"item": o.item, "drug_code": o.drug_code, "count": o.count}
                  for o in view.short],
        "hold_reasons": [h.as_dict() for h in view.holds],
    }
    if full:
        out["packs"] = [pack_json(p) for p in view.picked]
        out["manual_packs"] = [pack_json(p) for m in view.manual_picks for p in m.confirmed]
        out["billing"] = [{"order_id": b.order_id, "drug_code": b.drug_code,
                           "description": b.description, "quantity": b.quantity,
                           "unit_price": _money(b.unit_price), "amount": _money(b.amount),
                           "covered": _money(b.covered), "self_pay": _money(b.self_pay)}
                          for b in view.billing]
        out["total"] = _money(view.total)
        out["covered"] = _money(view.covered)
        out["self_pay"] = _money(view.self_pay)
        out["patient"] = {"name": view.patient_name, "phone": view.patient_phone}
        out["delivery"] = {"address": view.address, "window_start": iso(view.window_start),
                           "window_end": iso(view.window_end)}
    return out
