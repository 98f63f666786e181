"""API methods. The machine: status, pause, resume, maintenance; faults: list and acknowledge."""

from __future__ import annotations

from typing import Any

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller
from dispenser.daemon.methods.base import ALL, STAFF, TECHNICIAN, Api, page
from dispenser.daemon.methods.params import Empty, FaultAck, FaultList, Maintenance, Pause

__all__ = ["register"]


def register(api: Api) -> None:
    daemon = api.daemon
    sched = daemon.scheduler
    method, actor = api.method, api.actor

    @method("machine.status", ALL)
    async def machine_status(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(Empty, params)
        return await daemon.machine_status()

    @method("machine.pause", STAFF, mutating=True)
    async def machine_pause(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Pause, params)
        sched.mode.pause(actor(caller).name, p.reason)
        return await daemon.machine_status()

    def adopted_first() -> None:
        # Picking with a robot that is not the journal's could pick twice or lose packs.
        if sched.unadopted is not None:
            raise ApiError(ErrorCode.WRONG_STATE, "another robot answers than the journal's "
                           "(robot_mismatch): a technician adopts it first with "
                           "dispenserctl robot adopt")

    @method("machine.resume", STAFF, mutating=True)
    async def machine_resume(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(Empty, params)
        adopted_first()
        sched.mode.resume()
        sched.wake()
        return await daemon.machine_status()

    @method("machine.maintenance", TECHNICIAN, mutating=True)
    async def machine_maintenance(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Maintenance, params)
        if not p.on:
            adopted_first()
        sched.mode.maintenance(p.on, actor(caller).name)
        sched.wake()
        return await daemon.machine_status()

    @method("fault.list", STAFF)
    async def fault_list(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(FaultList, params)
        faults = sched.faults.log.page(p.active, p.limit, p.after)
        return page([f.as_dict() for f in faults], p.limit, "fault_id")

    @method("fault.ack", STAFF, mutating=True)
    async def fault_ack(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(FaultAck, params)
        try:
            record = await sched.ack_fault(p.fault_id, actor(caller), p.note)
        except KeyError:
            raise ApiError(ErrorCode.NOT_FOUND, f"no fault {p.fault_id}") from None
        except ValueError as exc:
            raise ApiError(ErrorCode.WRONG_STATE, str(exc)) from None
        daemon.fault_acknowledged(record)
        return record.as_dict()

