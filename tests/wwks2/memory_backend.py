"""A protocol fixture: an in-memory machine behind the WWKS2 server, for the protocol tests.

It is NOT the machine: no journal, no robot, no shipments. It keeps articles and packs in
dicts and runs output tasks only when a test says so (:meth:`MemoryBackend.dispense`), so
every message exchange can be driven step by step. The daemon implements the same
:class:`~dispenser.wwks2.backend.Wwks2Backend` over the dispensing core; the end-to-end
tests run the same IMS client against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from dispenser.wwks2.backend import (
    ArticleDetails,
    ArticleStock,
    CancelStatus,
    ComponentStatus,
    DispensedPack,
    MachineStatus,
    MasterArticle,
    MasterSetResult,
    OutputDecision,
    OutputOutcome,
    OutputTask,
    StockPack,
    StockQuery,
    TaskKey,
    TaskReport,
    TaskStatus,
    Wwks2Events,
)


@dataclass
class _Pack:
    article_id: str
    pack: StockPack
    reserved_for: TaskKey | None = None
    gone: bool = False


@dataclass
class _Task:
    task: OutputTask
    status: TaskStatus
    picks: list[int] = field(default_factory=list)  # pack ids reserved
    unserved: list[str] = field(default_factory=list)
    dispensed: list[DispensedPack] = field(default_factory=list)
    outcome: OutputOutcome | None = None


class MemoryBackend:
    """Implements Wwks2Backend in memory; ``events`` is the server, set by the test."""

    def __init__(self) -> None:
        self.events: Wwks2Events | None = None
        self.ready = True
        self.not_ready_text = ""
        self.outputs = 2
        self.articles: dict[str, ArticleDetails] = {}
        self.packs: dict[int, _Pack] = {}
        self.tasks: dict[TaskKey, _Task] = {}
        self.master: list[MasterArticle] = []
        self.undelivered: list[OutputOutcome] = []
        self.actors: list[str] = []
        self.fail_next: str | None = None  # make the named call raise once (defect path)
        self.finish_at_once = False  # report the outcome from inside create_output

    # -- test set-up

    def add_pack(self, article_id: str, pack_id: int, *, batch: str = "B1",
                 expiry: date = date(2030, 1, 31), serial: str | None = None,
                 scan_code: str | None = None, available: bool = True,
                 name: str = "Metformin 500 mg") -> None:
        self.articles.setdefault(article_id, ArticleDetails(name=name, dosage_form="tablet",
                                                            packaging_unit="60 tablets"))
        self.packs[pack_id] = _Pack(article_id, StockPack(
            pack_id=pack_id, available=available, batch_number=batch, expiry_date=expiry,
            serial_number=serial, scan_code=scan_code, stock_in_date=date(2026, 1, 5)))

    def _defect(self, name: str) -> None:
        if self.fail_next == name:
            self.fail_next = None
            raise RuntimeError(f"injected defect in {name}")

    # -- Wwks2Backend

    async def machine_status(self) -> MachineStatus:
        self._defect("machine_status")
        components = (ComponentStatus("Robot", self.ready, self.not_ready_text, "robot"),
                      ComponentStatus("Label printer", True, "", "printer"),
                      *(ComponentStatus(f"Output {n}", True, "", "output")
                        for n in range(1, self.outputs + 1)))
        return MachineStatus(self.ready, self.not_ready_text, components)

    async def stock(self, query: StockQuery) -> Sequence[ArticleStock]:
        self._defect("stock")
        found: dict[str, list[StockPack]] = {}
        for entry in self.packs.values():
            if entry.gone:
                continue
            pack = entry.pack
            if query.filters and not any(
                    (f.article_id in (None, entry.article_id))
                    and (f.batch_number in (None, pack.batch_number))
                    and (f.external_id in (None, pack.external_id))
                    for f in query.filters):
                continue
            if entry.reserved_for is not None:
                pack = replace(pack, available=False)
            found.setdefault(entry.article_id, []).append(pack)
        return [ArticleStock(article_id=a, quantity=len(packs),
                             packs=tuple(packs) if query.include_packs else (),
                             details=self.articles.get(a) if query.include_article_details
                             else None)
                for a, packs in sorted(found.items())]

    async def create_output(self, task: OutputTask) -> OutputDecision:
        self._defect("create_output")
        self.actors.append(task.actor)
        known = self.tasks.get(task.key)
        if known is not None:
            if known.task.fingerprint != task.fingerprint:
                return OutputDecision("Rejected", "this Id is in use by another output")
            if known.outcome is not None and self.events is not None:
                self.events.output_finished(known.outcome)
            return OutputDecision("Queued")
        if not self.ready:
            return OutputDecision("Rejected", "the machine is not ready")
        if not 1 <= task.output_point <= self.outputs:
            return OutputDecision("Rejected", f"no output point {task.output_point}")
        record = _Task(task, "Queued")
        for criterion in task.criteria:
            if criterion.article_id is not None and criterion.article_id not in self.articles:
                return OutputDecision("Rejected", f"unknown article {criterion.article_id}")
            candidates = sorted(
                (e for e in self.packs.values()
                 if not e.gone and e.reserved_for is None and e.pack.available
                 and (criterion.pack_id in (None, e.pack.pack_id))
                 and (criterion.article_id in (None, e.article_id))
                 and (criterion.batch_number in (None, e.pack.batch_number))
                 and (criterion.minimum_expiry_date is None or (
                     e.pack.expiry_date is not None
                     and e.pack.expiry_date >= criterion.minimum_expiry_date))),
                key=lambda e: (e.pack.expiry_date or date.max, e.pack.pack_id))
            chosen = candidates[:criterion.quantity]
            for entry in chosen:
                entry.reserved_for = task.key
                record.picks.append(entry.pack.pack_id)
            if len(chosen) < criterion.quantity:
                record.unserved.append(criterion.article_id or "")
        self.tasks[task.key] = record
        if self.finish_at_once:
            self.dispense(task.key)
        return OutputDecision("Queued")

    async def output_info(self, key: TaskKey, include_packs: bool) -> TaskReport:
        self._defect("output_info")
        record = self.tasks.get(key)
        if record is None:
            return TaskReport("Unknown")
        return TaskReport(record.status,
                          tuple(record.dispensed) if include_packs else (),
                          record.task.destination)

    async def cancel_output(self, key: TaskKey, actor: str) -> CancelStatus:
        self._defect("cancel_output")
        self.actors.append(actor)
        record = self.tasks.get(key)
        if record is None:
            return "Unknown"
        if record.status != "Queued":
            return "CancelError"
        for pack_id in record.picks:
            self.packs[pack_id].reserved_for = None
        record.picks.clear()
        self._finish(record, "Aborted")
        return "Cancelled"

    async def set_article_master(self, articles: Sequence[MasterArticle],
                                 actor: str) -> MasterSetResult:
        self._defect("set_article_master")
        self.actors.append(actor)
        ids = [a.article_id for a in articles]
        if len(set(ids)) != len(ids):
            return MasterSetResult(False, "an article id appears twice")
        self.master = list(articles)
        return MasterSetResult(True)

    async def pending_outcomes(self, subscriber_id: int) -> Sequence[OutputOutcome]:
        return [o for o in self.undelivered
                if o.key is not None and o.key.subscriber_id == subscriber_id]

    async def outcomes_delivered(self, keys: Sequence[TaskKey]) -> None:
        self.undelivered = [o for o in self.undelivered if o.key not in keys]

    # -- the machine working (driven by tests)

    def start(self, key: TaskKey) -> None:
        self.tasks[key].status = "InProcess"

    def dispense(self, key: TaskKey, *, to_point: int | None = None,
                 stop_after: int | None = None) -> OutputOutcome:
        """Dispense the reserved packs (or the first ``stop_after`` of them, then Aborted)."""
        record = self.tasks[key]
        point = to_point if to_point is not None else record.task.output_point
        labels = any(c.label_requested for c in record.task.criteria)
        for n, pack_id in enumerate(list(record.picks)):
            if stop_after is not None and n >= stop_after:
                self.packs[pack_id].reserved_for = None
                continue
            entry = self.packs[pack_id]
            entry.gone = True
            pack = entry.pack
            record.dispensed.append(DispensedPack(
                article_id=entry.article_id, pack_id=pack_id, output_point=point,
                batch_number=pack.batch_number, expiry_date=pack.expiry_date,
                serial_number=pack.serial_number, scan_code=pack.scan_code,
                label_status="NotLabelled" if labels else None))
        record.picks.clear()
        if stop_after is not None:
            status = "Aborted"
        else:
            status = "Incomplete" if record.unserved else "Completed"
        return self._finish(record, status)

    def _finish(self, record: _Task, status: TaskStatus) -> OutputOutcome:
        record.status = status
        outcome = OutputOutcome(
            key=record.task.key, status=status,  # type: ignore[arg-type]
            priority=record.task.priority, destination=record.task.destination,
            packs=tuple(record.dispensed), unserved=tuple(record.unserved),
            box_number=record.task.box_number)
        record.outcome = outcome
        delivered = self.events.output_finished(outcome) if self.events is not None else False
        if not delivered:
            self.undelivered.append(outcome)
        return outcome


async def settle() -> None:
    """Let the server's queued work run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)
