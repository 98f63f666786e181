"""API methods of the feeds from other channels: ``records.import`` (dispensing records of
hospital pharmacies, other pharmacies and insurance claims) and
``prescriptions.register`` (prescriptions as the institutions issued them)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dispenser.api.protocol import parse_params
from dispenser.api.server import Caller
from dispenser.core.errors import DispenserError, FieldError
from dispenser.core.records import MAX_BATCH, RecordOutcome
from dispenser.daemon.methods.base import Api, api_error
from dispenser.daemon.methods.params import Params, broken_text

__all__ = ["RECORDS", "REGISTRARS", "register"]

# Who may send dispensing records: the feeds, the order system (which may relay claims)
# and staff (``dispenserctl import-records``).
RECORDS = ("records", "order_system", "staff", "technician")
# Who may register prescriptions: the feeds only. The point of provenance is that the
# prescription does not come from the order's side.
REGISTRARS = ("records",)

_UNICODE = "text must be valid Unicode (a lone surrogate escape is not)"
# A batch is worked and committed in chunks, each one turn of the event loop short enough
# (~20-30 ms) for the robot's watchdog and the scheduler; each chunk is durable before the
# next starts, so a call that fails half-way is simply sent again (imported records then
# answer "unchanged").
RECORDS_PER_COMMIT = 1000
PRESCRIPTIONS_PER_COMMIT = 200


class ImportRecords(Params):
    records: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class RegisterPrescriptions(Params):
    prescriptions: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


def register(api: Api) -> None:
    daemon = api.daemon
    d = daemon.dispensary
    commit = daemon.commit

    @api.method("records.import", RECORDS, mutating=True)
    async def records_import(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(ImportRecords, params)
        who = api.actor(caller)
        # A record with broken text is refused on its own (it could not be stored).
        broken = {i: path for i, r in enumerate(p.records)
                  if (path := broken_text(r)) is not None}
        good = [r for i, r in enumerate(p.records) if i not in broken]

        outcomes: list[RecordOutcome] = []
        for start in range(0, len(good), RECORDS_PER_COMMIT):
            chunk = good[start:start + RECORDS_PER_COMMIT]

            def work(chunk: list[Any] = chunk) -> list[RecordOutcome]:
                out = d.import_records(chunk, who)  # audited by the core (records.imported)
                daemon.mark_audited(caller)
                return out

            outcomes += await commit.run(work)
        done = iter(outcomes)
        results = [RecordOutcome("refused", None, None, [FieldError(broken[i], _UNICODE)])
                   if i in broken else next(done) for i in range(len(p.records))]
        counts = {s: 0 for s in ("imported", "unchanged", "conflict", "refused")}
        for r in results:
            counts[r.status] += 1
        return {"results": [r.as_dict() for r in results], **counts}

    @api.method("prescriptions.register", REGISTRARS, mutating=True)
    async def prescriptions_register(params: dict[str, Any], caller: Caller) -> Any:
        p = parse_params(RegisterPrescriptions, params)
        who = api.actor(caller)
        broken = {i: path for i, r in enumerate(p.prescriptions)
                  if (path := broken_text(r)) is not None}
        good = [r for i, r in enumerate(p.prescriptions) if i not in broken]

        registered: list[dict[str, Any] | DispenserError] = []
        for start in range(0, max(len(good), 1), PRESCRIPTIONS_PER_COMMIT):
            chunk = good[start:start + PRESCRIPTIONS_PER_COMMIT]

            def work(chunk: list[Any] = chunk) -> list[dict[str, Any] | DispenserError]:
                out = d.register_prescriptions(chunk, who)  # each audited by the core
                api.audit_row(caller, "prescriptions.register", params, True, None)
                daemon.mark_audited(caller)
                return out

            registered += await commit.run(work)
        done = iter(registered)
        out: list[dict[str, Any]] = []
        for i, raw in enumerate(p.prescriptions):
            rid = raw.get("id") if isinstance(raw, dict) else None
            rid = rid if isinstance(rid, str) and i not in broken else None
            if i in broken:
                out.append({"id": rid, "error": {"code": -32001, "message": _UNICODE,
                                                 "errors": [{"path": broken[i],
                                                             "message": _UNICODE}]}})
                continue
            r = next(done)
            if isinstance(r, DispenserError):
                err = api_error(r)
                out.append({"id": rid, "error": {"code": int(err.code),
                                                 "message": err.message, **(err.data or {})}})
            else:
                out.append(r)
        return {"results": out}
