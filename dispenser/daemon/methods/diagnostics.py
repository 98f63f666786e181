"""API methods. A technician's diagnostics: registers, self-test, printer, traffic, audit."""

from __future__ import annotations

import time
from typing import Any

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller
from dispenser.daemon import robot as robot_api
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.methods.base import TECHNICIAN, Api
from dispenser.daemon.methods.params import Empty, Registers, Selftest
from dispenser.daemon.robot import Motion

__all__ = ["register"]


def register(api: Api) -> None:
    daemon = api.daemon
    sched = daemon.scheduler
    method, _actor = api.method, api.actor

    @method("diag.registers", TECHNICIAN)
    async def diag_registers(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Registers, params)
        values = await daemon.robot.read_registers(p.address, p.count)
        return {"address": p.address, "values": values}

    @method("diag.selftest", TECHNICIAN, mutating=True)
    async def diag_selftest(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Selftest, params)
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
        parse_params(Empty, params)
        return await daemon.printer_status()

    @method("diag.stats", TECHNICIAN)
    async def diag_stats(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(Empty, params)
        return daemon.stats()

    @method("audit.verify", TECHNICIAN)
    async def audit_verify(params: dict[str, Any], caller: Caller) -> Any:
        parse_params(Empty, params)
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

