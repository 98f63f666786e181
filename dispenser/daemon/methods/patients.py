"""API methods of the patient's record: ``patient.get`` (every read audited with who read
it) and ``patient.renewals`` (prescriptions about to reach their age limit)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictInt

from dispenser.api.protocol import parse_params
from dispenser.api.server import Caller
from dispenser.daemon.methods.base import STAFF, Api
from dispenser.daemon.methods.params import Ident, Page, Params, Text

__all__ = ["register"]


class PatientId(Params):
    patient_id: Ident


class Renewals(Page):
    within_days: Annotated[StrictInt, Field(ge=0, le=365)] = 14
    after: Annotated[Text, Field(max_length=100)] | None = None


def register(api: Api) -> None:
    daemon = api.daemon
    d = daemon.dispensary

    # Mutating in the API's sense: the read writes its audit row, so it needs the journal
    # (refused while the journal takes no writes: an unaudited read of a patient's record
    # is not allowed).
    @api.method("patient.get", STAFF, mutating=True)
    async def patient_get(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(PatientId, params)
        who = api.actor(caller)

        def work() -> dict[str, Any]:
            record = d.patient_record(p.patient_id, who)  # audited: patient.read
            daemon.mark_audited(caller)
            return record

        return await daemon.commit.run(work)

    @api.method("patient.renewals", STAFF)
    async def patient_renewals(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(Renewals, params)
        items = d.renewals(p.within_days, p.limit, p.after)
        return {"items": items,
                "next": items[-1]["cursor"] if len(items) == p.limit and items else None}
