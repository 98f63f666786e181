"""The machine behind the WWKS2 server: ``Wwks2Backend`` over the dispensing core and the
scheduler (docs/wwks2.md, "Mapping to the machine").

- **Outputs** are output tasks (``dispenser.core.tasks``, purpose ``wwks2_output``), keyed
  ``"<subscriber id>/<OutputRequest Id>"`` and journaled before the answer is
  ``Queued``. The tote planner picks them with the shipments; when one ends the server
  is told (``output_finished``), and once a connection of its subscriber got the
  OutputMessage the task is marked reported. What was not reported (the client was away,
  the daemon died) is sent after that subscriber's next Hello (``pending_outcomes``).
- **Stock** is read from the core's memory on the loop (a snapshot of plain tuples, a few
  ms for 20,000 packs) and turned into WWKS2 packs in a worker thread. The first packs of
  a slot that are reserved (the robot takes the oldest first), packs of a blocked slot and
  packs with less than ``min_shelf_life_days`` left are reported NotAvailable.
- **Stock changes** (``StockIndex.touched``) are handed to the server four times a second;
  it coalesces them into StockInfoMessages.
- **Input** (``input_mode = "wwks2"``): the backend is the loading desk's admission: a
  pack that passed the machine's checks is put to the pharmacy software (InputRequest)
  before it is queued for its STORE, and its InputMessage follows the STORE's outcome.

Size: the one object the WWKS2 server calls (it implements ``Wwks2Backend``), in the
sections listed above: status, stock, outputs, input. They share the readiness check and the
article mapping (``Articles``), and in one place they show every answer the machine gives
the pharmacy software. The stock reading (scope, the snapshot taken in chunks, articles
built in a thread) is the part that could move to a module of its own, as the article
mapping did (``wwks2_articles``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from dispenser.core import Dispensary
from dispenser.core.books import bulk
from dispenser.core.errors import DispenserError, InvalidState, LoadRefused
from dispenser.core.formulary import Formulary
from dispenser.core.gs1 import GS, compose_scan, parse_scan
from dispenser.core.policy import Policy
from dispenser.core.states import TASK_FINAL, TaskState
from dispenser.core.tasks import TaskCriterion, TaskRequest, TaskView
from dispenser.core.views import Actor, PackView
from dispenser.daemon.commit import GroupCommit
from dispenser.daemon.controller import ControllerMachine, ControllerState
from dispenser.daemon.printdesk import PrintDesk
from dispenser.daemon.scheduler import Scheduler
from dispenser.daemon.wwks2_articles import Articles
from dispenser.logs import get_logger
from dispenser.wwks2.backend import (
    ArticleStock,
    CancelStatus,
    ComponentStatus,
    DispensedPack,
    InputOutcome,
    MachineStatus,
    MasterArticle,
    MasterSetResult,
    OutputDecision,
    OutputOutcome,
    OutputTask,
    ScannedPack,
    StockPack,
    StockQuery,
    TaskKey,
    TaskReport,
    TaskStatus,
    Wwks2Backend,
    Wwks2Events,
)
from dispenser.wwks2.config import Wwks2Config

log = get_logger(__name__)

__all__ = ["PURPOSE", "DaemonWwks2Backend"]

PURPOSE = "wwks2_output"
ROLE = "wwks2"
STOCK_PUMP_S = 0.25
SNAPSHOT_CHUNK = 1000
_PRIORITY = {"Highest": "urgent", "High": "high", "Normal": "normal", "Low": "low",
             "Lowest": "low"}
_STATUS: dict[TaskState, TaskStatus] = {
    TaskState.QUEUED: "Queued", TaskState.IN_PROCESS: "InProcess",
    TaskState.ABORTING: "Aborting", TaskState.COMPLETED: "Completed",
    TaskState.INCOMPLETE: "Incomplete", TaskState.ABORTED: "Aborted"}
_PHRASE = {"startup": "starting up", "homing": "homing", "paused": "paused",
           "fault": "stopped by a fault", "estop": "emergency stop",
           "maintenance": "in maintenance", "stopping": "stopping"}

# (pack id, batch, expiry, serial, available) as read on the loop.
_PackRow = tuple[int, str, date, str | None, bool]


class _Refused(Exception):
    """An OutputRequest the machine does not take: answered Rejected."""


def task_key(key: TaskKey) -> str:
    return f"{key.subscriber_id}/{key.task_id}"


def scan_code(gtin: str, batch: str, expiry: date, serial: str | None) -> str:
    """The pack's GS1 element string (GS as the real character)."""
    if serial is None:
        return f"01{gtin}17{expiry:%y%m%d}10{batch}"
    return compose_scan(gtin, f"{expiry:%y%m%d}", batch, serial, prefix=False)


