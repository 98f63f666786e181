"""Lifecycles as data: the controller's machine state, orders and shipments.

Each lifecycle is a table of ``(trigger, sources, dest)`` rows. The tables are the single
source of truth: ``transitions`` machines are built from them, and ``next_state`` answers
from a dictionary derived from the same rows (the property tests check that both agree).

Controller (one machine per daemon)::

               start            homed
    startup ----------> homing --------> ready <-----------------+
                          ^            pause |  ^ resume          | resume,
                          |                  v  |                 | leave_maintenance
                          |                 paused --maintenance--> maintenance
                          |                      (ready --maintenance--> maintenance)
                          | ack
                    +-----+------+
                    |            |
    fault <---- startup, homing, ready, paused, maintenance, fault     (fault)
    estop <---- all of those, and estop itself                          (estop)
    stopping <- any state                                               (stop)

Shipments are picked only in ``ready``. ``fault`` and ``estop`` are left only by ``ack``
(a person confirmed the cause is gone), which goes through ``homing`` (RESET, HOME when
needed, reconcile with the robot) back to ``ready``.

Order::

    received --queue--> queued --start_picking--> picking --start_labelling--> labelling
      |   ^  \\            |                          |                          |
      | release hold      hold (stock short)        fail                   complete
      v   |     \\         v                          v                          v
      held <-----+------ held                     failed                   completed
      cancel: received | held | queued --> cancelled
      reject: received | held          --> rejected
      fail:   any open state           --> failed

Shipment::

    forming --queue--> queued --start_picking--> picking --start_labelling--> labelling
       \\  hold          ^  | hold                                                  |
        +--> held --queue+  v                                                   complete
             held                                                                  v
      cancel: forming | held | queued --> cancelled                            completed
      fail:   any open state          --> failed

Order and shipment lifecycles use **one** reusable validator machine each (``Lifecycle``):
its model's state is set before every trigger, so checking a million orders costs no more
than checking one.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from transitions import Machine, MachineError

from dispenser.states import OrderState, ShipmentState

__all__ = [
    "CONTROLLER_TABLE",
    "ORDER_LIFECYCLE",
    "ORDER_TABLE",
    "SHIPMENT_LIFECYCLE",
    "SHIPMENT_TABLE",
    "ControllerMachine",
    "ControllerState",
    "InvalidTransition",
    "Lifecycle",
    "Row",
    "oracle",
]

S = TypeVar("S", bound=enum.Enum)

# transitions logs every state entry at INFO; the daemon logs the changes that matter itself.
logging.getLogger("transitions").setLevel(logging.WARNING)


class InvalidTransition(Exception):
    """A trigger that the table does not allow from the current state."""

    def __init__(self, what: str, state: enum.Enum, trigger: str) -> None:
        super().__init__(f"{what}: {trigger!r} is not allowed in state {state.value!r}")
        self.state = state
        self.trigger = trigger


class ControllerState(enum.Enum):
    STARTUP = "startup"
    HOMING = "homing"
    READY = "ready"
    PAUSED = "paused"
    FAULT = "fault"
    ESTOP = "estop"
    MAINTENANCE = "maintenance"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Row(Generic[S]):
    trigger: str
    sources: tuple[S, ...]
    dest: S


C = ControllerState
_OPERATING = (C.STARTUP, C.HOMING, C.READY, C.PAUSED, C.MAINTENANCE)

CONTROLLER_TABLE: tuple[Row[ControllerState], ...] = (
    Row("start", (C.STARTUP,), C.HOMING),
    Row("homed", (C.HOMING,), C.READY),
    Row("pause", (C.READY,), C.PAUSED),
    Row("resume", (C.PAUSED, C.MAINTENANCE), C.READY),
    Row("maintenance", (C.READY, C.PAUSED), C.MAINTENANCE),
    Row("leave_maintenance", (C.MAINTENANCE,), C.READY),
    # Latched: a fault while a fault is latched keeps it latched (and is recorded).
    Row("fault", (*_OPERATING, C.FAULT), C.FAULT),
    Row("estop", (*_OPERATING, C.FAULT, C.ESTOP), C.ESTOP),
    Row("ack", (C.FAULT, C.ESTOP), C.HOMING),
    Row("stop", tuple(C), C.STOPPING),
)

Ord = OrderState
_ORDER_OPEN = (Ord.RECEIVED, Ord.HELD, Ord.QUEUED, Ord.PICKING, Ord.LABELLING)

ORDER_TABLE: tuple[Row[OrderState], ...] = (
    Row("queue", (Ord.RECEIVED, Ord.HELD), Ord.QUEUED),
    Row("hold", (Ord.RECEIVED, Ord.QUEUED), Ord.HELD),
    Row("release", (Ord.HELD,), Ord.RECEIVED),
    Row("start_picking", (Ord.QUEUED,), Ord.PICKING),
    Row("start_labelling", (Ord.PICKING,), Ord.LABELLING),
    Row("complete", (Ord.LABELLING,), Ord.COMPLETED),
    Row("cancel", (Ord.RECEIVED, Ord.HELD, Ord.QUEUED), Ord.CANCELLED),
    Row("reject", (Ord.RECEIVED, Ord.HELD), Ord.REJECTED),
    Row("fail", _ORDER_OPEN, Ord.FAILED),
)

H = ShipmentState
_SHIPMENT_OPEN = (H.FORMING, H.HELD, H.QUEUED, H.PICKING, H.LABELLING)

SHIPMENT_TABLE: tuple[Row[ShipmentState], ...] = (
    Row("queue", (H.FORMING, H.HELD), H.QUEUED),
    Row("hold", (H.FORMING, H.QUEUED), H.HELD),
    Row("start_picking", (H.QUEUED,), H.PICKING),
    Row("start_labelling", (H.PICKING,), H.LABELLING),
    Row("complete", (H.LABELLING,), H.COMPLETED),
    Row("cancel", (H.FORMING, H.HELD, H.QUEUED), H.CANCELLED),
    Row("fail", _SHIPMENT_OPEN, H.FAILED),
)


def oracle(table: Iterable[Row[S]]) -> dict[tuple[S, str], S]:
    """``(state, trigger) -> dest`` for every allowed pair; absent pairs are refused."""
    out: dict[tuple[S, str], S] = {}
    for row in table:
        for src in row.sources:
            if (src, row.trigger) in out:
                raise ValueError(f"table has two rows for {row.trigger!r} from {src}")
            out[(src, row.trigger)] = row.dest
    return out


def _transitions(table: Iterable[Row[Any]]) -> list[dict[str, Any]]:
    return [{"trigger": r.trigger, "source": list(r.sources), "dest": r.dest} for r in table]


class _Model:
    """What ``transitions`` decorates: holds ``state`` and gets the trigger methods."""

    state: Any
    trigger: Callable[[str], bool]  # bound by transitions on the instance


class Lifecycle(Generic[S]):
    """One reusable validator machine for every entity of a kind (orders, shipments)."""

    def __init__(self, what: str, states: type[S], table: tuple[Row[S], ...]) -> None:
        self.what = what
        self.table = table
        self.triggers = tuple(sorted({r.trigger for r in table}))
        self._next = oracle(table)
        self._model = _Model()
        self._machine = Machine(model=self._model, states=states,
                                transitions=_transitions(table),
                                initial=next(iter(states)), auto_transitions=False,
                                send_event=False)

    def fire(self, state: S, trigger: str) -> S:
        """Run ``trigger`` on the machine from ``state``; the new state, or InvalidTransition."""
        if trigger not in self.triggers:
            raise InvalidTransition(self.what, state, trigger)
        self._machine.set_state(state, model=self._model)
        try:
            self._model.trigger(trigger)
        except MachineError:
            raise InvalidTransition(self.what, state, trigger) from None
        new: S = self._model.state
        return new

    def next_state(self, state: S, trigger: str) -> S:
        """Table lookup (no machine): the new state, or InvalidTransition."""
        try:
            return self._next[(state, trigger)]
        except KeyError:
            raise InvalidTransition(self.what, state, trigger) from None

    def allowed(self, state: S) -> list[str]:
        return [t for t in self.triggers if (state, t) in self._next]


ORDER_LIFECYCLE: Lifecycle[OrderState] = Lifecycle("order", OrderState, ORDER_TABLE)
SHIPMENT_LIFECYCLE: Lifecycle[ShipmentState] = Lifecycle(
    "shipment", ShipmentState, SHIPMENT_TABLE)

Listener = Callable[[ControllerState, ControllerState, str], None]


class ControllerMachine:
    """The daemon's single machine-state machine.

    Not thread-safe by design: only the daemon's event loop calls it. Listeners get
    ``(previous, new, trigger)`` after every change (also for a reflexive ``fault``), in
    registration order; a listener that raises does not undo the change and does not stop
    the others (the error is handed to ``on_listener_error``).
    """

    def __init__(self, on_listener_error: Callable[[BaseException], None] | None = None) -> None:
        self._listeners: list[Listener] = []
        self._on_error = on_listener_error
        self._model = _Model()
        self._machine = Machine(model=self._model, states=ControllerState,
                                transitions=_transitions(CONTROLLER_TABLE),
                                initial=ControllerState.STARTUP, auto_transitions=False)
        self.triggers = tuple(sorted({r.trigger for r in CONTROLLER_TABLE}))
        self._next = oracle(CONTROLLER_TABLE)

    @property
    def state(self) -> ControllerState:
        s: ControllerState = self._model.state
        return s

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def may(self, trigger: str) -> bool:
        return (self.state, trigger) in self._next

    def fire(self, trigger: str) -> ControllerState:
        """Apply ``trigger``; the new state, or InvalidTransition (state unchanged)."""
        before = self.state
        if trigger not in self.triggers:
            raise InvalidTransition("machine", before, trigger)
        try:
            self._model.trigger(trigger)
        except MachineError:
            raise InvalidTransition("machine", before, trigger) from None
        after = self.state
        for fn in list(self._listeners):
            try:
                fn(before, after, trigger)
            except Exception as exc:
                if self._on_error is not None:
                    self._on_error(exc)
        return after


def describe(table: Iterable[Row[Any]]) -> Mapping[str, list[str]]:
    """Human summary ``trigger -> ["src -> dest", ...]`` (used by docs and diagnostics)."""
    out: dict[str, list[str]] = {}
    for r in table:
        out.setdefault(r.trigger, []).extend(f"{s.value} -> {r.dest.value}" for s in r.sources)
    return out
