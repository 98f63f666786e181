"""API methods. Output tasks (packs picked to an output for pharmacy software, not for a
shipment): list and get. Tasks are created and cancelled by their requester (WWKS2)."""

from __future__ import annotations

from typing import Any, Literal

from dispenser.api.protocol import parse_params
from dispenser.api.server import Caller
from dispenser.core.states import TaskState
from dispenser.core.tasks import TaskView
from dispenser.daemon.methods.base import ALL, Api, in_slices, page
from dispenser.daemon.methods.params import Ident, Page, Params
from dispenser.daemon.methods.views import iso, pack_json

__all__ = ["register", "task_json"]


class TaskId(Params):
    task_id: Ident


class TaskList(Page):
    state: TaskState | None = None
    purpose: Literal["wwks2_output", "destruction"] | None = None
    after: Ident | None = None


def task_json(view: TaskView, full: bool = False) -> dict[str, Any]:
    """A task as JSON; ``full`` adds its lines with their packs and what the requester
    keeps with it (for WWKS2: subscriber, request id, priority and destination)."""
    out: dict[str, Any] = {
        "task_id": view.task_id, "purpose": view.purpose, "key": view.key,
        "state": view.state.value, "priority": view.priority, "output": view.output,
        "actor": view.actor, "created_at": iso(view.created_at),
        "finished_at": iso(view.finished_at), "reported": view.reported,
        "asked": view.asked, "picked": len(view.packs),
        "to_pick": sum(n for _, n in view.picks),
        "short": sum(ln.short for ln in view.lines),
    }
    if full:
        out["lines"] = [{
            "ref": ln.ref, "drug_code": ln.drug_code, "quantity": ln.quantity,
            "pack_ids": list(ln.pack_ids), "batch": ln.batch,
            "min_expiry": iso(ln.min_expiry), "single_batch": ln.single_batch,
            "reserved": [{"slot": s, "count": n} for s, n in ln.reserved],
            "packs": [pack_json(p) for p in ln.packs], "short": ln.short,
        } for ln in view.lines]
        out["request"] = dict(view.meta)
    return out


def register(api: Api) -> None:
    d = api.daemon.dispensary
    method = api.method

    @method("task.get", ALL)
    async def task_get(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(TaskId, params)
        return task_json(d.get_task(p.task_id), full=True)

    @method("task.list", ALL)
    async def task_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(TaskList, params)
        items = await in_slices(lambda n, after: d.list_tasks(p.state, p.purpose, n, after),
                                p.limit, p.after, task_json, "task_id")
        return page(items, p.limit, "task_id")
