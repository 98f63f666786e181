"""Output tasks: packs picked to an output for a requester that is not a patient's
shipment (pharmacy software over WWKS2; the expiry sweep, ``dispenser.core.sweep``).

A task is the second kind of work the robot does beside shipments. It is made of
**lines**, each asking for packs either by criteria (a drug, a quantity, optionally a
batch, a minimum expiry date, all from one batch) or by explicit pack ids. It is created
``queued`` with its stock reserved at once, from the same slots as shipments and with the
same rules: FEFO, never a blocked (quarantined) slot, never a pack reserved for a
shipment (nor a shipment's for a task: a reservation is a count on the slot, which both
kinds respect). What a line cannot get is ``short``: a task never waits for stock.

Packs asked for by id are reserved exactly: they must be the first packs of their slot
(the robot takes the oldest stored first) with nothing else reserved there, and the slot
is **claimed** until the task's pick from it is done (``StockIndex.claim_head``). Otherwise
they are short.

The purpose decides the shelf-life rule. ``wwks2_output`` (packs handed over at a counter)
takes only packs with at least ``min_shelf_life_days`` left, the threshold at which the
machine refuses to load a pack; ``destruction`` (packs taken out to be destroyed) takes
packs whatever their expiry.

Lifecycle (``TASK_TABLE``): ``queued`` -> ``in_process`` when the tote planner gives it its
output -> ``completed`` / ``incomplete`` when its tote is handed on (in the same
transaction as the hand-on, so its packs are ``dispensed``, or ``disposed`` for
``destruction``, exactly once), or ``aborted``
(cancelled or failed; while picking it passes through ``aborting``: the picks under way
finish and the packs already in the tote are handed on and reported). ``fire`` is the one
place a task changes state, each change with its audit row.

Size: output tasks are one piece. A line's bookkeeping (``reserved`` as counts on slots,
``packs`` picked, ``short``) and the claims of packs asked for by id are changed by
creating, reserving, losing a slot, pulling a pack from the tote, recording a pick and
finishing; read together they show that every pack asked for ends reserved, picked or
short, and that each claim is released. The request, record and view types at the top could
move to a module of their own (as ``views`` holds the shipments'); not yet done, and it
would move only names (the WWKS2 backend, the task methods and the task totes import them).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from dispenser.core.books import Books
from dispenser.core.errors import Conflict, InvalidState, NotFound, UnknownDrug
from dispenser.core.formulary import Formulary
from dispenser.core.lifecycles import TASK_LIFECYCLE
from dispenser.core.orders import Priority
from dispenser.core.policy import Policy
from dispenser.core.states import TASK_FINAL, PackState, TaskState
from dispenser.core.views import SYSTEM, Actor, PackView

if TYPE_CHECKING:
    from dispenser.core.allocation import Allocator
    from dispenser.core.packs import PackBook
    from dispenser.core.stock import Pack

__all__ = ["PURPOSES", "Task", "TaskBook", "TaskCriterion", "TaskLine", "TaskLineView",
           "TaskRequest", "TaskView"]

# What each purpose may take: ``shelf_life`` True means only packs fit to hand over (not
# expired, at least ``min_shelf_life_days`` left).
PURPOSES: dict[str, bool] = {"wwks2_output": True, "destruction": False}
# How a purpose's packs leave at the hand-on: handed over (``dispensed``), or sent for
# destruction (``disposed``: never counted as dispensed to anyone).
_HAND_ON_TRIGGER = {"wwks2_output": "dispense", "destruction": "dispose"}
_RANK = {p.value: p.rank for p in Priority}
_RANK_NAME = {p.rank: p.value for p in Priority}
_COLUMNS = ("task_id, seq, purpose, request_key, fingerprint, state, priority, output, actor, "
            "created_at, finished_at, reported_at, data")
_FINAL = tuple(s.value for s in TASK_FINAL)
_LIVE = tuple(s.value for s in TaskState if s not in TASK_FINAL)


@dataclass(frozen=True, slots=True)
class TaskCriterion:
    """One line of a task as asked: by ``drug_code`` (with ``quantity`` and the optional
    filters) or by ``pack_ids`` (those packs, ``quantity`` = their number). ``ref`` is the
    requester's own name for the line (a WWKS2 article id), reported back with it."""

    ref: str
    quantity: int
    drug_code: str | None = None
    pack_ids: tuple[int, ...] = ()
    batch: str | None = None
    min_expiry: date | None = None
    single_batch: bool = False


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A task to create. ``key`` is the requester's name for it (unique among live tasks of
    the purpose); the same key and ``fingerprint`` again is the same task. ``meta`` is the
    requester's (JSON), kept with the task and given back in its view."""

    purpose: str
    key: str
    fingerprint: str
    output: int
    priority: str  # urgent, high, normal, low
    criteria: tuple[TaskCriterion, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TaskLine:
    ref: str
    drug_code: str | None
    quantity: int
    pack_ids: list[int]
    batch: str | None
    min_expiry: str | None  # ISO date
    single_batch: bool
    reserved: list[list[int]] = field(default_factory=list)  # [[slot, count]] to pick
    packs: list[int] = field(default_factory=list)  # picked (then dispensed) pack ids
    short: int = 0  # not reserved and never will be

    @property
    def reserved_count(self) -> int:
        return sum(n for _, n in self.reserved)

    @property
    def done(self) -> bool:
        return len(self.packs) >= self.quantity

    def as_json(self) -> list[Any]:
        return [self.ref, self.drug_code, self.quantity, self.pack_ids, self.batch,
                self.min_expiry, self.single_batch, self.reserved, self.packs, self.short]

    @classmethod
    def from_json(cls, v: list[Any]) -> TaskLine:
        return cls(*v)


@dataclass(slots=True)
class Task:
    task_id: str
    seq: int
    purpose: str
    key: str
    fingerprint: str
    state: TaskState
    priority_rank: int
    output: int
    actor: str
    created_at: datetime
    lines: list[TaskLine]
    meta: dict[str, Any]
    finished_at: datetime | None = None
    reported_at: datetime | None = None

    def schedule_key(self) -> tuple[int, float, int]:
        """Priority, then first come first served."""
        return self.priority_rank, self.created_at.timestamp(), self.seq

    def data_json(self) -> str:
        return json.dumps({"lines": [ln.as_json() for ln in self.lines], "meta": self.meta},
                          separators=(",", ":"))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Task:
        d = json.loads(row[12])
        return cls(row[0], row[1], row[2], row[3], row[4], TaskState(row[5]), _RANK[row[6]],
                   row[7], row[8], datetime.fromisoformat(row[9]),
                   [TaskLine.from_json(v) for v in d["lines"]], d["meta"],
                   datetime.fromisoformat(row[10]) if row[10] else None,
                   datetime.fromisoformat(row[11]) if row[11] else None)


@dataclass(frozen=True, slots=True)
class TaskLineView:
    ref: str
    drug_code: str | None
    quantity: int
    pack_ids: tuple[int, ...]
    batch: str | None
    min_expiry: date | None
    single_batch: bool
    reserved: tuple[tuple[int, int], ...]  # (slot, count) still to pick
    packs: tuple[PackView, ...]  # picked (in the tote) or dispensed
    short: int


@dataclass(frozen=True, slots=True)
class TaskView:
    task_id: str
    purpose: str
    key: str
    fingerprint: str
    state: TaskState
    priority: str
    output: int
    actor: str
    created_at: datetime
    finished_at: datetime | None
    reported: bool
    lines: tuple[TaskLineView, ...]
    meta: Mapping[str, Any]

    @property
    def packs(self) -> list[PackView]:
        return [p for ln in self.lines for p in ln.packs]

    @property
    def picks(self) -> list[tuple[int, int]]:
        """(slot, count) still to pick, per slot."""
        out: dict[int, int] = {}
        for ln in self.lines:
            for slot, n in ln.reserved:
                out[slot] = out.get(slot, 0) + n
        return list(out.items())

    @property
    def asked(self) -> int:
        return sum(ln.quantity for ln in self.lines)


class TaskBook:
    """The live tasks (not final) in memory, every task in the ``tasks`` rows; ``fire`` is
    the one place a task changes state."""

    packs: PackBook  # wired by the Dispensary
    allocator: Allocator

    def __init__(self, books: Books, formulary: Formulary, policy: Policy) -> None:
        self.books = books
        self.journal = books.journal
        self.formulary = formulary
        self.policy = policy

    # ------------------------------------------------------------------ memory
    def load(self) -> None:
        """Live tasks from the journal; their reservations are put back on the slots by
        ``Allocator.load``."""
        self.live: dict[str, Task] = {}
        self.by_key: dict[tuple[str, str], str] = {}
        marks = ",".join("?" * len(_LIVE))
        for row in self.journal.iterate(
                f"SELECT {_COLUMNS} FROM tasks WHERE state IN ({marks}) ORDER BY seq", _LIVE):
            t = Task.from_row(row)
            self.live[t.task_id] = t
            self.by_key[(t.purpose, t.key)] = t.task_id
        self.next_seq = (self.journal.query_one("SELECT max(seq) FROM tasks")[0] or 0) + 1

    def _save(self, t: Task) -> None:
        self.journal.write(
            "UPDATE tasks SET state=?, updated_at=?, finished_at=?, data=? WHERE seq=?",
            (t.state.value, self.books.stamp(),
             t.finished_at.isoformat() if t.finished_at else None, t.data_json(), t.seq))

    # ------------------------------------------------------------------ lifecycle
    def fire(self, t: Task, trigger: str, actor: Actor,
             extra: dict[str, Any] | None = None) -> None:
        """The one place a task changes state: row, audit row, memory."""
        new = TASK_LIFECYCLE.next_state(t.state, trigger, t.task_id)
        before = {"state": t.state.value}
        t.state = new
        if new in TASK_FINAL:
            t.finished_at = self.books.now()
        self._save(t)
        after: dict[str, Any] = {"state": new.value, "trigger": trigger, "output": t.output}
        if new in TASK_FINAL:
            after["packs"] = {ln.ref: ln.packs for ln in t.lines}
            after["short"] = {ln.ref: ln.short for ln in t.lines if ln.short}
        if extra:
            after.update(extra)
        self.books.audit(actor, f"task.{new.value}", t.task_id, before, after)
        if new in TASK_FINAL:
            self.live.pop(t.task_id, None)
            if self.by_key.get((t.purpose, t.key)) == t.task_id:
                del self.by_key[(t.purpose, t.key)]

    def live_task(self, task_id: str, *states: TaskState) -> Task:
        t = self.live.get(task_id)
        if t is None:
            row = self.journal.query_one("SELECT state FROM tasks WHERE task_id=?", (task_id,))
            if row is None:
                raise NotFound(f"no task {task_id}")
            raise InvalidState(f"task {task_id} is already {row[0]}")
        if states and t.state not in states:
            raise InvalidState(f"task {task_id} is {t.state.value}; this needs "
                               + " or ".join(s.value for s in states))
        return t

    # ------------------------------------------------------------------ creating
    def _lines(self, req: TaskRequest) -> list[TaskLine]:
        if req.purpose not in PURPOSES:
            raise InvalidState(f"unknown task purpose {req.purpose!r}; one of "
                               + ", ".join(PURPOSES))
        if req.priority not in _RANK:
            raise InvalidState(f"unknown priority {req.priority!r}")
        if req.output < 1:
            raise InvalidState(f"output {req.output} does not exist; outputs count from 1")
        if not req.criteria:
            raise InvalidState("a task asks for at least one pack")
        unknown = sorted({c.drug_code for c in req.criteria
                          if c.drug_code is not None and c.drug_code not in self.formulary})
        if unknown:
            raise UnknownDrug(unknown)
        lines = []
        for i, c in enumerate(req.criteria, 1):
            if (c.drug_code is None) == (not c.pack_ids):
                raise InvalidState(f"line {i} ({c.ref}) names either a drug or packs")
            if c.pack_ids and c.quantity != len(c.pack_ids):
                raise InvalidState(f"line {i} ({c.ref}) asks for {c.quantity} packs but "
                                   f"names {len(c.pack_ids)}")
            if c.quantity < 1:
                raise InvalidState(f"line {i} ({c.ref}) asks for no pack")
            if c.drug_code is not None and not self.formulary[c.drug_code].robot:
                raise InvalidState(f"line {i} ({c.ref}): {self.formulary[c.drug_code].label} "
                                   "is a fridge or manual item, not stored in the robot")
            lines.append(TaskLine(c.ref, c.drug_code, c.quantity, list(c.pack_ids), c.batch,
                                  c.min_expiry.isoformat() if c.min_expiry else None,
                                  c.single_batch))
        return lines

    def create(self, req: TaskRequest, actor: Actor) -> Task:
        """Create a task and reserve its stock. A live task with the same key and
        fingerprint is returned as it is; with another fingerprint it is a ``Conflict``.
        A task for which nothing at all could be reserved ends ``incomplete`` at once."""
        known = self.by_key.get((req.purpose, req.key))
        if known is not None:
            t = self.live[known]
            if t.fingerprint != req.fingerprint:
                raise Conflict(f"task {req.key} is in use ({t.task_id}, {t.state.value}) "
                               "with other content")
            return t
        lines = self._lines(req)
        now = self.books.now()
        seq = self.next_seq
        self.next_seq += 1
        t = Task(f"OT-{seq:08d}", seq, req.purpose, req.key, req.fingerprint, TaskState.QUEUED,
                 _RANK[req.priority], req.output, actor.name, now, lines, dict(req.meta))
        self.journal.write(
            f"INSERT INTO tasks ({_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (t.task_id, seq, t.purpose, t.key, t.fingerprint, t.state.value, req.priority,
             t.output, actor.name, now.isoformat(), None, None, t.data_json(),
             now.isoformat()))
        self.live[t.task_id] = t
        self.by_key[(t.purpose, t.key)] = t.task_id
        self.books.audit(actor, "task.created", t.task_id, None, {
            "state": t.state.value, "purpose": t.purpose, "key": t.key,
            "priority": req.priority, "output": t.output,
            "lines": [{"ref": ln.ref, "drug_code": ln.drug_code, "quantity": ln.quantity,
                       "pack_ids": ln.pack_ids, "batch": ln.batch,
                       "min_expiry": ln.min_expiry, "single_batch": ln.single_batch}
                      for ln in lines]})
        for ln in lines:
            self._reserve(t, ln, ln.quantity)
        self._save(t)
        self.books.audit(SYSTEM, "task.reserved", t.task_id, None, {
            "picks": [[ln.ref, ln.reserved] for ln in lines if ln.reserved],
            "short": {ln.ref: ln.short for ln in lines if ln.short}})
        if not any(ln.reserved for ln in lines):
            self.fire(t, "fall_short", SYSTEM, extra={"reason": "nothing to pick"})
        return t

    # ------------------------------------------------------------------ reservations
    def usable_from(self, t: Task, ln: TaskLine) -> date:
        """The earliest expiry a pack of this line may have."""
        floor = date.min
        if PURPOSES[t.purpose]:
            today = self.books.today()
            floor = today + timedelta(days=self.policy.min_shelf_life_days)
        if ln.min_expiry is not None:
            floor = max(floor, date.fromisoformat(ln.min_expiry))
        return floor

    def _reserve(self, t: Task, ln: TaskLine, need: int) -> None:
        """Reserve up to ``need`` more packs for a line; what cannot be had is short."""
        stock = self.packs.stock
        got: list[tuple[int, int]] = []
        if ln.drug_code is not None:
            got, miss = stock.allocate_for_task(ln.drug_code, need, self.usable_from(t, ln),
                                                ln.batch, ln.single_batch)
            if ln.single_batch and ln.packs and got:
                # Later packs must be of the batch already picked.
                batch = self.packs.live[ln.packs[0]].batch if ln.packs[0] in self.packs.live \
                    else None
                if any(stock.slots[s].batch != batch for s, _ in got):
                    for s, n in got:
                        stock.unreserve(s, n)
                    got, miss = [], need
        else:
            wanted = [pid for pid in ln.pack_ids if pid not in ln.packs][:need]
            miss = need
            floor = self.usable_from(t, ln)
            by_slot: dict[int, list[int]] = {}
            for pid in wanted:
                p = self.packs.live.get(pid)
                if (p is not None and p.state is PackState.IN_STOCK and p.slot is not None
                        and p.expiry >= floor):
                    by_slot.setdefault(p.slot, []).append(pid)
            for slot_no, ids in by_slot.items():
                if stock.claim_head(slot_no, ids):
                    got.append((slot_no, len(ids)))
                    miss -= len(ids)
        for slot_no, n in got:
            for r in ln.reserved:
                if r[0] == slot_no:
                    r[1] += n
                    break
            else:
                ln.reserved.append([slot_no, n])
            self.allocator.slot_res.setdefault(slot_no, set()).add(t.task_id)
        ln.short += miss

    def _release(self, t: Task) -> set[str]:
        """Give back every reservation not yet picked; returns the drugs freed."""
        stock = self.packs.stock
        freed: set[str] = set()
        for ln in t.lines:
            for slot_no, n in ln.reserved:
                slot = stock.slots.get(slot_no)
                if slot is not None:
                    freed.add(slot.drug_code)
                if ln.pack_ids:
                    stock.release_claim(slot_no)
                stock.unreserve(slot_no, n)
                ln.short += n
                self.allocator.slot_res.get(slot_no, set()).discard(t.task_id)
            ln.reserved = []
        return freed

    def lose_slot(self, task_id: str, slot_no: int) -> None:
        """The slot can no longer serve the task (blocked, packs gone): its reservation
        there is moved to other stock (by criteria) or is short (by pack id)."""
        t = self.live.get(task_id)
        if t is None:
            return
        stock = self.packs.stock
        moved: list[list[Any]] = []
        for ln in t.lines:
            for r in [r for r in ln.reserved if r[0] == slot_no]:
                ln.reserved.remove(r)
                if ln.pack_ids:
                    stock.release_claim(slot_no)
                stock.unreserve(slot_no, r[1])
                if t.state in (TaskState.QUEUED, TaskState.IN_PROCESS):
                    self._reserve(t, ln, r[1])
                else:
                    ln.short += r[1]
                moved.append([ln.ref, slot_no, r[1]])
        self._save(t)
        self.books.audit(SYSTEM, "task.reallocated", t.task_id, None, {"lost": moved})

    def pull_from_tote(self, p: Pack) -> None:
        """A picked pack left the task's tote (quarantined or lost): the line gets another
        from stock if it can (the pack's state change is the caller's)."""
        t = self.live.get(p.task_id or "")
        if t is None:
            return
        for ln in t.lines:
            if p.pack_id in ln.packs:
                ln.packs.remove(p.pack_id)
                if t.state is TaskState.IN_PROCESS:
                    self._reserve(t, ln, 1)
                else:
                    ln.short += 1
        self._save(t)
        self.books.audit(SYSTEM, "task.pack_removed", t.task_id, None,
                         {"pack_id": p.pack_id, "state": p.state.value})

    # ------------------------------------------------------------------ picking
    def start(self, task_id: str, actor: Actor) -> Task:
        t = self.live_task(task_id, TaskState.QUEUED)
        self.fire(t, "start", actor)
        return t

    def record_pick(self, task_id: str, slot: int, picked: int, actor: Actor) -> list[int]:
        """The robot took ``picked`` packs from ``slot`` for this task (the total for every
        line reserved there). Fewer than reserved means the slot cannot be trusted: it is
        blocked and the lines get other stock (or are short). Returns the pack ids now in
        the tote."""
        t = self.live_task(task_id, TaskState.IN_PROCESS, TaskState.ABORTING)
        entries = [(ln, r) for ln in t.lines for r in ln.reserved if r[0] == slot]
        if not entries:
            raise InvalidState(f"task {task_id} has no pick reserved in slot {slot}")
        reserved = sum(r[1] for _, r in entries)
        if not 0 <= picked <= reserved:
            raise InvalidState(f"{picked} packs picked from slot {slot} but {reserved} "
                               "were reserved; report at most the reserved count")
        stock = self.packs.stock
        claimed = any(ln.pack_ids for ln, _ in entries)
        drug_code = stock.slots[slot].drug_code
        if claimed:
            stock.release_claim(slot)
        stock.unreserve(slot, reserved)
        taken = stock.take(slot, picked) if picked else []
        self.allocator.slot_res.get(slot, set()).discard(t.task_id)
        rest = list(taken)
        owed: list[tuple[TaskLine, int]] = []
        for ln, r in entries:
            got, rest = rest[: r[1]], rest[r[1]:]
            ln.reserved.remove(r)
            for pid in got:
                p = self.packs.live[pid]
                p.task_id, p.shipment_id, p.order_id = t.task_id, None, None
                self.packs.fire(p, "pick", actor)
            ln.packs.extend(got)
            if len(got) < r[1]:
                owed.append((ln, r[1] - len(got)))
        self._save(t)
        self.books.audit(actor, "task.pick", t.task_id, None,
                         {"slot": slot, "reserved": reserved, "picked": picked,
                          "packs": taken})
        if picked < reserved:
            self.packs.discrepancy(slot, "short_pick", reserved, picked, None, actor)
            self.packs.block_slot(slot, actor, f"robot picked {picked} of {reserved}")
            for ln, n in owed:
                if t.state is TaskState.IN_PROCESS:
                    self._reserve(t, ln, n)
                else:
                    ln.short += n
            self._save(t)
        if claimed:
            # The rest of a slot claimed by pack id can serve shipments waiting for it.
            self.allocator.retry_waiting([drug_code])
        return taken

    def finish(self, task_id: str, actor: Actor) -> Task:
        """The task's tote was handed on (or there was nothing to hand on): its packs are
        dispensed (``disposed`` for a destruction task), what is still reserved is given
        back, and it ends ``completed``, ``incomplete`` or (after a cancel or failure)
        ``aborted``."""
        t = self.live_task(task_id, TaskState.IN_PROCESS, TaskState.ABORTING)
        freed = self._release(t)
        trigger = _HAND_ON_TRIGGER[t.purpose]
        for ln in t.lines:
            for pid in ln.packs:
                p = self.packs.live.get(pid)
                if p is not None and p.state is PackState.PICKED:
                    self.packs.fire(p, trigger, actor)
        if t.state is TaskState.ABORTING:
            self.fire(t, "abort", actor)
        elif all(ln.done for ln in t.lines):
            self.fire(t, "complete", actor)
        else:
            self.fire(t, "fall_short", actor)
        self.allocator.retry_waiting(freed)
        return t

    def stop(self, task_id: str, trigger: str, actor: Actor, reason: str) -> Task:
        """Cancel (``cancel``, the requester) or give up (``fail``, the machine) a task.
        Queued, it ends ``aborted`` at once and its stock is given back. Picking, it
        becomes ``aborting``: what is reserved stays until the caller knows no pick is
        under way (then ``finish``)."""
        t = self.live_task(task_id, TaskState.QUEUED, TaskState.IN_PROCESS)
        if t.state is TaskState.QUEUED:
            freed = self._release(t)
            self.fire(t, trigger, actor, extra={"reason": reason})
            self.allocator.retry_waiting(freed)
        else:
            self.fire(t, trigger, actor, extra={"reason": reason})
        return t

    def mark_reported(self, task_ids: Sequence[str]) -> None:
        """The requester has been told these tasks' outcomes."""
        now = self.books.stamp()
        self.journal.write_many("UPDATE tasks SET reported_at=? WHERE task_id=? AND "
                                "reported_at IS NULL", [(now, tid) for tid in task_ids])

    # ------------------------------------------------------------------ reading
    def get(self, task_id: str) -> Task:
        t = self.live.get(task_id)
        if t is not None:
            return t
        row = self.journal.query_one(f"SELECT {_COLUMNS} FROM tasks WHERE task_id=?",
                                     (task_id,))
        if row is None:
            raise NotFound(f"no task {task_id}")
        return Task.from_row(row)

    def find(self, purpose: str, key: str) -> Task | None:
        """The latest task with this key (live or finished), None if there is none."""
        tid = self.by_key.get((purpose, key))
        if tid is not None:
            return self.live[tid]
        row = self.journal.query_one(
            f"SELECT {_COLUMNS} FROM tasks INDEXED BY tasks_key WHERE purpose=? AND "
            "request_key=? ORDER BY seq DESC LIMIT 1", (purpose, key))
        return None if row is None else Task.from_row(row)

    def next_due(self, limit: int, outputs: Collection[int] | None = None) -> list[Task]:
        """Queued tasks in schedule order: priority, then arrival. With ``outputs``, only
        the first task waiting for each of those outputs (one tote per output)."""
        queued = [t for t in self.live.values() if t.state is TaskState.QUEUED
                  and (outputs is None or t.output in outputs)]
        queued.sort(key=Task.schedule_key)
        if outputs is not None:
            first: dict[int, Task] = {}
            for t in queued:
                first.setdefault(t.output, t)
            queued = sorted(first.values(), key=Task.schedule_key)
        return queued[:limit]

    def page(self, state: TaskState | None, purpose: str | None, limit: int,
             after: str | None) -> list[Task]:
        sql = f"SELECT {_COLUMNS} FROM tasks WHERE 1=1"
        params: list[Any] = []
        if state is not None:
            sql += " AND state=?"
            params.append(state.value)
        if purpose is not None:
            sql += " AND purpose=?"
            params.append(purpose)
        if after is not None:
            sql += " AND seq > (SELECT seq FROM tasks WHERE task_id=?)"
            params.append(after)
        sql += " ORDER BY seq LIMIT ?"
        params.append(limit)
        return [self.live.get(row[0]) or Task.from_row(row)
                for row in self.journal.query(sql, params)]

    def unreported(self, purpose: str, key_prefix: str) -> list[Task]:
        """Finished tasks of this purpose whose key starts with ``key_prefix`` and whose
        outcome the requester was not told yet, oldest first."""
        marks = ",".join("?" * len(_FINAL))
        rows = self.journal.query(
            f"SELECT {_COLUMNS} FROM tasks INDEXED BY tasks_unreported WHERE "
            "reported_at IS NULL AND purpose=? AND request_key >= ? AND request_key < ? "
            f"AND state IN ({marks}) ORDER BY seq",
            (purpose, key_prefix, key_prefix + "\U0010ffff", *_FINAL))
        return [Task.from_row(r) for r in rows]

    def view(self, t: Task) -> TaskView:
        pack = self.packs.view
        return TaskView(
            task_id=t.task_id, purpose=t.purpose, key=t.key, fingerprint=t.fingerprint,
            state=t.state, priority=_RANK_NAME[t.priority_rank], output=t.output,
            actor=t.actor, created_at=t.created_at, finished_at=t.finished_at,
            reported=t.reported_at is not None,
            lines=tuple(TaskLineView(
                ln.ref, ln.drug_code, ln.quantity, tuple(ln.pack_ids), ln.batch,
                date.fromisoformat(ln.min_expiry) if ln.min_expiry else None,
                ln.single_batch, tuple((s, n) for s, n in ln.reserved),
                tuple(pack(p) for p in ln.packs), ln.short) for ln in t.lines),
            meta=t.meta)
