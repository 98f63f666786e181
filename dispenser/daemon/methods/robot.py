"""API methods. The robot: adopt one that answers in place of the journal's."""

from __future__ import annotations

from typing import Any

from dispenser.api.protocol import ApiError, ErrorCode, parse_params
from dispenser.api.server import Caller
from dispenser.daemon.methods.base import TECHNICIAN, Api
from dispenser.daemon.methods.params import RobotAdopt

__all__ = ["register"]


def register(api: Api) -> None:
    sched = api.daemon.scheduler
    method, actor = api.method, api.actor

    @method("robot.adopt", TECHNICIAN, mutating=True)
    async def robot_adopt(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(RobotAdopt, params)
        try:
            return await sched.adopt(actor(caller), p.note)
        except ValueError as exc:
            raise ApiError(ErrorCode.WRONG_STATE, str(exc)) from None
