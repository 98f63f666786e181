"""The API methods of dispenserd (docs/api.md, section Methods), declared once each, by
area. Handlers translate between JSON and the dispensing core, the scheduler and the
drivers; refusals become ``ApiError`` with the matching application code."""

from __future__ import annotations

from dispenser.api.server import MethodRegistry
from dispenser.daemon.methods import (
    diagnostics,
    machine,
    orders,
    patients,
    records,
    robot,
    shipments,
    stock,
    sweep,
    tasks,
)
from dispenser.daemon.methods.audit import audit_summary, outcome_dict
from dispenser.daemon.methods.base import ALL, STAFF, TECHNICIAN, Api, Services, api_error
from dispenser.daemon.methods.params import MAX_TEXT
from dispenser.daemon.methods.views import order_json, pack_json, shipment_json

__all__ = ["ALL", "MAX_TEXT", "STAFF", "TECHNICIAN", "Services", "api_error", "audit_summary",
           "order_json", "outcome_dict", "pack_json", "register_methods", "shipment_json"]


def register_methods(registry: MethodRegistry, daemon: Services) -> None:
    api = Api(registry, daemon)
    for area in (orders, shipments, stock, sweep, tasks, machine, diagnostics, records,
                 patients, robot):
        area.register(api)
