"""Lifecycles as data: the states an order, a shipment, a pack and an output task go
through, and the only changes allowed between them.

Each lifecycle is a table of ``Row(trigger, sources, dest)``. The table is in charge:
``OrderBook.fire``, ``ShipmentBook.fire``, ``PackBook.fire`` and ``TaskBook.fire`` are the
only places an entity changes state; each looks the trigger up here and refuses a change
the table does not hold (``IllegalTransition``: a programming error, audited by the
facade). The
diagrams in docs/architecture.md are generated from these tables (``mermaid``); a test
fails when the committed diagrams differ.

No ``transitions`` machine here: a shared validator machine would add nothing to a
dictionary lookup, and one machine per order costs far too much (about 30 s per 100,000
models). The daemon's controller machine (``dispenser.daemon.controller``) reuses ``Row``
and ``oracle``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from dispenser.core.states import OrderState, PackState, ShipmentState, TaskState

__all__ = [
    "ORDER_CREATED",
    "ORDER_LIFECYCLE",
    "ORDER_TABLE",
    "PACK_CREATED",
    "PACK_LIFECYCLE",
    "PACK_TABLE",
    "SHIPMENT_CREATED",
    "SHIPMENT_LIFECYCLE",
    "SHIPMENT_TABLE",
    "TASK_CREATED",
    "TASK_LIFECYCLE",
    "TASK_TABLE",
    "IllegalTransition",
    "Lifecycle",
    "Row",
    "mermaid",
    "oracle",
]

S = TypeVar("S", bound=enum.Enum)


class IllegalTransition(Exception):
    """A change of state that the lifecycle table does not allow: a defect in the code
    that asked for it, never a caller's mistake. Names the entity and both states."""

    def __init__(self, what: str, subject: str, state: enum.Enum, trigger: str) -> None:
        super().__init__(f"{what} {subject}: {trigger!r} is not allowed in state "
                         f"{state.value!r}")
        self.what = what
        self.subject = subject
        self.state = state
        self.trigger = trigger


@dataclass(frozen=True)
class Row(Generic[S]):
    trigger: str
    sources: tuple[S, ...]
    dest: S


def oracle(table: Iterable[Row[S]]) -> dict[tuple[S, str], S]:
    """``(state, trigger) -> dest`` for every allowed pair; absent pairs are refused."""
    out: dict[tuple[S, str], S] = {}
    for row in table:
        for src in row.sources:
            if (src, row.trigger) in out:
                raise ValueError(f"table has two rows for {row.trigger!r} from {src}")
            out[(src, row.trigger)] = row.dest
    return out


class Lifecycle(Generic[S]):
    """A lifecycle table with its lookup: ``next_state`` or ``IllegalTransition``."""

    def __init__(self, what: str, table: tuple[Row[S], ...], created: frozenset[S]) -> None:
        self.what = what
        self.table = table
        self.created = created  # the states an entity may be created in
        self.triggers = tuple(sorted({r.trigger for r in table}))
        self._next = oracle(table)

    def next_state(self, state: S, trigger: str, subject: str = "") -> S:
        try:
            return self._next[(state, trigger)]
        except KeyError:
            raise IllegalTransition(self.what, subject, state, trigger) from None

    def allows(self, state: S, trigger: str) -> bool:
        return (state, trigger) in self._next

    def allowed(self, state: S) -> list[str]:
        return [t for t in self.triggers if (state, t) in self._next]


Ord = OrderState
_ORDER_OPEN = (Ord.RECEIVED, Ord.HELD, Ord.QUEUED, Ord.PICKING, Ord.LABELLING)

ORDER_TABLE: tuple[Row[OrderState], ...] = (
    # Its shipment got stock (or a pharmacist released it and stock was there).
    Row("queue", (Ord.RECEIVED, Ord.HELD), Ord.QUEUED),
    # Held by a check at intake is a creation state; these are holds for stock. A held
    # order is held again when what it waits for changes.
    Row("hold", (Ord.RECEIVED, Ord.HELD, Ord.QUEUED), Ord.HELD),
    # A pharmacist overrides the check holds: the order joins a shipment.
    Row("release", (Ord.HELD,), Ord.RECEIVED),
    Row("start_picking", (Ord.QUEUED,), Ord.PICKING),
    Row("start_labelling", (Ord.PICKING,), Ord.LABELLING),
    Row("complete", (Ord.LABELLING,), Ord.COMPLETED),
    Row("cancel", (Ord.RECEIVED, Ord.HELD, Ord.QUEUED), Ord.CANCELLED),
    Row("reject", (Ord.RECEIVED, Ord.HELD), Ord.REJECTED),
    Row("fail", _ORDER_OPEN, Ord.FAILED),
)
ORDER_CREATED = frozenset({Ord.RECEIVED, Ord.HELD, Ord.REJECTED})

