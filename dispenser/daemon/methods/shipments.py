"""API methods. Shipments: get, list, confirm a manual pack; reprint a label or slip."""

from __future__ import annotations

from typing import Any

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller
from dispenser.core.states import ShipmentState
from dispenser.daemon.methods.base import ALL, STAFF, Api, in_slices, page
from dispenser.daemon.methods.params import ConfirmManual, Reprint, ShipmentId, ShipmentList
from dispenser.daemon.methods.views import shipment_json

__all__ = ["register"]


def register(api: Api) -> None:
    daemon = api.daemon
    d = daemon.dispensary
    sched = daemon.scheduler
    commit = daemon.commit
    method, actor = api.method, api.actor
    output_of = sched.totes.output_of

    @method("shipment.get", ALL)
    async def shipment_get(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(ShipmentId, params)
        view = d.get_shipment(p.shipment_id)
        return shipment_json(view, output_of(view.shipment_id), full=True)

    @method("shipment.list", ALL)
    async def shipment_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(ShipmentList, params)
        items = await in_slices(lambda n, after: d.list_shipments(p.state, n, after),
                                p.limit, p.after,
                                lambda v: shipment_json(v, output_of(v.shipment_id)),
                                "shipment_id")
        return page(items, p.limit, "shipment_id")

    @method("shipment.confirm_manual", STAFF, mutating=True)
    async def shipment_confirm_manual(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(ConfirmManual, params)
        await commit.run(lambda: d.confirm_manual(p.shipment_id, p.scan, actor(caller)))
        sched.maybe_complete(p.shipment_id)
        view = d.get_shipment(p.shipment_id)
        return shipment_json(view, output_of(view.shipment_id), full=True)

    @method("label.reprint", STAFF, mutating=True)
    async def label_reprint(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Reprint, params)
        view = d.get_shipment(p.shipment_id)
        if view.state not in (ShipmentState.LABELLING, ShipmentState.COMPLETED):
            raise ApiError(ErrorCode.WRONG_STATE, f"shipment {p.shipment_id} is "
                           f"{view.state.value}; its label is printed once picking is done")
        printed, reasons = await daemon.desk.reprint(view, p.what)
        if not printed:
            raise ApiError(ErrorCode.HARDWARE, "the printer is not ready: "
                           + ", ".join(reasons), {"reasons": reasons})
        return {"printed": True, "reasons": []}

