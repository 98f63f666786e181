"""Pause and maintenance mode: a person's decision, kept in the journal (``machine_mode``).

``machine.pause`` and ``machine.maintenance`` are recorded with who asked and why; only
``machine.resume`` or leaving maintenance ends them. A restart, a fault and its
acknowledgement do not: whenever the machine comes back to ``ready`` from homing
(``restore``), it goes on into the mode that was kept. The record is written before the
machine changes state, so the journal never holds less than the machine shows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispenser.daemon.controller import ControllerMachine, ControllerState, InvalidTransition
from dispenser.journal import Journal
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["MachineMode"]

_TRIGGER = {"paused": "pause", "maintenance": "maintenance"}


class MachineMode:
    def __init__(self, journal: Journal, machine: ControllerMachine,
                 clock: Callable[[], str]) -> None:
        self.journal = journal
        self.machine = machine
        self._now = clock
        row = journal.query_one("SELECT mode, reason, set_by, set_at FROM machine_mode "
                                "WHERE id = 1")
        self.kept: dict[str, Any] | None = None if row is None else {
            "mode": row[0], "reason": row[1], "by": row[2], "at": row[3]}

    def _check(self, trigger: str) -> None:
        if not self.machine.may(trigger):
            raise InvalidTransition("machine", self.machine.state, trigger)

    def _keep(self, mode: str, by: str, reason: str | None) -> None:
        kept = {"mode": mode, "reason": reason or None, "by": by, "at": self._now()}
        with self.journal.transaction():
            self.journal.write("INSERT OR REPLACE INTO machine_mode (id, mode, reason, set_by, "
                               "set_at) VALUES (1, ?, ?, ?, ?)",
                               (mode, kept["reason"], by, kept["at"]))
        self.kept = kept

    def _forget(self) -> None:
        with self.journal.transaction():
            self.journal.write("DELETE FROM machine_mode WHERE id = 1")
        self.kept = None

    def pause(self, by: str, reason: str | None) -> None:
        """``ready`` -> ``paused``, kept until resumed (InvalidTransition otherwise)."""
        self._check("pause")
        self._keep("paused", by, reason)
        self.machine.fire("pause")

    def resume(self) -> None:
        """``paused`` or ``maintenance`` -> ``ready``."""
        self._check("resume")
        self._forget()
        self.machine.fire("resume")

    def maintenance(self, on: bool, by: str) -> None:
        """Enter (from ``ready`` or ``paused``) or leave maintenance mode."""
        trigger = "maintenance" if on else "leave_maintenance"
        self._check(trigger)
        if on:
            self._keep("maintenance", by, None)
        else:
            self._forget()
        self.machine.fire(trigger)

    def note_pause(self, by: str, reason: str) -> None:
        """Who paused and why, for a pause made without them (kept with the pause)."""
        if self.machine.state is ControllerState.PAUSED:
            self._keep("paused", by, reason)

    @property
    def pause_info(self) -> dict[str, Any] | None:
        """``{"reason", "by", "at"}`` while the machine is paused, else None."""
        kept = self.kept
        if self.machine.state is not ControllerState.PAUSED or kept is None or \
                kept["mode"] != "paused":
            return None
        return {"reason": kept["reason"], "by": kept["by"], "at": kept["at"]}

    def restore(self) -> None:
        """The machine is ``ready`` again after homing: go back into the kept mode."""
        kept = self.kept
        if kept is None or self.machine.state is not ControllerState.READY:
            return
        trigger = _TRIGGER[kept["mode"]]
        if self.machine.may(trigger):
            self.machine.fire(trigger)
            log.info("machine mode kept from before", mode=kept["mode"], by=kept["by"])
