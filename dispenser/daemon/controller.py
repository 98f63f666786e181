"""The controller's machine state: one machine per daemon, its table as data.

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
    fault --ack_into_maintenance--> maintenance    (another robot answers: it waits
                                                    to be adopted by a technician)

Shipments are picked only in ``ready``. ``fault`` and ``estop`` are left only by ``ack``
(a person confirmed the cause is gone), which goes through ``homing`` (RESET, HOME when
needed, reconcile with the robot) back to ``ready``; a ``fault`` whose cause a technician
must still deal with in maintenance mode (another robot answers and waits to be adopted)
is left by ``ack_into_maintenance`` instead.

``transitions`` runs this one machine: its trigger methods and the reflexive ``fault``
check the table; listeners are called here after every change. The order, shipment and
pack lifecycles are plain tables (``dispenser.core.lifecycles``), where a machine would
add nothing but cost.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

from transitions import Machine, MachineError

from dispenser.core.lifecycles import Row, oracle

__all__ = [
    "CONTROLLER_TABLE",
    "ControllerMachine",
    "ControllerState",
    "InvalidTransition",
]

# transitions logs every state entry at INFO; the daemon logs the changes that matter itself.
logging.getLogger("transitions").setLevel(logging.WARNING)


class InvalidTransition(Exception):
    """A trigger that the table does not allow from the current state (a person asked for
    something the machine cannot do now, e.g. pause while it is in a fault)."""

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
    Row("ack_into_maintenance", (C.FAULT,), C.MAINTENANCE),
    Row("stop", tuple(C), C.STOPPING),
)


class _Model:
    """What ``transitions`` decorates: holds ``state`` and gets the trigger methods."""

    state: Any
    trigger: Callable[[str], bool]  # bound by transitions on the instance


Listener = Callable[[ControllerState, ControllerState, str], None]


class ControllerMachine:
    """The daemon's single machine-state machine.

    Not thread-safe by design: only the daemon's event loop calls it. Listeners get
    ``(previous, new, trigger)`` after every change (also for a reflexive ``fault``), in
    registration order; a listener that raises does not undo the change and does not stop
    the others (the error is handed to ``on_listener_error``).
    """

    def __init__(self, on_listener_error: Callable[[BaseException], None] | None = None,
                 initial: ControllerState = ControllerState.STARTUP) -> None:
        self._listeners: list[Listener] = []
        self._on_error = on_listener_error
        self._model = _Model()
        self._machine = Machine(model=self._model, states=ControllerState,
                                transitions=[{"trigger": r.trigger, "source": list(r.sources),
                                              "dest": r.dest} for r in CONTROLLER_TABLE],
                                initial=initial, auto_transitions=False)
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
