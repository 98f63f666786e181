"""The robot ledger: every command is journaled before it is sent, every completion is
applied exactly once. This is what makes picking exactly-once across crashes.

The rules:

1. Before a command is sent to the robot, its seq and intent (motion, slot, output,
   count, and the shipment, output task or pack it is for) are committed in ``robot_intents`` as
   ``planned`` (``send``).
2. Each completion read from the robot is applied in **one transaction** together with
   its effect on stock and shipments (``effects[motion]``), and that transaction also
   moves ``robot_cursor.applied_completion`` (the number of the last completion applied)
   and marks the intent ``done`` (``apply_completions``).
3. After a restart, a lost link or a fault, ``reconcile`` runs before anything is sent.
   It first checks that the robot is the journal's (``check``): a robot that reports
   fewer completions than the journal applied, or a lower ``last_accepted_seq`` than a
   command the journal saw it complete, is another robot or one whose memory was cleared
   (``RobotMismatch``), and then nothing in the journal is changed: only a technician's
   adoption (``dispenser.daemon.adoption``) goes on from there. With the journal's robot,
   intents with a seq above its ``last_accepted_seq`` never reached it and become
   ``void`` (their work is planned again, ``on_void[motion]``); completions above the
   cursor are then read and applied. New seqs start above both the journal's and the
   robot's highest. The same check runs on every status read (``check``).

Outstanding commands (accepted, not yet applied) never exceed ``MAX_OUTSTANDING``, so a
daemon that died can always find every completion it missed in the robot's ring.

This module knows the robot only through ``dispenser.daemon.robot.Robot``; what a
completion means for shipments and stock is the business of the effect handlers that
the tote planner, loading and the scheduler register.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispenser.core.errors import DispenserError
from dispenser.daemon.robot import (
    COMPLETION_RING,
    Command,
    CommandsRefused,
    Completion,
    Motion,
    Outcome,
    Robot,
    Status,
)
from dispenser.journal import Journal
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["DONE", "MAX_OUTSTANDING", "PLANNED", "UNKNOWN", "VOID", "After", "Counters",
           "Intent", "IntentLog", "RobotLedger", "RobotMismatch"]

MAX_OUTSTANDING = COMPLETION_RING - 8
# Completions applied per commit: a robot write holds up to 15 commands, so the completions
# of one poll usually share one commit (one fsync) while one turn of the loop stays short.
COMPLETIONS_PER_COMMIT = 16

PLANNED, VOID, DONE, UNKNOWN = "planned", "void", "done", "unknown"

# A number per motion in the ``opcode`` column (the purpose column names the motion).
_CODE = {Motion.HOME: 1, Motion.STORE: 2, Motion.PICK: 3, Motion.HAND_ON: 4,
         Motion.SCAN_SLOT: 5}

# Work to do once the transaction that applied a completion is committed (events, logs,
# waking callers): never announce what a rollback could still undo.
After = list[Callable[[], object]]
Effect = Callable[["Intent", Completion, After], None]


@dataclass(frozen=True, slots=True)
class Intent:
    """One command as planned."""

    seq: int
    motion: Motion
    slot: int
    output: int
    count: int
    shipment_id: str | None = None
    pack_id: int | None = None
    state: str = PLANNED
    task_id: str | None = None  # an output task's pick or hand-on

    def command(self) -> Command:
        return Command(self.seq, self.motion, self.slot, self.output, self.count)


@dataclass
class Counters:
    commands_sent: int = 0
    writes: int = 0
    completions_applied: int = 0
    packs_picked: int = 0
    packs_stored: int = 0
    shipments_completed: int = 0
    link_downs: int = 0
    packs_lost: int = 0  # dropped or stuck in a fault, picking or storing
    packs_refused: int = 0  # loads refused by a check or by the robot
    results: dict[str, int] = field(default_factory=dict)
    # Completions by (motion, outcome) values, e.g. ("pick", "ok").
    by_command: dict[tuple[str, str], int] = field(default_factory=dict)


class RobotMismatch(Exception):
    """The robot reports fewer completions than the journal applied: its memory was
    cleared or it is another robot. Nothing may be sent until a person has looked."""

    def __init__(self, status: Status, journal_completions: int, journal_accepted: int) -> None:
        super().__init__(
            "another robot answers, or its memory was cleared: it reports "
            f"{status.completion_count} completions and last accepted seq "
            f"{status.last_accepted_seq}, the journal {journal_completions} and seq "
            f"{journal_accepted}; nothing is sent until a technician adopts it "
            "(dispenserctl robot adopt, in maintenance mode)")
        self.context = {"robot_completions": status.completion_count,
                        "robot_last_accepted_seq": status.last_accepted_seq,
                        "journal_completions": journal_completions,
                        "journal_accepted_seq": journal_accepted,
                        "robot_firmware": status.firmware_version,
                        "robot_protocol": status.protocol_version}


_COLS = "seq, purpose, slot, output, count, shipment_id, pack_id, state, task_id"


def _intent(row: Sequence[Any]) -> Intent:
    return Intent(row[0], Motion(row[1]), row[2], row[3], row[4], row[5], row[6], row[7],
                  row[8])


class IntentLog:
    """The ``robot_intents`` and ``robot_cursor`` rows. Writes run inside the caller's
    transaction, so they commit with their effects."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def max_seq(self) -> int:
        return int(self.journal.query_one("SELECT max(seq) FROM robot_intents")[0] or 0)

    def accepted(self) -> int:
        """The highest seq the journal saw the robot in service complete (commands of a
        robot replaced since, whose seqs may be higher, do not count)."""
        floor = self.journal.query_one(
            "SELECT max(journal_max_seq) FROM robot_adoptions")[0] or 0
        row = self.journal.query_one("SELECT seq FROM robot_intents WHERE state = 'done' "
                                     "AND seq > ? ORDER BY seq DESC LIMIT 1", (floor,))
        return int(row[0]) if row else 0

    def set_cursor(self, completion: int) -> None:
        """Move the cursor to ``completion`` (also back: a replaced robot counts anew)."""
        self.journal.write("UPDATE robot_cursor SET applied_completion = ? WHERE id = 1",
                           (completion,))

    def applied_completion(self) -> int:
        return int(self.journal.query_one(
            "SELECT applied_completion FROM robot_cursor WHERE id = 1")[0])

    def add(self, intents: Iterable[Intent], now: str) -> None:
        self.journal.write_many(
            "INSERT INTO robot_intents (seq, opcode, slot, output, count, purpose, "
            "shipment_id, pack_id, state, planned_at, task_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(i.seq, _CODE[i.motion], i.slot, i.output, i.count, i.motion.value,
              i.shipment_id, i.pack_id, PLANNED, now, i.task_id) for i in intents])

    def planned(self) -> list[Intent]:
        """Intents not yet completed nor voided, in seq order."""
        return [_intent(r) for r in self.journal.query(
            f"SELECT {_COLS} FROM robot_intents WHERE state = 'planned' ORDER BY seq")]

    def get(self, seq: int) -> Intent | None:
        row = self.journal.query_one(f"SELECT {_COLS} FROM robot_intents WHERE seq = ?",
                                     (seq,))
        return None if row is None else _intent(row)

    def void_above(self, last_accepted: int, now: str) -> list[Intent]:
        """Mark planned intents the robot never accepted as void; returns them."""
        rows = [_intent(r) for r in self.journal.query(
            f"SELECT {_COLS} FROM robot_intents WHERE state = 'planned' AND seq > ? "
            "ORDER BY seq", (last_accepted,))]
        if rows:
            self.journal.write("UPDATE robot_intents SET state = 'void', applied_at = ? "
                               "WHERE state = 'planned' AND seq > ?", (now, last_accepted))
        return rows

    def unknown(self) -> list[Intent]:
        """Intents whose outcome a replaced robot took with it, in seq order."""
        return [_intent(r) for r in self.journal.query(
            f"SELECT {_COLS} FROM robot_intents WHERE state = 'unknown' ORDER BY seq")]

    def mark_unknown(self, seqs: Sequence[int], now: str) -> None:
        self.journal.write_many(
            "UPDATE robot_intents SET state = 'unknown', applied_at = ? WHERE seq = ? "
            "AND state = 'planned'", [(now, s) for s in seqs])

    def settle(self, seq: int, state: str, detail: int | None, now: str) -> None:
        """An unknown-outcome intent settled by a count: ``done`` (with the packs it moved)
        or ``void``. No completion number: the robot that did it is gone."""
        self.journal.write("UPDATE robot_intents SET state = ?, detail = ?, applied_at = ? "
                           "WHERE seq = ? AND state = 'unknown'", (state, detail, now, seq))

    def void(self, seqs: Sequence[int], now: str) -> None:
        self.journal.write_many(
            "UPDATE robot_intents SET state = 'void', applied_at = ? WHERE seq = ? "
            "AND state = 'planned'", [(now, s) for s in seqs])

    def complete(self, seq: int, completion: int, result: int, detail: int, now: str) -> None:
        """Record that completion ``completion`` (for ``seq``) is applied, and move the
        cursor. Call in the same transaction as the completion's effect."""
        self.journal.write(
            "UPDATE robot_intents SET state = 'done', completion = ?, result = ?, detail = ?, "
            "applied_at = ? WHERE seq = ?", (completion, result, detail, now, seq))
        self.advance(completion)

    def advance(self, completion: int) -> None:
        self.journal.write("UPDATE robot_cursor SET applied_completion = ? WHERE id = 1 "
                           "AND applied_completion < ?", (completion, completion))

    def history(self, shipment_id: str) -> list[tuple[int, str, int, int | None, int | None]]:
        """(seq, motion, count, result, detail) of a shipment's commands, for diagnostics."""
        return [tuple(r) for r in self.journal.query(
            "SELECT seq, purpose, count, result, detail FROM robot_intents "
            "WHERE shipment_id = ? ORDER BY seq", (shipment_id,))]