H = ShipmentState
_SHIPMENT_OPEN = (H.FORMING, H.HELD, H.QUEUED, H.PICKING, H.LABELLING)

SHIPMENT_TABLE: tuple[Row[ShipmentState], ...] = (
    Row("queue", (H.FORMING, H.HELD), H.QUEUED),
    Row("hold", (H.FORMING, H.HELD, H.QUEUED), H.HELD),
    Row("start_picking", (H.QUEUED,), H.PICKING),
    Row("start_labelling", (H.PICKING,), H.LABELLING),
    Row("complete", (H.LABELLING,), H.COMPLETED),
    # Its last order left.
    Row("cancel", (H.FORMING, H.HELD, H.QUEUED), H.CANCELLED),
    Row("fail", _SHIPMENT_OPEN, H.FAILED),
)
SHIPMENT_CREATED = frozenset({H.FORMING})

P = PackState

PACK_TABLE: tuple[Row[PackState], ...] = (
    Row("store", (P.LOADING,), P.IN_STOCK),
    Row("refuse", (P.LOADING,), P.REFUSED),
    Row("pick", (P.IN_STOCK,), P.PICKED),
    Row("dispense", (P.PICKED,), P.DISPENSED),
    # Handed on in a destruction tote (an output task of purpose ``destruction``).
    Row("dispose", (P.PICKED,), P.DISPOSED),
    # A blocked slot or batch (in stock), a failed shipment's or recalled batch's tote.
    Row("quarantine", (P.IN_STOCK, P.PICKED), P.QUARANTINED),
    Row("miss", (P.IN_STOCK, P.PICKED), P.MISSING),
    Row("drop", (P.IN_STOCK, P.PICKED), P.DROPPED),
)
# Loading scans create packs in ``loading``; a manual (fridge) pack scanned into a tote
# is created ``picked``.
PACK_CREATED = frozenset({P.LOADING, P.PICKED})

T = TaskState

TASK_TABLE: tuple[Row[TaskState], ...] = (
    # The tote planner gave it its output: picking starts.
    Row("start", (T.QUEUED,), T.IN_PROCESS),
    # Its tote was handed on with every pack asked for.
    Row("complete", (T.IN_PROCESS,), T.COMPLETED),
    # Handed on with fewer packs than asked for, or nothing could be reserved at all.
    Row("fall_short", (T.QUEUED, T.IN_PROCESS), T.INCOMPLETE),
    # The requester cancels, or the machine gives the task up: before picking it ends at
    # once; while picking, the picks under way finish and the tote is handed on first.
    Row("cancel", (T.QUEUED,), T.ABORTED),
    Row("cancel", (T.IN_PROCESS,), T.ABORTING),
    Row("fail", (T.QUEUED,), T.ABORTED),
    Row("fail", (T.IN_PROCESS,), T.ABORTING),
    Row("abort", (T.ABORTING,), T.ABORTED),
)
TASK_CREATED = frozenset({T.QUEUED})

ORDER_LIFECYCLE: Lifecycle[OrderState] = Lifecycle("order", ORDER_TABLE, ORDER_CREATED)
SHIPMENT_LIFECYCLE: Lifecycle[ShipmentState] = Lifecycle("shipment", SHIPMENT_TABLE,
                                                         SHIPMENT_CREATED)
PACK_LIFECYCLE: Lifecycle[PackState] = Lifecycle("pack", PACK_TABLE, PACK_CREATED)
TASK_LIFECYCLE: Lifecycle[TaskState] = Lifecycle("task", TASK_TABLE, TASK_CREATED)


def mermaid(lifecycle: Lifecycle[S]) -> str:
    """The lifecycle as a Mermaid state diagram (rendered by GitHub and most viewers)."""
    lines = ["stateDiagram-v2"]
    for state in sorted(lifecycle.created, key=lambda s: s.value):
        lines.append(f"    [*] --> {state.value}")
    for row in lifecycle.table:
        for src in row.sources:
            lines.append(f"    {src.value} --> {row.dest.value}: {row.trigger}")
    finals = {row.dest for row in lifecycle.table} - {
        src for row in lifecycle.table for src in row.sources}
    for state in sorted(finals, key=lambda s: s.value):
        lines.append(f"    {state.value} --> [*]")
    return "\n".join(lines) + "\n"
