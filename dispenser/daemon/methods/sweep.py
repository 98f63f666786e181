"""API methods. The expiry sweep (``stock.sweep``): every pack in stock that is near expiry
or expired picked to one output in totes for destruction (``dispenser.core.sweep``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictInt

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller
from dispenser.core.sweep import SweepRunning, SweepView
from dispenser.daemon.methods.base import STAFF, Api
from dispenser.daemon.methods.params import Params
from dispenser.daemon.methods.tasks import task_json
from dispenser.daemon.methods.views import iso, pack_json

__all__ = ["register", "sweep_json"]

# Packs one tote holds when the robot has not said (it reports ``tote_capacity``).
DEFAULT_TOTE_CAPACITY = 40


class Sweep(Params):
    output: Annotated[StrictInt, Field(ge=1, le=65535)]


def sweep_json(view: SweepView) -> dict[str, Any]:
    """The answer of ``stock.sweep`` (docs/api.md)."""
    if view.sweep_id is None:
        message = "nothing to sweep: no pack in stock is near expiry or expired"
        if view.left:
            message = (f"nothing to sweep now: the {len(view.left)} near-expiry pack(s) are on "
                       "slots a shipment or an output task holds; sweep again once those "
                       "are picked")
    else:
        message = (f"{len(view.packs)} pack(s) to output {view.output} for destruction in "
                   f"{len(view.tasks)} tote(s)")
        if view.left:
            message += f"; {len(view.left)} left for a later sweep"
    return {"sweep_id": view.sweep_id, "output": view.output,
            "tote_capacity": view.tote_capacity,
            "near_expiry_before": iso(view.near_expiry_before),
            "swept": len(view.packs), "message": message,
            "tasks": [task_json(t) for t in view.tasks],
            "packs": [pack_json(p) for p in view.packs],
            "left": [pack_json(p) for p in view.left]}


def register(api: Api) -> None:
    daemon = api.daemon
    d = daemon.dispensary
    sched = daemon.scheduler
    method, actor = api.method, api.actor

    @method("stock.sweep", STAFF, mutating=True)
    async def stock_sweep(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Sweep, params)
        outputs = sched.outputs
        if p.output > outputs:
            raise ApiError(ErrorCode.INVALID_PARAMS,
                           f"output {p.output} does not exist; outputs are 1 to {outputs}",
                           {"errors": [{"path": "output",
                                        "message": f"outputs are 1 to {outputs}"}]})
        st = sched.status
        capacity = (st.tote_capacity if st is not None else 0) or DEFAULT_TOTE_CAPACITY
        who = actor(caller)
        try:
            view = await daemon.commit.run(lambda: d.sweep_stock(p.output, capacity, who))
        except SweepRunning as exc:
            raise ApiError(ErrorCode.WRONG_STATE, exc.message,
                           {"sweep_id": exc.sweep_id, "task_ids": exc.task_ids}) from None
        if view.sweep_id is not None:
            daemon.publish({"topic": "stock", "kind": "sweep", "sweep_id": view.sweep_id,
                            "output": view.output, "packs": len(view.packs),
                            "task_ids": [t.task_id for t in view.tasks]})
            for task in view.tasks:
                sched.totes.tasks.task_event(task)
            sched.wake()
        return sweep_json(view)
