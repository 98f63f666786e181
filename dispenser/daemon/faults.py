"""Faults: what stops the machine, latched until a person acknowledges it.

``follow`` watches the robot's state each cycle (emergency stop, jam, open door, lost
reference) and ``raise_fault`` latches the controller machine in ``fault`` or ``estop``
with a record in the ``faults`` table that names what happened and where (the command in
motion, its slot, output, shipment or pack). Only ``acknowledge`` (a person cleared the
cause) leaves it: the robot is reset and the daemon reconciles with it before anything
moves again. A fault latched before a restart stays latched.

A fault raised while the journal takes no writes (disk full) is **held** in memory
(``FaultLog.hold``) with the id it will have; the fault list shows it like the others,
and it is written first thing in the next transaction that writes a fault or an
acknowledgement (``write_held``), so ids never collide and none is lost while the daemon
runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dispenser.core import Actor
from dispenser.daemon.controller import ControllerMachine, ControllerState
from dispenser.daemon.ledger import Intent, RobotLedger
from dispenser.daemon.robot import RobotFault, RobotMode, Status
from dispenser.journal import Journal, JournalUnavailable
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["FAULT_TEXT", "FaultLog", "FaultRecord", "Faults"]

_KIND = {RobotFault.JAM: "jam", RobotFault.DROPPED: "dropped", RobotFault.ESTOP: "estop",
         RobotFault.DOOR_OPEN: "door_open", RobotFault.CONTROLLER_LOST: "controller_lost"}

FAULT_TEXT = {
    "jam": "a pack is stuck in the gripper or chute: clear it, then acknowledge the fault",
    "dropped": "a pack fell during transport: retrieve it, then acknowledge the fault",
    "door_open": "the safety door is open: close it, then acknowledge the fault",
    "controller_lost": "the robot lost the controller's watchdog",
    "not_homed": "the robot lost its reference position (was it switched off?): check it, "
                 "then acknowledge the fault to home it",
}

_LATCHED = (ControllerState.FAULT, ControllerState.ESTOP)


@dataclass(frozen=True)
class FaultRecord:
    fault_id: int
    kind: str
    raised_at: str
    message: str
    context: dict[str, Any]
    acked_at: str | None
    acked_by: str | None
    acked_role: str | None
    note: str | None
    # False while the fault is held in memory because the journal takes no writes.
    journaled: bool = True

    @property
    def active(self) -> bool:
        return self.acked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {"fault_id": self.fault_id, "kind": self.kind, "raised_at": self.raised_at,
                "message": self.message, "context": self.context, "active": self.active,
                "acked_at": self.acked_at, "acked_by": self.acked_by,
                "acked_role": self.acked_role, "note": self.note,
                "journaled": self.journaled}


_COLS = "fault_id, kind, raised_at, message, context, acked_at, acked_by, acked_role, note"


def _fault(row: Sequence[Any]) -> FaultRecord:
    values = list(row)
    values[4] = json.loads(values[4])
    return FaultRecord(*values)


class FaultLog:
    """The ``faults`` rows; writes run inside the caller's transaction."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.held: list[FaultRecord] = []  # raised while the journal took no writes

    def add(self, kind: str, message: str, context: dict[str, Any], now: str) -> int:
        self.write_held()
        cur = self.journal.write(
            "INSERT INTO faults (kind, raised_at, message, context) VALUES (?,?,?,?)",
            (kind, now, message, json.dumps(context, sort_keys=True, default=str)))
        return int(cur.lastrowid or 0)

    def hold(self, kind: str, message: str, context: dict[str, Any], now: str) -> FaultRecord:
        """Keep a fault in memory (the journal takes no writes), under the id it will have
        when ``write_held`` journals it."""
        top = self.journal.query_one("SELECT max(fault_id) FROM faults")[0] or 0
        fid = max([int(top), *(f.fault_id for f in self.held)]) + 1
        record = FaultRecord(fid, kind, now, message,
                             json.loads(json.dumps(context, sort_keys=True, default=str)),
                             None, None, None, None, journaled=False)
        self.held.append(record)
        return record

    def write_held(self) -> None:
        """Journal the held faults (inside the caller's transaction); they leave memory
        once it has committed."""
        if not self.held:
            return
        records = list(self.held)
        self.journal.write_many(
            "INSERT INTO faults (fault_id, kind, raised_at, message, context) "
            "VALUES (?,?,?,?,?)",
            [(f.fault_id, f.kind, f.raised_at, f.message,
              json.dumps(f.context, sort_keys=True, default=str)) for f in records])
        self.journal.after_commit(
            lambda: setattr(self, "held", [f for f in self.held if f not in records]))

    def ack(self, fault_id: int, actor: str, role: str, note: str | None, now: str) -> None:
        self.write_held()
        self.journal.write("UPDATE faults SET acked_at = ?, acked_by = ?, acked_role = ?, "
                           "note = ? WHERE fault_id = ? AND acked_at IS NULL",
                           (now, actor, role, note, fault_id))

    def get(self, fault_id: int) -> FaultRecord | None:
        held = next((f for f in self.held if f.fault_id == fault_id), None)
        if held is not None:
            return held
        r = self.journal.query_one(f"SELECT {_COLS} FROM faults WHERE fault_id = ?",
                                   (fault_id,))
        return None if r is None else _fault(r)

    def page(self, active: bool | None = None, limit: int = 100,
             after: int | None = None) -> list[FaultRecord]:
        """Newest first (held ones included); ``after`` is the fault_id the previous page
        ended with."""
        where: list[str] = []
        params: list[Any] = []
        if active is True:
            where.append("acked_at IS NULL")
        elif active is False:
            where.append("acked_at IS NOT NULL")
        if after is not None:
            where.append("fault_id < ?")
            params.append(after)
        sql = f"SELECT {_COLS} FROM faults"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY fault_id DESC LIMIT ?"
        params.append(limit)
        rows = [_fault(r) for r in self.journal.query(sql, params)]
        if not self.held:
            return rows
        held = [f for f in self.held if active is not False
                and (after is None or f.fault_id < after)]
        return sorted([*held, *rows], key=lambda f: -f.fault_id)[:limit]