@dataclass(frozen=True, slots=True)
class _InputTicket:
    request_id: str
    article_id: str
    pack: ScannedPack


class DaemonWwks2Backend:
    """Implements :class:`~dispenser.wwks2.backend.Wwks2Backend` for dispenserd;
    ``events`` (the server) is set once it exists."""

    def __init__(self, *, config: Wwks2Config, dispensary: Dispensary, scheduler: Scheduler,
                 commit: GroupCommit, machine: ControllerMachine, desk: PrintDesk,
                 formulary: Formulary, policy: Policy, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.d = dispensary
        self.sched = scheduler
        self.commit = commit
        self.machine = machine
        self.desk = desk
        self.formulary = formulary
        self.policy = policy
        self.clock = clock
        self.articles = Articles(dispensary.journal, formulary, config.article_mapping, clock)
        self.events: Wwks2Events | None = None
        self._background: set[asyncio.Task[Any]] = set()
        scheduler.totes.tasks.on_finished.append(self._task_finished)
        if config.input_mode == "wwks2":
            scheduler.loading.admission = self
            scheduler.loading.on_admitted = scheduler.wake

    # ================================================================== helpers
    def _ready(self) -> str:
        """"" when the machine takes outputs now, else why not."""
        state = self.machine.state
        if self.d.journal.unavailable is not None:
            return "the journal takes no writes"
        if not self.sched.link_up:
            return "the robot is not reachable"
        if state is not ControllerState.READY:
            return f"the machine is {_PHRASE.get(state.value, state.value)}"
        return ""

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_reported(self, task_ids: list[str]) -> None:
        try:
            await self.commit.run(lambda: self.d.mark_tasks_reported(task_ids))
        except Exception as exc:  # reported again after the next Hello: harmless
            log.warning("wwks2 outcome delivery not recorded", tasks=task_ids,
                        error=str(exc))

    # ================================================================== status
    async def machine_status(self) -> MachineStatus:
        why = self._ready()
        st = self.sched.status
        robot = ComponentStatus("Robot", not why, why, "robot")
        reasons = self.desk.waiting_reasons
        printer = ComponentStatus("Label printer", not reasons, ", ".join(reasons), "printer")
        full = st.output_full if st is not None else frozenset()
        outputs = tuple(ComponentStatus(
            f"Output {k}", k not in full, "no tote, or the tote is full" if k in full else "",
            "output") for k in range(1, self.sched.outputs + 1))
        return MachineStatus(not why, why, (robot, printer, *outputs))

    # ================================================================== stock
    def _usable_from(self) -> date:
        return self.clock().date() + timedelta(days=self.policy.min_shelf_life_days)

    def _scope(self, query: StockQuery) -> tuple[list[str], list[str]]:
        """The drugs to read (every drug with stock when a filter names no article), and
        the drugs the query names (reported with quantity 0 when they have no pack)."""
        stock = self.d.stock
        named: list[str] = []
        unnamed = not query.filters
        for f in query.filters:
            if f.external_id is not None:
                continue  # the machine keeps no external ids: nothing matches
            if f.article_id is None:
                unnamed = True
                continue
            drug = self.articles.drug_of(f.article_id)
            if drug is not None:
                named.append(drug)
        drugs = sorted(stock.by_drug) if unnamed else sorted(set(named))
        return drugs, named

    def _matches(self, query: StockQuery, drug: str, batch: str) -> bool:
        if not query.filters:
            return True
        for f in query.filters:
            if f.external_id is not None:
                continue
            if f.article_id is not None and self.articles.drug_of(f.article_id) != drug:
                continue
            if f.batch_number is not None and f.batch_number != batch:
                continue
            return True
        return False

    async def _snapshot(self, query: StockQuery) -> tuple[list[tuple[str, list[_PackRow]]],
                                                          list[str]]:
        """Plain rows of the packs the query asks about, read from memory: each article's
        packs at once, letting other work in every ``SNAPSHOT_CHUNK`` packs (20,000 packs
        read in one go would hold the loop too long)."""
        usable = self._usable_from()
        drugs, named = self._scope(query)
        filtered = bool(query.filters)
        out: list[tuple[str, list[_PackRow]]] = []
        since_yield = 0
        for drug in drugs:
            if since_yield >= SNAPSHOT_CHUNK:
                await asyncio.sleep(0)
                since_yield = 0
            stock = self.d.stock  # read again: a rollback's reload replaces it
            live = self.d.packs.live
            rows: list[_PackRow] = []
            for (expiry, _), n in stock.by_drug.get(drug, ()):
                slot = stock.slots[n]
                if not slot.packs or (filtered and not self._matches(query, drug,
                                                                     slot.batch)):
                    continue
                fit = not slot.blocked and expiry >= usable
                reserved = slot.reserved
                for i, pid in enumerate(slot.packs):
                    p = live[pid]
                    rows.append((pid, p.batch, p.expiry, p.serial, fit and i >= reserved))
            if rows:
                out.append((drug, rows))
                since_yield += len(rows)
        return out, named

    def _articles(self, snapshot: list[tuple[str, list[_PackRow]]], named: list[str],
                  query: StockQuery) -> list[ArticleStock]:
        """Worker thread: the WWKS2 form of the snapshot (no garbage collection pass
        meanwhile: a full one would hold the event loop for tens of ms)."""
        with bulk():
            return self._build_articles(snapshot, named, query)

    def _build_articles(self, snapshot: list[tuple[str, list[_PackRow]]],
                        named: list[str], query: StockQuery) -> list[ArticleStock]:
        found = []
        seen = set()
        for drug, rows in snapshot:
            seen.add(drug)
            packs = tuple(StockPack(pack_id=pid, available=available, batch_number=batch,
                                    expiry_date=expiry, serial_number=serial,
                                    scan_code=scan_code(drug, batch, expiry, serial))
                          for pid, batch, expiry, serial, available in rows
                          ) if query.include_packs else ()
            found.append(ArticleStock(
                article_id=self.articles.article_of(drug), quantity=len(rows), packs=packs,
                details=self.articles.details(drug) if query.include_article_details
                else None))
        for drug in dict.fromkeys(named):
            if drug not in seen:
                found.append(ArticleStock(
                    article_id=self.articles.article_of(drug), quantity=0,
                    details=self.articles.details(drug) if query.include_article_details
                    else None))
        found.sort(key=lambda a: a.article_id)
        return found

    async def stock(self, query: StockQuery) -> Sequence[ArticleStock]:
        snapshot, named = await self._snapshot(query)
        if sum(len(rows) for _, rows in snapshot) < 500:
            return self._articles(snapshot, named, query)
        return await asyncio.to_thread(self._articles, snapshot, named, query)

    async def pump_stock_changes(self) -> None:
        """Hand the drugs whose stock changed to the server (which coalesces them)."""
        while True:
            await asyncio.sleep(STOCK_PUMP_S)
            touched = self.d.stock.touched
            if touched and self.events is not None:
                ids = {self.articles.article_of(g) for g in touched}
                touched.clear()
                self.events.stock_changed(ids)

    # ================================================================== outputs
    def _criteria(self, task: OutputTask) -> tuple[list[TaskCriterion], list[int]]:
        """The task's lines; raises ``_Refused``. Also the lines that asked for labels."""
        lines: list[TaskCriterion] = []
        labelled = []
        packs = self.d.packs
        for i, c in enumerate(task.criteria):
            if c.label_requested:
                labelled.append(i)
            if c.external_id is not None:
                raise _Refused(f"Criteria[{i + 1}]: the machine keeps no ExternalId")
            named = self.articles.drug_of(c.article_id) if c.article_id else None
            if c.article_id is not None and named is None:
                raise _Refused(f"article {c.article_id} is not known to this machine")
            if c.pack_id is not None or c.serial_number is not None:
                pid = c.pack_id
                if pid is None and named is not None:
                    pid = packs.serials.get((named, c.serial_number or ""))
                pack = packs.live.get(pid or 0)
                if pack is None or (named is not None and pack.drug_code != named) or (
                        c.serial_number is not None and pack.serial != c.serial_number):
                    pid = 0  # no such pack in the machine: that line is short
                ref = c.article_id or (self.articles.article_of(pack.drug_code) if pack
                                       else str(c.pack_id or c.serial_number))
                lines.append(TaskCriterion(ref, 1, pack_ids=(pid or 0,)))
                continue
            assert named is not None and c.article_id is not None  # checked by mapping
            drug = self.formulary[named]
            if not drug.robot or self.articles.requires_fridge(named, c.article_id):
                raise _Refused(f"article {c.article_id} is a fridge or manual item; the "
                               "robot does not store it")
            quantity = c.quantity
            if c.sub_item_quantity:
                quantity = math.ceil(c.sub_item_quantity / drug.pack_size)
            lines.append(TaskCriterion(c.article_id, quantity, drug_code=named,
                                       batch=c.batch_number, min_expiry=c.minimum_expiry_date,
                                       single_batch=c.single_batch))
        return lines, labelled

    def _request(self, task: OutputTask) -> TaskRequest:
        why = self._ready()
        if why:
            raise _Refused(why)
        outputs = self.sched.outputs
        if not 1 <= task.output_point <= outputs:
            raise _Refused(f"output point {task.output_point} does not exist (1..{outputs})")
        lines, labelled = self._criteria(task)
        st = self.sched.status
        capacity = (st.tote_capacity if st is not None else 0) or 40
        packs = sum(c.quantity for c in lines)
        if packs > capacity:
            raise _Refused(f"{packs} packs do not fit the output's tote ({capacity})")
        return TaskRequest(
            PURPOSE, task_key(task.key), task.fingerprint, task.output_point,
            _PRIORITY[task.priority], tuple(lines),
            {"subscriber": task.key.subscriber_id, "request_id": task.key.task_id,
             "priority": task.priority, "destination": task.destination,
             "box_number": task.box_number, "labelled_lines": labelled})

    def _within_retention(self, view: TaskView) -> bool:
        if view.finished_at is None:
            return True
        keep = timedelta(days=self.config.task_retention_days)
        return self.clock() - view.finished_at < keep

    async def create_output(self, task: OutputTask) -> OutputDecision:
        known = self.d.find_task(PURPOSE, task_key(task.key))
        if known is not None and self._within_retention(known):
            if known.fingerprint != task.fingerprint:
                return OutputDecision("Rejected", f"Id {task.key.task_id} is in use by "
                                      f"another output ({known.task_id}, "
                                      f"{known.state.value})")
            if known.state in TASK_FINAL:
                self._report(known)  # the same request again: its outcome again
            return OutputDecision("Queued")
        try:
            request = self._request(task)
            view = await self.commit.run(lambda: self.d.create_task(
                request, Actor(task.actor, ROLE)))
        except _Refused as exc:
            return OutputDecision("Rejected", str(exc))
        except DispenserError as exc:
            return OutputDecision("Rejected", exc.message)
        log.info("wwks2 output queued", task_id=view.task_id, key=view.key,
                 output=view.output, priority=view.priority, packs=view.asked)
        self.sched.totes.tasks.task_event(view)
        if view.state in TASK_FINAL:
            self._report(view)
        self.sched.wake()
        return OutputDecision("Queued")

    def _dispensed(self, view: TaskView) -> tuple[DispensedPack, ...]:
        labelled = set(view.meta.get("labelled_lines") or ())
        return tuple(
            DispensedPack(article_id=ln.ref, pack_id=p.pack_id, output_point=view.output,
                          batch_number=p.batch, expiry_date=p.expiry,
                          serial_number=p.serial,
                          scan_code=scan_code(p.drug_code, p.batch, p.expiry, p.serial),
                          label_status="NotLabelled" if i in labelled else None)
            for i, ln in enumerate(view.lines) for p in ln.packs)

    def outcome(self, view: TaskView) -> OutputOutcome:
        """The OutputMessage content of a finished task."""
        meta = view.meta
        status = _STATUS[view.state]
        assert status in ("Completed", "Incomplete", "Aborted")
        unserved = () if status == "Aborted" else tuple(
            ln.ref for ln in view.lines if len(ln.packs) < ln.quantity)
        return OutputOutcome(key=TaskKey(int(meta["subscriber"]), str(meta["request_id"])),
                             status=status, priority=meta["priority"],
                             destination=int(meta["destination"]),
                             packs=self._dispensed(view), unserved=unserved,
                             box_number=meta.get("box_number"))

    def _report(self, view: TaskView) -> None:
        if self.events is None:
            return
        if self.events.output_finished(self.outcome(view)):
            self._spawn(self._mark_reported([view.task_id]))

    def _task_finished(self, view: TaskView) -> None:
        if view.purpose == PURPOSE:
            self._report(view)

    async def output_info(self, key: TaskKey, include_packs: bool) -> TaskReport:
        view = self.d.find_task(PURPOSE, task_key(key))
        if view is None:
            return TaskReport("Unknown")
        packs = self._dispensed(view) if include_packs else ()
        return TaskReport(_STATUS[view.state], packs, int(view.meta["destination"]))

    async def cancel_output(self, key: TaskKey, actor: str) -> CancelStatus:
        view = self.d.find_task(PURPOSE, task_key(key))
        if view is None:
            return "Unknown"
        if view.state is TaskState.ABORTING:
            return "Cancelled"  # asked again: nothing more is dispensed either way
        if view.state in TASK_FINAL:
            return "CancelError"
        try:
            stopped = await self.commit.run(lambda: self.d.cancel_task(
                view.task_id, Actor(actor, ROLE), "cancelled by the pharmacy software"))
        except InvalidState:
            return "CancelError"  # it finished meanwhile
        log.info("wwks2 output cancelled", task_id=stopped.task_id, key=stopped.key,
                 state=stopped.state.value)
        self.sched.totes.tasks.task_event(stopped)
        if stopped.state in TASK_FINAL:
            self.sched.totes.tasks.finished(stopped)
        self.sched.wake()
        return "Cancelled"

    async def pending_outcomes(self, subscriber_id: int) -> Sequence[OutputOutcome]:
        return [self.outcome(v) for v in self.d.unreported_tasks(PURPOSE, f"{subscriber_id}/")]

    async def outcomes_delivered(self, keys: Sequence[TaskKey]) -> None:
        ids = [v.task_id for k in keys if (v := self.d.find_task(PURPOSE, task_key(k)))]
        if ids:
            await self._mark_reported(ids)

    # ================================================================== articles
    async def set_article_master(self, articles: Sequence[MasterArticle],
                                 actor: str) -> MasterSetResult:
        who = Actor(actor, ROLE)
        problem = await self.commit.run(lambda: self.articles.write(articles, who))
        if problem:
            return MasterSetResult(False, problem)
        self.articles.reload()
        mapped = sum(1 for a in articles if self.articles.drug_of(a.article_id))
        log.info("wwks2 article master set", articles=len(articles), mapped=mapped)
        return MasterSetResult(True)

    # ================================================================== input
    async def admit(self, scan: str, actor: Actor) -> object:
        """The loading desk's admission: ask the pharmacy software about the pack."""
        data = parse_scan(scan)
        assert data.batch is not None and data.expiry is not None  # the machine checked
        drug = data.gtin
        plain = scan.strip("\r\n").removeprefix("]d2").lstrip(GS)
        pack = ScannedPack(scan_code=plain, batch_number=data.batch, expiry_date=data.expiry,
                           serial_number=data.serial)
        if self.articles.requires_fridge(drug):
            raise LoadRefused("not_for_robot", "the article master says this article needs "
                              "the fridge; the robot does not store it")
        events = self.events
        if events is None:
            raise LoadRefused("ims_no_answer", "the WWKS2 server is not running")
        answer = await events.request_input(pack)
        if answer.verdict == "RejectedNoPickingIndicator":
            answer = await events.request_input(pack, request_id=answer.request_id,
                                                set_picking_indicator=True)
        article = (answer.article_id if answer.article_id and answer.article_id != plain
                   else self.articles.article_of(drug))

        def refuse(code: str, message: str) -> LoadRefused:
            events.input_finished(InputOutcome(answer.request_id, article, 0, plain,
                                               data.batch, data.expiry, data.serial))
            log.warning("wwks2 input refused", request_id=answer.request_id,
                        verdict=answer.verdict, reason=code)
            return LoadRefused(code, message)

        if answer.verdict == "Allowed":
            named = self.articles.drug_of(article)
            if named is not None and named != drug:
                raise refuse("ims_refused", f"the pharmacy software names article {article}, "
                             "which is another drug than the pack scanned")
            if answer.requires_fridge or self.articles.requires_fridge(drug, article):
                raise refuse("not_for_robot", "the pharmacy software says the article needs "
                             "the fridge; the robot does not store it")
            return _InputTicket(answer.request_id, article, pack)
        if answer.verdict == "AllowedForFridge":
            raise refuse("not_for_robot", "the pharmacy software allows this pack for the "
                         "fridge only; the robot stores no fridge packs")
        if answer.verdict == "NoAnswer":
            raise refuse("ims_no_answer", f"the pharmacy software did not answer: "
                         f"{answer.text}; set the pack aside and scan it again")
        text = f": {answer.text}" if answer.text else ""
        raise refuse("ims_refused", f"the pharmacy software refused the pack "
                     f"({answer.verdict}{text}); set it aside")

    def concluded(self, ticket: object, stored: PackView | None) -> None:
        assert isinstance(ticket, _InputTicket)
        if self.events is None:
            return
        p = ticket.pack
        self.events.input_finished(InputOutcome(
            ticket.request_id, ticket.article_id, stored.pack_id if stored else 0,
            p.scan_code, p.batch_number, p.expiry_date, p.serial_number))

    # ================================================================== shutdown
    async def stop(self) -> None:
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 2)


def _implements_backend(backend: DaemonWwks2Backend) -> Wwks2Backend:
    """Static check (mypy): the daemon's backend is what the server asks."""
    return backend
