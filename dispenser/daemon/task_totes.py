"""Output tasks at their outputs: the tote planner's second kind of work.

An output task (``dispenser.core.tasks``) asks for packs at one output. When that output
is free and the task comes before the next shipment (``comes_before``), picking starts
(``start_before``); its picks are planned as PICK intents for the robot ledger, each
naming the task, and booked on the task when they complete (``on_pick``). Once nothing is
left to pick the tote is handed on (HAND_ON), and the task ends (``completed``,
``incomplete`` or ``aborted``) in the same transaction as the hand-on's completion, so its
packs are dispensed exactly once across any crash. A task that has nothing in its tote
ends without a hand-on. No label is printed: the requester (pharmacy software) has its
own.

A task being aborted (cancelled or failed while picking) gets no new pick; once the picks
under way are done, what it has is handed on.

Listeners (``on_finished``) hear of each task that ended, after the commit that ended it.
After a restart the tasks being picked are taken up again from the journal (``restore``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from dispenser.core import SYSTEM, Dispensary
from dispenser.core.intake import RANK
from dispenser.core.states import PackState, TaskState
from dispenser.core.tasks import TaskView
from dispenser.daemon.ledger import After, Counters, Intent, RobotLedger
from dispenser.daemon.robot import Completion, Motion, Outcome, Refusal, Status
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["TaskTote", "TaskTotes", "comes_before"]

MAX_INVALID_PER_TASK = 3

# (priority rank, when it is due): a task is due when it was asked for, a shipment at
# the start of its delivery window.
Contender = tuple[int, float]


def comes_before(task: TaskView, contender: Contender | None) -> bool:
    """Does the task get a free output before the shipment that would take it? By
    priority first; at the same priority the one due earlier."""
    if contender is None:
        return True
    return (RANK[task.priority], task.created_at.timestamp()) < contender


@dataclass
class TaskTote:
    task_id: str
    output: int
    invalid: int = 0


class TaskTotes:
    def __init__(self, dispensary: Dispensary, ledger: RobotLedger, counters: Counters,
                 clock: Callable[[], str], event: Callable[..., None]) -> None:
        self.d = dispensary
        self.ledger = ledger
        self.counters = counters
        self._now = clock
        self._event = event
        self.active: dict[str, TaskTote] = {}
        self.on_finished: list[Callable[[TaskView], None]] = []
        self.tasks_finished = 0

    # ------------------------------------------------------------------ events
    def task_event(self, view: TaskView) -> None:
        self._event("task", task_id=view.task_id, state=view.state.value,
                    purpose=view.purpose, output=view.output)

    def finished(self, view: TaskView) -> None:
        """A task ended (call after the commit that ended it)."""
        self.tasks_finished += 1
        self.task_event(view)
        log.info("task finished", task_id=view.task_id, state=view.state.value,
                 output=view.output, packs=len(view.packs), asked=view.asked)
        for listener in self.on_finished:
            try:
                listener(view)
            except Exception:
                log.exception("task listener failed", task_id=view.task_id)

    # ------------------------------------------------------------------ outputs
    def restore(self) -> None:
        """Take up the tasks being picked (after a start)."""
        if self.active:
            return
        for view in self.d.live_tasks():
            if view.state in (TaskState.IN_PROCESS, TaskState.ABORTING):
                self.active[view.task_id] = TaskTote(view.task_id, view.output)

    def outputs_in_use(self) -> dict[int, str]:
        return {t.output: t.task_id for t in self.active.values()}

    def waiting(self, free: list[int]) -> dict[int, TaskView]:
        """The first queued task for each free output."""
        return {v.output: v for v in self.d.next_tasks(limit=len(free), outputs=free)}

    def start_before(self, heads: dict[int, TaskView], free: list[int],
                     contender: Contender | None, capacity: int) -> None:
        """Start the waiting tasks (``heads``, by output) whose output is free and that
        come before ``contender`` (the next shipment; None: no shipment wants an output).
        Their outputs leave ``free`` and ``heads``."""
        for view in sorted(heads.values(), key=lambda v: (RANK[v.priority], v.task_id)):
            if view.output not in free or not comes_before(view, contender):
                continue
            del heads[view.output]
            packs = sum(n for _, n in view.picks)
            if packs > capacity:
                failed = self.d.fail_task(view.task_id, SYSTEM,
                                          f"{packs} packs do not fit one tote ({capacity})")
                self.finished(failed)
                continue
            free.remove(view.output)
            started = self.d.start_task(view.task_id)
            self.active[view.task_id] = TaskTote(view.task_id, view.output)
            log.info("task picking", task_id=view.task_id, output=view.output, picks=packs)
            self.task_event(started)

    # ------------------------------------------------------------------ planning
    def plan(self, status: Status, room: int) -> list[Intent]:
        """Intents the tasks' totes need now (at most ``room``)."""
        out: list[Intent] = []
        for tote in sorted(self.active.values(), key=lambda t: t.task_id):
            if room - len(out) <= 0:
                break
            out += self._plan(tote, status, room - len(out))
        return out

    def _plan(self, tote: TaskTote, status: Status, room: int) -> list[Intent]:
        tid = tote.task_id
        mine = [i for i in self.ledger.outstanding.values() if i.task_id == tid]
        if any(i.motion is Motion.HAND_ON for i in mine):
            return []
        view = self.d.get_task(tid)
        if view.state not in (TaskState.IN_PROCESS, TaskState.ABORTING):
            self.active.pop(tid, None)
            return []
        picking = [i for i in mine if i.motion is Motion.PICK]
        if view.state is TaskState.IN_PROCESS and view.picks:
            if tote.output in status.output_full:
                return []  # no tote there, or it is full: wait for a person
            wanted = dict(view.picks)
            for i in picking:
                wanted[i.slot] = wanted.get(i.slot, 0) - i.count
            return [self.ledger.intent(Motion.PICK, slot, tote.output, count, task_id=tid)
                    for slot, count in list(wanted.items()) if count > 0][:room]
        if picking:
            return []  # the picks under way finish first
        if view.packs:
            return [self.ledger.intent(Motion.HAND_ON, output=tote.output, task_id=tid)]
        # Nothing in the tote and nothing more to pick: it ends without a hand-on.
        done = self.d.finish_task(tid)
        self.active.pop(tid, None)
        self.finished(done)
        return []

    # ------------------------------------------------------------------ completions
    def on_pick(self, intent: Intent, c: Completion, after: After) -> None:
        tid = intent.task_id
        assert tid is not None
        tote = self.active.get(tid)
        if c.outcome in (Outcome.OK, Outcome.SLOT_EMPTY, Outcome.JAM, Outcome.DROPPED,
                         Outcome.ESTOP):
            moved = min(c.detail, intent.count)
            if c.outcome is Outcome.ESTOP and moved == 0:
                return  # cut short before anything moved: planned again
            if c.outcome in (Outcome.JAM, Outcome.DROPPED) and moved < intent.count:
                # As for shipments: the pack after the delivered ones is in neither tote
                # nor slot. Booked as picked, then lost from the tote.
                packs = self.d.record_task_pick(tid, intent.slot, moved + 1)
                lost = packs.pop()
                state = PackState.DROPPED if c.outcome is Outcome.DROPPED else PackState.MISSING
                self.d.record_pack_lost(lost.pack_id, state)
                after.append(functools.partial(log.warning, "pack lost in a fault",
                                               pack_id=lost.pack_id, task_id=tid,
                                               state=state.value))
            else:
                packs = self.d.record_task_pick(tid, intent.slot, moved)
            self.counters.packs_picked += len(packs)
            after.append(functools.partial(log.info, "picked", task_id=tid,
                                           slot=intent.slot, packs=len(packs),
                                           output=intent.output))
        elif c.outcome is Outcome.OUTPUT_FULL:
            log.warning("output full, task pick planned again", task_id=tid,
                        output=intent.output)
        elif c.outcome is Outcome.INVALID:
            reason = c.refusal.value if c.refusal is not None else str(c.detail)
            log.error("robot refused a task's pick", task_id=tid, slot=intent.slot,
                      reason=reason)
            if c.refusal is Refusal.NOT_HOMED or tote is None:
                return
            tote.invalid += 1
            if tote.invalid == MAX_INVALID_PER_TASK:
                view = self.d.fail_task(tid, SYSTEM, f"robot refused its picks ({reason})")
                after.append(functools.partial(self.task_event, view))
        # ABORTED: nothing moved; the reservation stays and is planned again.

    def on_hand_on(self, intent: Intent, c: Completion, after: After) -> None:
        tid = intent.task_id
        assert tid is not None
        if c.outcome is not Outcome.OK:
            return  # planned again
        # In the same transaction as the hand-on: no crash can leave the packs handed on
        # but the task open (or the other way round).
        view = self.d.finish_task(tid)
        log.info("tote handed on", task_id=tid, output=intent.output)
        after.append(functools.partial(self.active.pop, tid, None))
        after.append(functools.partial(self.finished, view))
