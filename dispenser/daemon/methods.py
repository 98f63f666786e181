"""The API methods of dispenserd (docs/api.md, section Methods), declared once each.

Handlers translate between JSON and the dispensing core, the scheduler and the drivers.
Refusals of the core become ``ApiError`` with the matching application code. Views are
turned into JSON here; lists and events never carry patient data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller, MethodRegistry, Outcome
from dispenser.core import Dispensary
from dispenser.core.errors import (
    Conflict,
    DispenserError,
    InvalidOrder,
    InvalidState,
    LoadRefused,
    NotFound,
    UnknownDrug,
)
from dispenser.core.states import OrderState, PackState, ShipmentState
from dispenser.core.views import Actor, OrderView, PackView, ShipmentView
from dispenser.daemon import robot as robot_api
from dispenser.daemon.commit import GroupCommit
from dispenser.daemon.controller import ControllerMachine, ControllerState, InvalidTransition
from dispenser.daemon.faults import FaultRecord
from dispenser.daemon.loading import HardwareError
from dispenser.daemon.printdesk import PrintDesk
from dispenser.daemon.robot import Motion, Robot, RobotRefused, RobotUnavailable
from dispenser.daemon.scheduler import Scheduler
from dispenser.journal import Journal, JournalUnavailable, VerifyResult
from drivers.printer.status import PrinterError


class Services(Protocol):
    """What the methods need of the daemon (``dispenser.daemon.app.Daemon`` offers it)."""

    dispensary: Dispensary
    scheduler: Scheduler
    commit: GroupCommit
    machine: ControllerMachine
    desk: PrintDesk
    robot: Robot
    journal: Journal

    def publish(self, event: dict[str, Any]) -> None: ...
    def order_event(self, view: OrderView) -> None: ...
    def order_body(self, order_id: str) -> dict[str, Any] | None: ...
    def info(self) -> dict[str, Any]: ...
    async def machine_status(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    async def printer_status(self) -> dict[str, Any]: ...
    async def print_test_label(self) -> tuple[bool, list[str]]: ...
    def mark_audited(self, caller: Caller) -> None: ...
    def note_pause(self, by: str, reason: str) -> None: ...
    def fault_acknowledged(self, record: FaultRecord) -> None: ...
    async def verify_audit(self) -> VerifyResult: ...
    def write_api_audit(self, caller: Caller, method: str, params: dict[str, Any], ok: bool,
                        error: ApiError | None) -> None: ...


__all__ = ["ALL", "MAX_TEXT", "STAFF", "TECHNICIAN", "Services", "register_methods"]

ALL = ("order_system", "staff", "technician")
STAFF = ("staff", "technician")
TECHNICIAN = ("technician",)

# The longest free text a method takes (reasons, notes, scans; docs/api.md, Limits).
# Longer text is refused with -32602 naming the field, and an audit row keeps at most
# this much of any value.
MAX_TEXT = 500

# Params that may be copied into the API audit record (never patient data).
_AUDIT_KEYS = ("order_id", "shipment_id", "fault_id", "gtin", "batch", "reason", "on",
               "what", "slot", "address", "count", "note", "wait")


# ---------------------------------------------------------------- params

# Params are taken as JSON gives them: no "true" for a boolean, no 1 for a boolean, no
# "5" for a number; text must be valid Unicode (no lone surrogate escapes), numbers fit
# the journal's 64-bit integers.
MAX_ID = 2**63 - 1
MAX_SLOT = 2**32 - 1


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (a lone surrogate escape is not)"
                         ) from None
    return value


def broken_text(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) in ``value`` that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(order)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            found = broken_text(k, here) or broken_text(v, here)
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = broken_text(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def _order_text_error(order: Any) -> ApiError | None:
    path = broken_text(order)
    if path is None:
        return None
    message = "text must be valid Unicode (a lone surrogate escape is not)"
    return ApiError(ErrorCode.INVALID_ORDER, f"order refused, fix these fields and send it "
                    f"again: {path}: {message}", {"errors": [{"path": path,
                                                               "message": message}]})


Text = Annotated[StrictStr, AfterValidator(_unicode)]
# Length limits go before the Unicode check: so they are checked on the string itself
# and say "at most N characters".
Ident = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_unicode)]
Reason = Annotated[StrictStr, Field(max_length=MAX_TEXT), AfterValidator(_unicode)]
FreeText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT),
                     AfterValidator(_unicode)]
Id = Annotated[StrictInt, Field(ge=0, le=MAX_ID)]


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Empty(_P):
    pass


class _Page(_P):
    limit: Annotated[StrictInt, Field(ge=1, le=1000)] = 100


class _Submit(_P):
    order: dict[str, Any]


class _SubmitBatch(_P):
    orders: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class _OrderAction(_P):
    order_id: Ident
    reason: Reason = ""


class _OrderId(_P):
    order_id: Ident


class _OrderList(_Page):
    state: OrderState | None = None
    after: Ident | None = None


class _ShipmentId(_P):
    shipment_id: Ident


class _ShipmentList(_Page):
    state: ShipmentState | None = None
    after: Ident | None = None


class _ConfirmManual(_P):
    shipment_id: Ident
    scan: FreeText


class _StockList(_Page):
    drug_code: Annotated[Text, Field(pattern=r"^[0-9]{14}$")] | None = None
    state: PackState | None = PackState.IN_STOCK
    slot: Annotated[StrictInt, Field(ge=0, le=MAX_SLOT)] | None = None
    after: Id | None = None


class _Load(_P):
    scan: FreeText
    wait: StrictBool = False


class _Quarantine(_P):
    gtin: Annotated[Text, Field(pattern=r"^[0-9]{14}$")]
    batch: Annotated[StrictStr, Field(min_length=1, max_length=20), AfterValidator(_unicode)]
    reason: FreeText


class _Discrepancies(_Page):
    after: Id | None = None


class _Pause(_P):
    reason: Reason = ""


class _Maintenance(_P):
    on: StrictBool


class _FaultList(_Page):
    active: StrictBool | None = None
    after: Id | None = None


class _FaultAck(_P):
    fault_id: Id
    note: Reason | None = None


class _Reprint(_P):
    shipment_id: Ident
    what: Literal["label", "slip", "both"] = "both"


class _Registers(_P):
    address: Annotated[StrictInt, Field(ge=0, le=65535)]
    count: Annotated[StrictInt, Field(ge=1, le=125)]


class _Selftest(_P):
    slot: Annotated[StrictInt, Field(ge=0, le=MAX_SLOT)] = 0


# ---------------------------------------------------------------- JSON views


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def order_json(view: OrderView) -> dict[str, Any]:
    return {
        "order_id": view.order_id, "state": view.state.value, "patient_id": view.patient_id,
        "priority": view.priority, "shipment_id": view.shipment_id,
        "received_at": _iso(view.received_at),
        "hold_reasons": [h.as_dict() for h in view.holds],
        "items": [{"drug_code": i.drug_code, "quantity": i.quantity,
                   "days_supply": i.days_supply} for i in view.items],
    }


def pack_json(p: PackView) -> dict[str, Any]:
    return {"pack_id": p.pack_id, "gtin": p.gtin, "batch": p.batch, "expiry": _iso(p.expiry),
            "serial": p.serial, "state": p.state.value, "slot": p.slot,
            "shipment_id": p.shipment_id, "order_id": p.order_id}


def shipment_json(view: ShipmentView, output: int | None, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "shipment_id": view.shipment_id, "state": view.state.value,
        "order_ids": list(view.order_ids), "patient_id": view.patient_id,
        "priority": view.priority, "output": output, "fridge": view.fridge,
        "created_at": _iso(view.created_at),
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
        out["delivery"] = {"address": view.address, "window_start": _iso(view.window_start),
                           "window_end": _iso(view.window_end)}
    return out


# ---------------------------------------------------------------- errors


def api_error(exc: Exception) -> ApiError:
    """The API form of a refusal from the core, the scheduler or a driver."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidOrder):
        return ApiError(ErrorCode.INVALID_ORDER, exc.message,
                        {"errors": [e.as_dict() for e in exc.errors]})
    if isinstance(exc, UnknownDrug):
        return ApiError(ErrorCode.UNKNOWN_DRUG, exc.message, {"codes": exc.codes})
    if isinstance(exc, NotFound):
        return ApiError(ErrorCode.NOT_FOUND, exc.message)
    if isinstance(exc, Conflict):
        return ApiError(ErrorCode.CONFLICT, exc.message)
    if isinstance(exc, InvalidState | InvalidTransition):
        return ApiError(ErrorCode.WRONG_STATE, getattr(exc, "message", str(exc)))
    if isinstance(exc, LoadRefused):
        return ApiError(ErrorCode.LOAD_REFUSED, exc.message, {"reason": exc.reason_code})
    if isinstance(exc, JournalUnavailable):
        return ApiError(ErrorCode.JOURNAL_UNAVAILABLE, exc.message,
                        {"cause": exc.cause, "filesystem": exc.filesystem,
                         "retry": "nothing of this call was kept; send it again once the "
                                  "journal works (order ids make a repeat harmless)"})
    if isinstance(exc, DispenserError):
        return ApiError(ErrorCode.CONFLICT, exc.message)
    if isinstance(exc, RobotRefused):
        return ApiError(ErrorCode.HARDWARE, str(exc), {"exception": exc.code})
    if isinstance(exc, HardwareError | RobotUnavailable | PrinterError):
        return ApiError(ErrorCode.HARDWARE, str(exc))
    raise exc


