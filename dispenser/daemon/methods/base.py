"""What every API method shares: the daemon's services they use, the roles, the
declaration of a method, and how refusals become API errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.api.server import Caller, MethodRegistry
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
from dispenser.core.views import Actor, OrderView
from dispenser.daemon.commit import GroupCommit
from dispenser.daemon.controller import ControllerMachine, InvalidTransition
from dispenser.daemon.faults import FaultRecord
from dispenser.daemon.loading import HardwareError
from dispenser.daemon.printdesk import PrintDesk
from dispenser.daemon.robot import Robot, RobotRefused, RobotUnavailable
from dispenser.daemon.scheduler import Scheduler
from dispenser.journal import Journal, JournalUnavailable, VerifyResult
from drivers.printer.status import PrinterError

V = TypeVar("V")

__all__ = ["ALL", "STAFF", "TECHNICIAN", "Api", "Services", "api_error", "page"]

ALL = ("order_system", "staff", "technician")
STAFF = ("staff", "technician")
TECHNICIAN = ("technician",)


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


# Items of a list page read and shown together: a page of 1,000 shipment views built at
# once held the event loop 100-150 ms; a slice of 100 stays under ~15 ms.
LIST_SLICE = 100


async def in_slices(fetch: Callable[[int, str | None], list[V]], limit: int,
                    after: str | None, show: Callable[[V], dict[str, Any]],
                    key: str) -> list[dict[str, Any]]:
    """Up to ``limit`` items after the cursor ``after``, as ``show`` shows them, read
    ``LIST_SLICE`` at a time through the same cursor, the loop given back between slices
    (the same items as one read of ``limit``: pages are in key order)."""
    out: list[dict[str, Any]] = []
    while len(out) < limit:
        want = min(LIST_SLICE, limit - len(out))
        got = [show(v) for v in fetch(want, after)]
        out += got
        if len(got) < want:
            break
        after = got[-1][key]
        await asyncio.sleep(0)
    return out


def page(items: list[dict[str, Any]], limit: int, key: str) -> dict[str, Any]:
    return {"items": items, "next": items[-1][key] if len(items) == limit and items else None}


Handler = Callable[[dict[str, Any], Caller], Awaitable[Any]]


class Api:
    """Declares methods on the registry for one daemon: ``@api.method(name, roles,
    mutating)``. A mutating method is refused at once while the journal takes no writes;
    refusals of the core, the scheduler and the drivers become ``ApiError``."""

    def __init__(self, registry: MethodRegistry, daemon: Services) -> None:
        self.registry = registry
        self.daemon = daemon

    @staticmethod
    def actor(caller: Caller) -> Actor:
        return Actor(caller.principal or f"connection:{caller.connection_id}",
                     caller.role or "none")

    def audit_row(self, caller: Caller, method: str, params: dict[str, Any], ok: bool,
                  error: ApiError | None) -> None:
        self.daemon.write_api_audit(caller, method, params, ok, error)

    def method(self, name: str, roles: tuple[str, ...] | None,
               mutating: bool = False) -> Callable[[Handler], Handler]:
        daemon = self.daemon

        def deco(fn: Handler) -> Handler:
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
            self.registry.add(name, handler, roles=roles, mutating=mutating)
            return fn
        return deco
