"""API methods. Stock: list packs, load, quarantine a batch, discrepancies."""

from __future__ import annotations

from typing import Any

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.methods.base import STAFF, Api, page
from dispenser.daemon.methods.params import Discrepancies, Load, Quarantine, StockList
from dispenser.daemon.methods.views import pack_json

__all__ = ["register"]


def register(api: Api) -> None:
    daemon = api.daemon
    d = daemon.dispensary
    sched = daemon.scheduler
    commit = daemon.commit
    method, actor = api.method, api.actor

    @method("stock.list", STAFF)
    async def stock_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(StockList, params)
        packs = d.list_stock(p.drug_code, p.state, p.limit, p.after, p.near_expiry)
        if p.slot is not None:
            packs = [x for x in packs if x.slot == p.slot]
        return page([pack_json(x) for x in packs], p.limit, "pack_id")

    @method("stock.load", STAFF, mutating=True)
    async def stock_load(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Load, params)
        if daemon.machine.state not in (ControllerState.READY, ControllerState.PAUSED):
            raise ApiError(ErrorCode.WRONG_STATE, f"the machine is "
                           f"{daemon.machine.state.value}; packs can be loaded when it is "
                           "ready or paused")
        d.check_scan(p.scan)  # refuse bad scans at once, before queueing
        view = await sched.request_load(p.scan, actor(caller), p.wait)
        return pack_json(view)

    @method("stock.quarantine", STAFF, mutating=True)
    async def stock_quarantine(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Quarantine, params)
        n = await commit.run(lambda: d.quarantine_batch(p.drug_code, p.batch, actor(caller),
                                                        p.reason))
        daemon.publish({"topic": "stock", "kind": "quarantine", "drug_code": p.drug_code,
                        "batch": p.batch, "packs": n})
        sched.wake()
        return {"quarantined": n}

    @method("stock.discrepancies", STAFF)
    async def stock_discrepancies(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Discrepancies, params)
        rows = [x for x in d.list_discrepancies(100000)
                if p.after is None or x.id < p.after][: p.limit]
        items = [{"discrepancy_id": x.id, "at": x.time, "slot": x.slot, "kind": x.kind,
                  "expected": x.expected, "found": x.counted, "shipment_id": x.shipment_id}
                 for x in rows]
        return page(items, p.limit, "discrepancy_id")