def _page(items: list[dict[str, Any]], limit: int, key: str) -> dict[str, Any]:
    return {"items": items, "next": items[-1][key] if len(items) == limit and items else None}


# ---------------------------------------------------------------- registration


def register_methods(registry: MethodRegistry, daemon: Services) -> None:
    d = daemon.dispensary
    sched = daemon.scheduler
    commit = daemon.commit

    def actor(caller: Caller) -> Actor:
        return Actor(caller.principal or f"connection:{caller.connection_id}",
                     caller.role or "none")

    def audit_row(caller: Caller, method: str, params: dict[str, Any], ok: bool,
                  error: ApiError | None) -> None:
        daemon.write_api_audit(caller, method, params, ok, error)

    def method(name: str, roles: tuple[str, ...] | None, mutating: bool = False) -> Callable[
            [Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            async def handler(params: dict[str, Any], caller: Caller) -> Any:
                try:
                    if mutating:
                        # A change needs the journal (its audit row at least): while it
                        # takes no writes, refuse before changing anything.
                        down = daemon.journal.check_available()
                        if down is not None:
                            raise down
                    return await fn(params, caller)
                except (DispenserError, HardwareError, RobotUnavailable, PrinterError,
                        InvalidTransition, JournalUnavailable) as exc:
                    raise api_error(exc) from None
            handler.__name__ = fn.__name__
            registry.add(name, handler, roles=roles, mutating=mutating)
            return fn
        return deco

    output_of = sched.totes.output_of

    # -- system
    @method("system.info", None)
    async def system_info(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(_Empty, params)
        return daemon.info()

    # -- orders
    @method("order.submit", ALL, mutating=True)
    async def order_submit(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Submit, params)
        who = actor(caller)
        refused = _order_text_error(p.order)
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
        p = parse_params(_SubmitBatch, params)
        who = actor(caller)
        text_errors = {i: e for i, o in enumerate(p.orders)
                       if (e := _order_text_error(o)) is not None}
        good = [o for i, o in enumerate(p.orders) if i not in text_errors]

        def work() -> list[OrderView | DispenserError]:
            results = d.submit_many(good, who)
            audit_row(caller, "order.submit_batch", params, True, None)
            daemon.mark_audited(caller)
            return results

        accepted = iter(await commit.run(work))
        results: list[OrderView | DispenserError | ApiError] = [
            text_errors[i] if i in text_errors else next(accepted)
            for i in range(len(p.orders))]
        out: list[dict[str, Any]] = []
        for raw, r in zip(p.orders, results, strict=True):
            oid = _storable(raw["order_id"]) if isinstance(raw.get("order_id"), str) else None
            if isinstance(r, OrderView):
                daemon.order_event(r)
                out.append({"order_id": r.order_id, "state": r.state.value,
                            "hold_reasons": [h.as_dict() for h in r.holds]})
            else:
                err = api_error(r)
                out.append({"order_id": oid, "error": {"code": int(err.code),
                                                       "message": err.message,
                                                       **(err.data or {})}})
        return {"results": out}

    async def _order_action(fn: Callable[[str, Actor, str], OrderView], params: dict[str, Any],
                            caller: Caller) -> Any:
        p = parse_params(_OrderAction, params)
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
        p = parse_params(_OrderId, params)
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
        p = parse_params(_OrderList, params)
        views = d.list_orders(p.state, p.limit, p.after)
        return _page([order_json(v) for v in views], p.limit, "order_id")

    # -- shipments
    @method("shipment.get", ALL)
    async def shipment_get(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_ShipmentId, params)
        view = d.get_shipment(p.shipment_id)
        return shipment_json(view, output_of(view.shipment_id), full=True)

    @method("shipment.list", ALL)
    async def shipment_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_ShipmentList, params)
        views = d.list_shipments(p.state, p.limit, p.after)
        return _page([shipment_json(v, output_of(v.shipment_id)) for v in views], p.limit,
                     "shipment_id")

    @method("shipment.confirm_manual", STAFF, mutating=True)
    async def shipment_confirm_manual(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_ConfirmManual, params)
        await commit.run(lambda: d.confirm_manual(p.shipment_id, p.scan, actor(caller)))
        sched.maybe_complete(p.shipment_id)
        view = d.get_shipment(p.shipment_id)
        return shipment_json(view, output_of(view.shipment_id), full=True)

    # -- stock
    @method("stock.list", STAFF)
    async def stock_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_StockList, params)
        packs = d.list_stock(p.drug_code, p.state, p.limit, p.after)
        if p.slot is not None:
            packs = [x for x in packs if x.slot == p.slot]
        return _page([pack_json(x) for x in packs], p.limit, "pack_id")

    @method("stock.load", STAFF, mutating=True)
    async def stock_load(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Load, params)
        if daemon.machine.state not in (ControllerState.READY, ControllerState.PAUSED):
            raise ApiError(ErrorCode.WRONG_STATE, f"the machine is "
                           f"{daemon.machine.state.value}; packs can be loaded when it is "
                           "ready or paused")
        d.check_scan(p.scan)  # refuse bad scans at once, before queueing
        view = await sched.request_load(p.scan, actor(caller), p.wait)
        return pack_json(view)

    @method("stock.quarantine", STAFF, mutating=True)
    async def stock_quarantine(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Quarantine, params)
        n = await commit.run(lambda: d.quarantine_batch(p.gtin, p.batch, actor(caller),
                                                        p.reason))
        daemon.publish({"topic": "stock", "kind": "quarantine", "drug_code": p.gtin,
                        "batch": p.batch, "packs": n})
        sched.wake()
        return {"quarantined": n}

    @method("stock.discrepancies", STAFF)
    async def stock_discrepancies(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Discrepancies, params)
        rows = [x for x in d.list_discrepancies(100000)
                if p.after is None or x.id < p.after][: p.limit]
        items = [{"discrepancy_id": x.id, "at": x.time, "slot": x.slot, "kind": x.kind,
                  "expected": x.expected, "found": x.counted, "shipment_id": x.shipment_id}
                 for x in rows]
        return _page(items, p.limit, "discrepancy_id")

    # -- machine
    @method("machine.status", ALL)
    async def machine_status(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(_Empty, params)
        return await daemon.machine_status()

    @method("machine.pause", STAFF, mutating=True)
    async def machine_pause(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Pause, params)
        daemon.machine.fire("pause")
        daemon.note_pause(actor(caller).name, p.reason)
        return await daemon.machine_status()

    @method("machine.resume", STAFF, mutating=True)
    async def machine_resume(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(_Empty, params)
        daemon.machine.fire("resume")
        sched.wake()
        return await daemon.machine_status()

    @method("machine.maintenance", TECHNICIAN, mutating=True)
    async def machine_maintenance(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Maintenance, params)
        daemon.machine.fire("maintenance" if p.on else "leave_maintenance")
        sched.wake()
        return await daemon.machine_status()

    # -- faults
    @method("fault.list", STAFF)
    async def fault_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_FaultList, params)
        faults = sched.faults.log.page(p.active, p.limit, p.after)
        return _page([f.as_dict() for f in faults], p.limit, "fault_id")

    @method("fault.ack", STAFF, mutating=True)
    async def fault_ack(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_FaultAck, params)
        try:
            record = await sched.ack_fault(p.fault_id, actor(caller), p.note)
        except KeyError:
            raise ApiError(ErrorCode.NOT_FOUND, f"no fault {p.fault_id}") from None
        except ValueError as exc:
            raise ApiError(ErrorCode.WRONG_STATE, str(exc)) from None
        daemon.fault_acknowledged(record)
        return record.as_dict()

    # -- labels
    @method("label.reprint", STAFF, mutating=True)
    async def label_reprint(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Reprint, params)
        view = d.get_shipment(p.shipment_id)
        if view.state not in (ShipmentState.LABELLING, ShipmentState.COMPLETED):
            raise ApiError(ErrorCode.WRONG_STATE, f"shipment {p.shipment_id} is "
                           f"{view.state.value}; its label is printed once picking is done")
        printed, reasons = await daemon.desk.reprint(view, p.what)
        if not printed:
            raise ApiError(ErrorCode.HARDWARE, "the printer is not ready: "
                           + ", ".join(reasons), {"reasons": reasons})
        return {"printed": True, "reasons": []}

    # -- diagnostics
    @method("diag.registers", TECHNICIAN)
    async def diag_registers(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Registers, params)
        values = await daemon.robot.read_registers(p.address, p.count)
        return {"address": p.address, "values": values}

    @method("diag.selftest", TECHNICIAN, mutating=True)
    async def diag_selftest(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(_Selftest, params)
        if daemon.machine.state is not ControllerState.MAINTENANCE:
            raise ApiError(ErrorCode.WRONG_STATE, "the self-test moves the robot: switch "
                           "to maintenance mode first (dispenserctl maintenance on)")
        steps: list[dict[str, Any]] = []
        homed = await sched.manual_command(Motion.HOME)
        steps.append({"step": "home", "ok": homed is True,
                      "detail": "homed" if homed is True else "home failed"})
        c = await sched.manual_command(Motion.SCAN_SLOT, p.slot)
        ok = not isinstance(c, bool) and c.outcome is robot_api.Outcome.OK
        steps.append({"step": "scan_slot", "ok": ok,
                      "detail": f"{c.detail} packs" if ok and not isinstance(c, bool)
                      else "scan failed"})
        printed, reasons = await daemon.print_test_label()
        steps.append({"step": "print", "ok": printed,
                      "detail": "printed" if printed else ", ".join(reasons)})
        return {"ok": all(s["ok"] for s in steps), "steps": steps}

    @method("diag.printer", TECHNICIAN)
    async def diag_printer(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(_Empty, params)
        return await daemon.printer_status()

    @method("diag.stats", TECHNICIAN)
    async def diag_stats(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(_Empty, params)
        return daemon.stats()

    @method("audit.verify", TECHNICIAN)
    async def audit_verify(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(_Empty, params)
        started = time.perf_counter()
        r = await daemon.verify_audit()
        cp = r.checkpoint
        return {"ok": r.ok, "records": r.rows, "first_bad_row": r.first_bad_row,
                "problems": [f.message for f in r.findings],
                "findings": [f.as_dict() for f in r.findings],
                "keyed": r.keyed, "keyed_from": r.keyed_from, "key_id": r.key_id,
                "checkpoint": None if cp is None else {
                    "last_id": cp["last_id"], "written_at": cp["written_at"]},
                "seconds": round(time.perf_counter() - started, 3)}


def _storable(value: Any) -> Any:
    """Text as it can be stored (a lone surrogate escape becomes a visible backslash
    escape), so that even a refused call with broken text keeps its audit row."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ID:
        return str(value)
    return value


def _bounded(value: Any, key: str, truncated: dict[str, int]) -> Any:
    """A value as the audit row keeps it: storable, text cut to ``MAX_TEXT`` characters
    (``truncated`` records the original length), so a refused call's row stays small."""
    value = _storable(value)
    if isinstance(value, str) and len(value) > MAX_TEXT:
        truncated[key] = len(value)
        return value[:MAX_TEXT]
    return value


def audit_summary(method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(subject, safe params) for the API audit row: ids and reasons, no patient data.

    A value longer than ``MAX_TEXT`` characters (only a refused call can have one) is cut
    to that length and ``safe["truncated"]`` maps its key to its original length: a row
    holds at most a few KB whatever the call sent."""
    truncated: dict[str, int] = {}
    safe = {k: _bounded(params[k], k, truncated) for k in _AUDIT_KEYS
            if k in params and not isinstance(params[k], dict | list)}
    subject = ""
    order = params.get("order")
    if isinstance(order, dict) and isinstance(order.get("order_id"), str):
        subject = _bounded(order["order_id"], "order.order_id", truncated)
    orders = params.get("orders")
    if isinstance(orders, list):
        ids = [o.get("order_id") for o in orders if isinstance(o, dict)]
        safe["orders"] = len(orders)
        subject = f"{len(ids)} orders"
    for key in ("order_id", "shipment_id", "fault_id", "gtin"):
        if key in safe and not subject:
            subject = str(safe[key])
    if truncated:
        safe["truncated"] = truncated
    return subject or method, safe


def outcome_dict(ok: bool, error: ApiError | None) -> dict[str, Any]:
    if ok or error is None:
        return {"ok": True}
    return {"ok": False, "code": int(error.code), "message": error.message}


__all__ += ["Outcome", "audit_summary", "order_json", "outcome_dict", "pack_json",
            "shipment_json"]
