"""The expiry sweep (issue 8): the packs in stock that can serve no order any more (near
expiry or expired, ``dispenser.core.expiry``) picked to one output in totes for
destruction.

The rule, as docs/orders.md states it:

- **What it takes**: the packs ``PackBook.to_sweep`` offers when the sweep is made (packs
  ``in_stock``, near expiry or expired, on a slot that is not blocked), taken by pack id:
  each slot's packs are **claimed** at once (``StockIndex.claim_head``), so no shipment
  or other task can take them meanwhile, and the robot's first packs from that slot are
  exactly these. A pack that expires later is never taken (a slot holds one batch).
- **Reservations are respected**: a slot on which a shipment or another task already
  holds a reservation (made before its packs aged out) is not touched; its near-expiry
  packs are ``left`` and a later sweep takes them (a shipment's reservation there is moved
  off when its picking starts, ``Allocator.recheck``).
- **Quarantined packs are not taken**: a quarantined pack (recalled batch, a slot whose
  count could not be trusted) waits for a person's decision, which the sweep does not
  make; and a blocked slot's packs may not be where the journal says, so the robot is not
  sent there.
- **Totes**: each tote holds at most ``tote_capacity`` packs, and one slot's packs go into
  one tote (a slot with more near-expiry packs than a tote holds gives its first
  ``tote_capacity``; the rest are ``left``). More packs than one tote holds make several
  totes: one output task of purpose ``destruction`` per tote, queued on the same output and
  picked one after the other (the tote planner gives an output to one task at a time, in
  the order they were made). They go at priority ``high``: a person asked for them.
- **End**: at the hand-on the task's packs become ``disposed`` (``TaskBook.finish``): out
  of the machine for destruction, never dispensed to anyone.
- **One sweep at a time**: while a destruction task is not finished, another sweep is
  refused (``SweepRunning``). With nothing to take, no task is made and the outcome says
  so (``SweepView.sweep_id`` is None).
- **Audit**: the sweep's own row (``stock.swept``: who, which output, how many packs and
  totes, every pack id, the packs left), each task's rows (created, reserved with its
  pack ids), then per pack ``pack.picked`` and ``pack.disposed`` with the task's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from dispenser.core.books import Books
from dispenser.core.errors import InvalidState
from dispenser.core.packs import PackBook
from dispenser.core.tasks import TaskBook, TaskCriterion, TaskRequest, TaskView
from dispenser.core.views import Actor, PackView

__all__ = ["SWEEP_PRIORITY", "SWEEP_PURPOSE", "ExpirySweep", "SweepRunning", "SweepView"]

SWEEP_PURPOSE = "destruction"
SWEEP_PRIORITY = "high"


class SweepRunning(InvalidState):
    """A sweep was asked for while another one's totes are not all handed on."""

    def __init__(self, sweep_id: str, task_ids: list[str]) -> None:
        self.sweep_id = sweep_id
        self.task_ids = task_ids
        super().__init__(f"an expiry sweep is under way ({sweep_id}: "
                         f"{', '.join(task_ids)}); start the next one when its totes are "
                         "handed on")


@dataclass(frozen=True, slots=True)
class SweepView:
    """What a sweep took. ``sweep_id`` is None when there was nothing to take (then
    ``tasks`` and ``packs`` are empty). ``packs`` are the packs reserved for destruction
    (still in stock, until picked), tote by tote; ``left`` the near-expiry packs it could
    not take now (their slot holds another's reservation, or more than a tote)."""

    sweep_id: str | None
    output: int
    tote_capacity: int
    near_expiry_before: date
    tasks: tuple[TaskView, ...]
    packs: tuple[PackView, ...]
    left: tuple[PackView, ...]


class ExpirySweep:
    """Makes sweeps; the tasks it makes are worked like any output task."""

    def __init__(self, books: Books, packs: PackBook, tasks: TaskBook) -> None:
        self.books = books
        self.packs = packs
        self.tasks = tasks

    def running(self) -> tuple[str, list[str]] | None:
        """(sweep id, its unfinished task ids) of the sweep under way, if any."""
        live = sorted((t for t in self.tasks.live.values() if t.purpose == SWEEP_PURPOSE),
                      key=lambda t: t.seq)
        if not live:
            return None
        return str(live[0].meta.get("sweep", live[0].key)), [t.task_id for t in live]

    def sweep(self, output: int, tote_capacity: int, actor: Actor) -> SweepView:
        """Reserve every pack to sweep and make its totes (see the module docstring).
        Raises ``SweepRunning`` while a sweep is under way, ``InvalidState`` for an output
        or a capacity below 1."""
        if output < 1:
            raise InvalidState(f"output {output} does not exist; outputs count from 1")
        if tote_capacity < 1:
            raise InvalidState(f"a tote of {tote_capacity} packs holds nothing")
        under_way = self.running()
        if under_way is not None:
            raise SweepRunning(*under_way)
        line = self.packs.near_expiry_before()
        stock = self.packs.stock
        by_slot: dict[int, list[PackView]] = {}
        for v in self.packs.to_sweep():
            assert v.slot is not None
            by_slot.setdefault(v.slot, []).append(v)
        heads: list[list[PackView]] = []
        left: list[PackView] = []
        for slot_no, views in by_slot.items():
            slot = stock.slots[slot_no]
            if slot.reserved or slot.claimed:
                left += views  # another's reservation first: a later sweep
                continue
            heads.append(views[:tote_capacity])
            left += views[tote_capacity:]
        if not heads:
            return SweepView(None, output, tote_capacity, line, (), (), tuple(left))
        totes: list[list[list[PackView]]] = []
        for head in heads:
            if totes and sum(map(len, totes[-1])) + len(head) <= tote_capacity:
                totes[-1].append(head)
            else:
                totes.append([head])
        sweep_id = f"SW-{self.tasks.next_seq:08d}"
        made = []
        for number, tote in enumerate(totes, 1):
            criteria = tuple(
                TaskCriterion(f"slot:{head[0].slot}", len(head),
                              pack_ids=tuple(v.pack_id for v in head)) for head in tote)
            request = TaskRequest(SWEEP_PURPOSE, f"{sweep_id}/{number}", sweep_id, output,
                                  SWEEP_PRIORITY, criteria,
                                  {"sweep": sweep_id, "tote": number, "totes": len(totes)})
            task = self.tasks.create(request, actor)
            if any(ln.short for ln in task.lines):
                # The offer and the claims disagree: a defect; the call is rolled back.
                raise InvalidState(f"the sweep could not reserve the packs of {task.task_id}"
                                   "; nothing was changed")
            made.append(task)
        taken = [v for tote in totes for head in tote for v in head]
        today = self.books.today()
        self.books.audit(actor, "stock.swept", sweep_id, None, {
            "output": output, "packs": len(taken), "totes": len(totes),
            "tasks": [t.task_id for t in made], "tote_capacity": tote_capacity,
            "near_expiry_before": line.isoformat(),
            "expired": sum(1 for v in taken if v.expiry < today),
            "pack_ids": [v.pack_id for v in taken],
            "left": [v.pack_id for v in left]})
        return SweepView(sweep_id, output, tote_capacity, line,
                         tuple(self.tasks.view(t) for t in made), tuple(taken), tuple(left))