class Faults:
    def __init__(self, journal: Journal, machine: ControllerMachine, ledger: RobotLedger,
                 clock: Callable[[], str], event: Callable[..., None]) -> None:
        self.journal = journal
        self.log = FaultLog(journal)
        self.machine = machine
        self.ledger = ledger
        self._now = clock
        self._event = event
        self.active_fault: int | None = None
        # Fault kinds that are recorded and latched but do not stop the machine (the
        # daemon puts "audit" here when [policy] audit_mismatch = "continue").
        self.nonstop_kinds: frozenset[str] = frozenset()

    @property
    def latched(self) -> bool:
        return self.machine.state in _LATCHED

    def relatch(self) -> None:
        """A fault latched before a restart stays latched until someone acknowledges it."""
        active = [f for f in self.log.page(active=True) if f.kind not in self.nonstop_kinds]
        if active and not self.latched:
            trigger = "estop" if any(f.kind == "estop" for f in active) else "fault"
            if self.machine.may(trigger):
                self.machine.fire(trigger)
                log.warning("faults still to be acknowledged",
                            faults=[f.fault_id for f in active])

    def follow(self, status: Status) -> bool:
        """Follow the robot's state; True when the daemon must reconcile again (the robot
        stopped waiting for it)."""
        st = self.machine.state
        if st is ControllerState.STARTUP:
            self.machine.fire("start")
            return False
        if status.mode is RobotMode.ESTOP or status.estop_pressed:
            if st is not ControllerState.ESTOP and st is not ControllerState.STOPPING:
                self.raise_fault("estop", "emergency stop pressed: release it, then "
                                 "acknowledge the fault", self.context(status))
            return False
        if status.mode is RobotMode.FAULT:
            if st not in (*_LATCHED, ControllerState.STOPPING):
                kind = _KIND.get(status.fault, "robot_fault")
                self.raise_fault(kind, FAULT_TEXT.get(kind, "robot stopped on a fault"),
                                 self.context(status))
            return False
        if status.mode is RobotMode.CONTROLLER_LOST:
            # Our own watchdog expired (the loop was held up): nothing for a person to do;
            # the reconcile RESETs the robot and plans the aborted commands again.
            return True
        if (status.mode is RobotMode.NOT_HOMED
                and st in (ControllerState.READY, ControllerState.PAUSED)):
            self.raise_fault("not_homed", FAULT_TEXT["not_homed"], self.context(status))
        return False

    def context(self, status: Status) -> dict[str, Any]:
        """What the fault stopped: the robot's state and the command in motion, else the
        last one that completed with a fault result (what completed after it was
        ABORTED)."""
        ctx: dict[str, Any] = {
            "robot_state": status.mode.name, "fault_code": status.fault.name,
            "door_open": status.door_open, "last_accepted_seq": status.last_accepted_seq,
            "last_completed_seq": status.last_completed_seq,
            "executing_seq": status.executing_seq,
        }
        ledger = self.ledger
        intent: Intent | None = None
        if status.executing_seq:
            intent = ledger.outstanding.get(status.executing_seq) or ledger.log.get(
                status.executing_seq)
        if intent is None and ledger.last_faulted is not None:
            intent = ledger.last_faulted
        if intent is None:
            seq = status.last_completed_seq
            intent = ledger.outstanding.get(seq) or ledger.log.get(seq)
        ledger.last_faulted = None
        if intent is not None:
            ctx.update(seq=intent.seq, command=intent.motion.value, slot=intent.slot,
                       output=intent.output, shipment_id=intent.shipment_id,
                       pack_id=intent.pack_id)
        return ctx

    def raise_fault(self, kind: str, message: str, context: dict[str, Any]) -> int:
        trigger = "estop" if kind == "estop" else "fault"
        stops = kind not in self.nonstop_kinds
        same = next((f for f in self.log.page(active=True) if f.kind == kind), None)
        if same is not None:
            # Still the same unacknowledged fault (e.g. seen again after a restart).
            if stops and self.machine.may(trigger):
                self.machine.fire(trigger)
            return same.fault_id
        try:
            with self.journal.transaction():
                fid = self.log.add(kind, message, context, self._now())
        except JournalUnavailable:
            # Latched all the same; journaled as soon as the journal takes writes again.
            fid = self.log.hold(kind, message, context, self._now()).fault_id
        if stops:
            self.active_fault = fid
            if self.machine.may(trigger):
                self.machine.fire(trigger)
        log.error("machine fault", fault_id=fid, kind=kind, fault_message=message,
                  **{k: v for k, v in context.items() if k in ("seq", "slot", "output",
                                                              "shipment_id")})
        self._event("fault", fault_id=fid, kind=kind, active=True, message=message)
        return fid

    def acknowledge(self, record: FaultRecord, actor: Actor, note: str | None,
                    trigger: str = "ack") -> bool:
        """Record the acknowledgement; True when no other fault is still latched (the
        machine goes on: ``ack`` homing, reconcile, ready; ``ack_into_maintenance``
        maintenance mode)."""
        others = [f for f in self.log.page(active=True) if f.fault_id != record.fault_id
                  and f.kind not in self.nonstop_kinds]
        with self.journal.transaction():
            self.log.ack(record.fault_id, actor.name, actor.role, note, self._now())
        self._event("fault", fault_id=record.fault_id, kind=record.kind, active=False)
        log.info("fault acknowledged", fault_id=record.fault_id, kind=record.kind,
                 by_role=actor.role)
        if others:
            return False  # still latched by another fault
        self.active_fault = None
        if self.machine.may(trigger):
            self.machine.fire(trigger)
        return True
