"""API methods. Orders: submit (one or a batch), cancel, release, reject, get, list;
and ``system.info``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dispenser.api.protocol import ApiError, parse_params
from dispenser.api.server import Caller
from dispenser.core.errors import DispenserError
from dispenser.core.views import Actor, OrderView
from dispenser.daemon.methods.audit import storable
from dispenser.daemon.methods.base import ALL, STAFF, Api, api_error, in_slices, page
from dispenser.daemon.methods.params import (
    Empty,
    OrderAction,
    OrderId,
    OrderList,
    Submit,
    SubmitBatch,
    order_text_error,
)
from dispenser.daemon.methods.views import order_json
from dispenser.journal import JournalUnavailable

# Orders of one order.submit_batch checked, merged and committed together: about 10-25 ms
# of the event loop on the development VM (docs/performance.md).
SUBMIT_PART = 50
_NOT_KEPT = ("this order was not kept (the orders answered accepted were); send it again "
             "once the journal works (order ids make a repeat harmless)")

__all__ = ["register"]


def register(api: Api) -> None:
    daemon = api.daemon
    d = daemon.dispensary
    commit = daemon.commit
    method, actor = api.method, api.actor
    audit_row = api.audit_row

    @method("system.info", None)
    async def system_info(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(Empty, params)
        return daemon.info()

    @method("order.submit", ALL, mutating=True)
    async def order_submit(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Submit, params)
        who = actor(caller)
        refused = order_text_error(p.order)
        if refused is not None:
            raise refused

        def work() -> OrderView:
            # An accepted order is audited by the core ("order.received", with this
            # caller's name and role); a refused one is audited here, in the same commit.
            writes = d.journal.writes
            try:
                view = d.submit(p.order, who)
            except DispenserError as exc:
                audit_row(caller, "order.submit", params, False, api_error(exc))
                daemon.mark_audited(caller)
                raise
            if d.journal.writes == writes:  # a retry of a known order: nothing was written
                audit_row(caller, "order.submit", params, True, None)
            daemon.mark_audited(caller)
            return view

        view = await commit.run(work)
        daemon.order_event(view)
        return order_json(view)

    @method("order.submit_batch", ALL, mutating=True)
    async def order_submit_batch(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(SubmitBatch, params)
        who = actor(caller)
        text_errors = {i: e for i, o in enumerate(p.orders)
                       if (e := order_text_error(o)) is not None}
        good = [o for i, o in enumerate(p.orders) if i not in text_errors]

        def work(part: list[dict[str, Any]], first: bool) -> list[OrderView | DispenserError]:
            results = d.submit_many(part, who)
            if first:
                audit_row(caller, "order.submit_batch", params, True, None)
                daemon.mark_audited(caller)
            return results

        # A part at a time, each its own commit: a batch of 1,000 orders would hold the
        # event loop for its whole check, merge and write; between parts the robot's cycle
        # and other calls go on. Each order's answer is its own: when the journal fails in
        # a later part, the orders of the earlier parts stay accepted (and say so), those
        # of that part and after are answered with the journal's error.
        done: list[OrderView | DispenserError | JournalUnavailable] = []
        for start in range(0, max(len(good), 1), SUBMIT_PART):
            part = good[start:start + SUBMIT_PART]
            try:
                done += await commit.run(functools.partial(work, part, not start))
            except JournalUnavailable as exc:
                if not start:
                    raise
                done += [exc] * (len(good) - start)
                break
        accepted = iter(done)
        results: list[OrderView | DispenserError | JournalUnavailable | ApiError] = [
            text_errors[i] if i in text_errors else next(accepted)
            for i in range(len(p.orders))]
        out: list[dict[str, Any]] = []
        for raw, r in zip(p.orders, results, strict=True):
            oid = storable(raw["order_id"]) if isinstance(raw.get("order_id"), str) else None
            if isinstance(r, OrderView):
                daemon.order_event(r)
                out.append({"order_id": r.order_id, "state": r.state.value,
                            "hold_reasons": [h.as_dict() for h in r.holds]})
            else:
                err = api_error(r)
                if isinstance(r, JournalUnavailable):  # (earlier parts were kept)
                    err.data = {**(err.data or {}), "retry": _NOT_KEPT}
                out.append({"order_id": oid, "error": {"code": int(err.code),
                                                       "message": err.message,
                                                       **(err.data or {})}})
        return {"results": out}

    async def _order_action(fn: Callable[[str, Actor, str], OrderView], params: dict[str, Any],
                            caller: Caller) -> Any:
        p = parse_params(OrderAction, params)
        view = await commit.run(lambda: fn(p.order_id, actor(caller), p.reason))
        daemon.order_event(view)
        return order_json(view)

    @method("order.cancel", ALL, mutating=True)
    async def order_cancel(params: dict[str, Any], caller: Caller) -> Any:
        return await _order_action(d.cancel, params, caller)

    @method("order.release", STAFF, mutating=True)
    async def order_release(params: dict[str, Any], caller: Caller) -> Any:
        return await _order_action(d.release, params, caller)

    @method("order.reject", STAFF, mutating=True)
    async def order_reject(params: dict[str, Any], caller: Caller) -> Any:
        return await _order_action(d.reject, params, caller)

    @method("order.get", ALL)
    async def order_get(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(OrderId, params)
        view = d.get_order(p.order_id)
        out = order_json(view)
        body = daemon.order_body(p.order_id)
        if body is not None:
            out["patient"] = body.get("patient")
            out["prescription"] = body.get("prescription")
            out["delivery"] = body.get("delivery")
        return out

    @method("order.list", ALL)
    async def order_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(OrderList, params)
        items = await in_slices(lambda n, after: d.list_orders(p.state, n, after),
                                p.limit, p.after, order_json, "order_id")
        return page(items, p.limit, "order_id")