class RobotLedger:
    def __init__(self, journal: Journal, robot: Robot, clock: Callable[[], datetime],
                 counters: Counters) -> None:
        self.journal = journal
        self.log = IntentLog(journal)
        self.robot = robot
        self.clock = clock
        self.counters = counters
        self.outstanding: dict[int, Intent] = {}
        self.next_seq = 1
        self.cursor = 0
        # The highest seq the robot is known to have accepted (``check``).
        self.accepted = 0
        # What a completion means, and what to do when an intent never reached the robot,
        # per motion (registered by the tote planner, loading and the scheduler).
        self.effects: dict[Motion, Effect] = {}
        self.on_void: dict[Motion, Callable[[Intent], None]] = {}
        # A completion the journal could not record though packs moved (context: ...).
        self.on_unrecorded_move: Callable[[dict[str, Any]], None] = lambda ctx: None
        # The last intent a completion reported a fault for (jam, drop, emergency stop).
        self.last_faulted: Intent | None = None
        self.resync_needed = False

    def _now(self) -> str:
        return self.clock().isoformat()

    def intent(self, motion: Motion, slot: int = 0, output: int = 0, count: int = 0,
               shipment_id: str | None = None, pack_id: int | None = None,
               task_id: str | None = None) -> Intent:
        """A new intent with the next seq (not yet journaled)."""
        seq = self.next_seq
        self.next_seq += 1
        return Intent(seq, motion, slot, output, count, shipment_id, pack_id,
                      task_id=task_id)

    def room(self, status: Status) -> int:
        return min(status.queue_capacity - status.queue_depth,
                   MAX_OUTSTANDING - len(self.outstanding))

    def pending(self, motion: Motion) -> bool:
        return any(i.motion is motion for i in self.outstanding.values())

    # ------------------------------------------------------------------ reconcile
    def check(self, status: Status) -> None:
        """Raise ``RobotMismatch`` when the robot knows less than the journal: fewer
        completions than applied, or a lower last accepted seq than one it completed.
        Changes nothing; otherwise takes note of what the robot accepted."""
        if (status.completion_count < self.cursor
                or status.last_accepted_seq < self.accepted):
            raise RobotMismatch(status, self.cursor, self.accepted)
        self.accepted = max(self.accepted, status.last_accepted_seq)

    def reconcile(self, status: Status) -> list[Intent]:
        """Agree with the robot before sending: void what never reached it, take up the
        rest. Raises ``RobotMismatch`` (before changing anything) when the robot is not the
        journal's (``check``). Returns the voided intents."""
        self.cursor = self.log.applied_completion()
        self.accepted = self.log.accepted()
        self.check(status)
        now = self._now()
        with self.journal.transaction():
            voided = self.log.void_above(status.last_accepted_seq, now)
            for intent in voided:
                self.outstanding.pop(intent.seq, None)
                self._void(intent)
        if voided:
            log.info("commands never sent, planned again", count=len(voided),
                     seqs=[i.seq for i in voided][:20])
        self.outstanding = {i.seq: i for i in self.log.planned()}
        self.next_seq = max(self.log.max_seq(), status.last_accepted_seq) + 1
        self.resync_needed = False
        return voided

    def _void(self, intent: Intent) -> None:
        handler = self.on_void.get(intent.motion)
        if handler is not None:
            handler(intent)

    # ------------------------------------------------------------------ sending
    async def send(self, intents: list[Intent], journaled: bool = False) -> bool:
        """Journal (unless ``journaled``), then queue, in writes the robot takes whole.
        False when the robot refused a write: its intents are void and planned again."""
        step = self.robot.max_per_queue
        for start in range(0, len(intents), step):
            chunk = intents[start:start + step]
            if not journaled:
                with self.journal.transaction():
                    self.log.add(chunk, self._now())
            for i in chunk:
                self.outstanding[i.seq] = i
            try:
                await self.robot.queue([i.command() for i in chunk])
            except CommandsRefused as exc:
                # Refused whole: nothing was queued. Void and plan again next cycle.
                with self.journal.transaction():
                    self.log.void([i.seq for i in chunk], self._now())
                    for i in chunk:
                        self.outstanding.pop(i.seq, None)
                        self._void(i)
                log.warning("robot refused the commands, planned again",
                            error=str(exc), count=len(chunk))
                if exc.resync:
                    self.resync_needed = True
                return False
            # Any other error (timeout, lost link) leaves the outcome unknown: the next
            # reconcile reads last_accepted_seq and voids what did not arrive.
            self.counters.writes += 1
            self.counters.commands_sent += len(chunk)
        return True

    # ------------------------------------------------------------------ completions
    async def apply_completions(self, status: Status) -> bool:
        """Read and apply every completion the robot has that the journal has not. True
        when there were any."""
        found = False
        while status.completion_count > self.cursor:
            upto = min(status.completion_count, self.cursor + COMPLETION_RING)
            completions = await self.robot.read_completions(self.cursor, upto)
            found = found or bool(completions)
            # The completions of a poll share one commit (one fsync), up to 16; each is
            # applied in its own savepoint together with its effect and the cursor, so the
            # journal never holds an effect without its cursor or the other way round. What
            # follows a commit (waking callers, events) runs once it is on disk. Between
            # commits the loop lets API calls through, so a burst of completions never
            # stalls them long.
            for start in range(0, len(completions), COMPLETIONS_PER_COMMIT):
                after: After = []
                with self.journal.transaction():
                    for c in completions[start:start + COMPLETIONS_PER_COMMIT]:
                        self._apply(c, after)
                for fn in after:
                    fn()
                await asyncio.sleep(0)
            if upto >= status.completion_count:
                break
        return found

    def _apply(self, c: Completion, after: After) -> None:
        intent = self.outstanding.pop(c.seq, None) or self.log.get(c.seq)
        now = self._now()
        name = c.outcome.name
        self.counters.results[name] = self.counters.results.get(name, 0) + 1
        key = (intent.motion.value if intent is not None else "unknown", c.outcome.value)
        self.counters.by_command[key] = self.counters.by_command.get(key, 0) + 1
        if intent is not None and c.outcome in (Outcome.JAM, Outcome.DROPPED, Outcome.ESTOP):
            self.last_faulted = intent
        with self.journal.transaction():
            if intent is None:
                log.error("completion for a command the journal does not know",
                          seq=c.seq, number=c.number, outcome=name)
                self.log.advance(c.number)
            else:
                if intent.state == VOID:
                    log.error("completion for a command recorded as never sent",
                              seq=c.seq, outcome=name)
                effect = self.effects.get(intent.motion)
                try:
                    with self.journal.transaction():
                        if effect is not None:
                            effect(intent, c, after)
                except DispenserError as exc:
                    log.error("completion could not be applied", seq=c.seq,
                              motion=intent.motion.value, shipment_id=intent.shipment_id,
                              outcome=name, error=str(exc))
                    if intent.motion in (Motion.PICK, Motion.STORE) and c.detail > 0 and (
                            c.outcome is not Outcome.INVALID):
                        # Packs moved that the journal cannot account for: a person must
                        # look at the tote or slot before the machine goes on.
                        ctx = {"seq": c.seq, "command": intent.motion.value,
                               "slot": intent.slot, "output": intent.output,
                               "shipment_id": intent.shipment_id, "pack_id": intent.pack_id,
                               "packs": c.detail, "error": exc.message}
                        after.append(functools.partial(self.on_unrecorded_move, ctx))
                self.log.complete(c.seq, c.number, c.code, c.detail, now)
        self.cursor = c.number
        self.counters.completions_applied += 1
