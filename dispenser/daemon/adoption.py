"""Adopting a robot that answers in place of the journal's (a replaced controller board,
a robot whose memory was cleared).

Such a robot knows nothing of the commands the journal sent its predecessor: the ledger
refuses to go on with it (``RobotMismatch``) and changes nothing, until a technician adopts
it (``robot.adopt``, in maintenance mode). Adopting, in one transaction:

- records the new robot (what it reports of itself and its counters) in
  ``robot_adoptions`` and the audit trail (``robot.adopted``);
- marks every command the old robot never confirmed ``unknown``: it may have done it or
  not (its completion left with it);
- takes the new robot's counters as the ledger's (cursor, accepted seq); new seqs start
  above everything the journal ever planned;
- makes the slots those commands touched **due for a count** (SCAN_SLOT). Until they are
  counted and the unknown commands settled, nothing is picked and nothing is loaded.

**Settling** (``settle``): a robot carries out its commands in seq order, so what the old
robot did of the unknown commands is a prefix of them. The counts of the slots and what the
input scanner shows tell which prefix: for each possible cut, the slots would hold what the
journal holds, less what the PICKs before the cut took, plus what the STOREs before it put,
and the pack of the first STORE after the cut would still lie at the input point. The
smallest cut that fits every count is taken (what lies beyond it and changes no slot, a
HAND_ON say, is sent again: harmless). What it means for stock and shipments:

- a PICK before the cut is booked as picked into its shipment's tote, with what it moved;
  after the cut it is void and its reservation is picked again;
- a STORE before the cut is booked as stored; after it, the pack still lies at the input
  point and its STORE is sent again;
- a HAND_ON, HOME or SCAN_SLOT before the cut is applied, after it void (sent again when
  still needed).

Each count is then recorded as a count of the slot (``record_slot_count``: a slot whose
count still differs is blocked and its packs quarantined, as for any count). When no cut
fits every count, the commands stay ``unknown`` and the journal says only what it knows:
each slot's count is recorded (a differing one blocks the slot), each shipment an unknown
PICK was for fails (its tote may hold packs the journal does not list: a person checks it),
and an unknown STORE's pack is stored again if it still lies at the input point, else
refused ("not found at the input point; the slot count decides").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dispenser.core import Actor, Dispensary
from dispenser.core.errors import DispenserError
from dispenser.core.gs1 import parse_scan
from dispenser.daemon.ledger import DONE, VOID, After, Intent, RobotLedger
from dispenser.daemon.robot import Completion, InputScan, Motion, Outcome, Status
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["Adoption", "AdoptionRecord", "Settlement", "settle"]

# Changes of stock a command makes when the robot carries it out.
_COUNTED = (Motion.PICK, Motion.STORE)


@dataclass(frozen=True)
class Settlement:
    """What the old robot did of its unknown commands: the first ``cut`` of them (in seq
    order), with the packs each PICK or STORE moved; ``cut`` None when no prefix fits the
    counts."""

    cut: int | None
    moved: dict[int, int] = field(default_factory=dict)


def settle(unknown: Sequence[Intent], expected: Mapping[int, int],
           counted: Mapping[int, int], at_input: int | None) -> Settlement:
    """The smallest prefix of ``unknown`` (seq order) that explains the counts.

    ``expected``: packs the journal holds per counted slot; ``counted``: what the count
    found; ``at_input``: the pack id of the unknown STORE whose pack the input scanner
    shows, else None."""
    for cut in range(len(unknown) + 1):
        slots = dict(expected)
        moved: dict[int, int] = {}
        for i in unknown[:cut]:
            if i.motion is Motion.PICK:
                n = min(i.count, slots.get(i.slot, 0))
                slots[i.slot] = slots.get(i.slot, 0) - n
                moved[i.seq] = n
            elif i.motion is Motion.STORE:
                slots[i.slot] = slots.get(i.slot, 0) + 1
                moved[i.seq] = 1
        if any(slots.get(s, 0) != n for s, n in counted.items()):
            continue
        left = next((i for i in unknown[cut:] if i.motion is Motion.STORE), None)
        if (left.pack_id if left is not None else None) != at_input:
            continue
        return Settlement(cut, moved)
    return Settlement(None)


@dataclass(frozen=True)
class AdoptionRecord:
    adoption_id: int
    adopted_at: str
    adopted_by: str
    note: str | None
    robot: dict[str, Any]
    unknown_seqs: list[int]
    slots: list[int]
    settled_at: str | None
    settlement: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"adoption_id": self.adoption_id, "adopted_at": self.adopted_at,
                "adopted_by": self.adopted_by, "note": self.note, "robot": self.robot,
                "unknown_intents": len(self.unknown_seqs), "unknown_seqs": self.unknown_seqs,
                "slots_to_count": self.slots, "settled_at": self.settled_at,
                "settlement": self.settlement}


_COLS = ("adoption_id, adopted_at, adopted_by, note, robot, unknown_seqs, slots, settled_at, "
         "settlement")


def _record(row: Sequence[Any]) -> AdoptionRecord:
    return AdoptionRecord(row[0], row[1], row[2], row[3], json.loads(row[4]),
                          json.loads(row[5]), json.loads(row[6]), row[7],
                          None if row[8] is None else json.loads(row[8]))


class Adoption:
    """The adoption of a replaced robot and the counts that settle it. The scheduler asks
    ``counting`` before it picks or loads, plans the counts (``plan``), hands each count's
    completion to ``on_count`` and settles once all are in (``settle_now``)."""

    def __init__(self, dispensary: Dispensary, ledger: RobotLedger,
                 clock: Callable[[], str]) -> None:
        self.d = dispensary
        self.ledger = ledger
        self.journal = ledger.journal
        self._now = clock
        self.open: AdoptionRecord | None = None  # adopted, not yet settled
        # slot -> packs counted (memory only: counted again after a restart)
        self.counts: dict[int, int] = {}
        self._scans: dict[int, int] = {}  # seq of a count in flight -> slot
        self.last: dict[str, Any] | None = None  # the last settlement, for the caller

    def restore(self) -> None:
        """Take up an adoption whose counts were not done before a restart."""
        row = self.journal.query_one(f"SELECT {_COLS} FROM robot_adoptions WHERE settled_at "
                                     "IS NULL ORDER BY adoption_id DESC LIMIT 1")
        self.open = None if row is None else _record(row)
        self.counts, self._scans = {}, {}

    @property
    def counting(self) -> bool:
        """An adoption waits for its counts: no pick and no load until they are in."""
        return self.open is not None

    def get(self, adoption_id: int) -> AdoptionRecord | None:
        row = self.journal.query_one(f"SELECT {_COLS} FROM robot_adoptions WHERE "
                                     "adoption_id = ?", (adoption_id,))
        return None if row is None else _record(row)

    # ------------------------------------------------------------------ adopting
    def adopt(self, status: Status, peer: str, actor: Actor, note: str | None) -> AdoptionRecord:
        """Record the new robot, mark what the old one never confirmed unknown, take the
        new robot's counters (one transaction; see the module docstring)."""
        ledger = self.ledger
        now = self._now()
        unknown = ledger.log.planned()
        slots = sorted({i.slot for i in unknown if i.motion in _COUNTED})
        journal_completions = ledger.log.applied_completion()
        max_seq = ledger.log.max_seq()
        robot = {"peer": peer, "protocol_version": status.protocol_version,
                 "firmware_version": status.firmware_version,
                 "completion_count": status.completion_count,
                 "last_accepted_seq": status.last_accepted_seq,
                 "geometry": list(status.geometry)}
        with self.journal.transaction():
            cur = self.journal.write(
                "INSERT INTO robot_adoptions (adopted_at, adopted_by, adopted_role, note, "
                "robot, journal_completions, journal_max_seq, unknown_seqs, slots) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (now, actor.name, actor.role, note, json.dumps(robot, sort_keys=True),
                 journal_completions, max_seq, json.dumps([i.seq for i in unknown]),
                 json.dumps(slots)))
            adoption_id = int(cur.lastrowid or 0)
            ledger.log.mark_unknown([i.seq for i in unknown], now)
            ledger.log.set_cursor(status.completion_count)
            self.journal.audit(now, actor.name, actor.role, "robot.adopted",
                               f"adoption:{adoption_id}",
                               {"completions": journal_completions, "max_seq": max_seq},
                               {"robot": robot, "note": note,
                                "unknown_seqs": [i.seq for i in unknown],
                                "slots_to_count": slots})
        ledger.outstanding = {}
        ledger.cursor = status.completion_count
        ledger.accepted = status.last_accepted_seq
        ledger.next_seq = max(max_seq, status.last_accepted_seq) + 1
        record = self.get(adoption_id)
        assert record is not None
        self.open = record
        self.counts, self._scans = {}, {}
        log.warning("robot adopted: its predecessor's unconfirmed commands are unknown "
                    "until their slots are counted", adoption_id=adoption_id,
                    unknown=len(unknown), slots=len(slots))
        return record

    # ------------------------------------------------------------------ counting
    def plan(self, room: int) -> list[Intent]:
        """SCAN_SLOT for the slots still to count (at most ``room``)."""
        if self.open is None:
            return []
        busy = set(self._scans.values())
        out: list[Intent] = []
        for slot in self.open.slots:
            if len(out) >= room:
                break
            if slot in self.counts or slot in busy:
                continue
            intent = self.ledger.intent(Motion.SCAN_SLOT, slot)
            self._scans[intent.seq] = slot
            out.append(intent)
        return out

    def on_count(self, intent: Intent, c: Completion) -> None:
        """A count's completion (inside its transaction; memory only: a count lost with a
        restart is made again)."""
        slot = self._scans.pop(intent.seq, None)
        if slot is not None and c.outcome is Outcome.OK:
            self.counts[slot] = c.detail

    def forget_scans(self) -> None:
        """Counts in flight were voided (never reached the robot): plan them again."""
        self._scans = {}

    @property
    def ready(self) -> bool:
        return self.open is not None and all(s in self.counts for s in self.open.slots)

    def settle_now(self, seen: InputScan, actor: Actor, after: After) -> dict[str, Any]:
        """Settle the unknown commands with the counts (one transaction with the caller's
        ``after`` work); returns what was settled."""
        record = self.open
        assert record is not None
        ledger = self.ledger
        unknown = ledger.log.unknown()
        at_input = self._at_input(unknown, seen)
        expected = {s: self.d.slot_count(s) for s in record.slots}
        result = settle(unknown, expected, self.counts, at_input)
        now = self._now()
        summary: dict[str, Any] = {"counts": {str(s): n for s, n in self.counts.items()},
                                   "expected": {str(s): n for s, n in expected.items()},
                                   "pack_at_input": at_input}
        with self.journal.transaction():
            if result.cut is not None:
                done, void = unknown[:result.cut], unknown[result.cut:]
                for i in done:
                    moved = result.moved.get(i.seq, 0)
                    outcome = Outcome.SLOT_EMPTY if (i.motion is Motion.PICK
                                                     and moved < i.count) else Outcome.OK
                    effect = ledger.effects.get(i.motion)
                    if effect is not None:
                        effect(i, Completion(0, i.seq, outcome, moved), after)
                    ledger.log.settle(i.seq, DONE, moved, now)
                for i in void:
                    ledger.log.settle(i.seq, VOID, None, now)
                    handler = ledger.on_void.get(i.motion)
                    if handler is not None:
                        handler(i)
                summary.update(settled=True, done=[i.seq for i in done],
                               void=[i.seq for i in void])
            else:
                summary.update(settled=False, **self._unsettled(unknown, at_input, actor, now))
            discrepancies = []
            for slot in record.slots:
                if slot in self.counts and self.d.record_slot_count(
                        slot, self.counts[slot], actor) is not None:
                    discrepancies.append(slot)
            summary["discrepancies"] = discrepancies
            self.journal.write("UPDATE robot_adoptions SET settled_at = ?, settlement = ? "
                               "WHERE adoption_id = ?",
                               (now, json.dumps(summary, sort_keys=True), record.adoption_id))
            self.journal.audit(now, actor.name, actor.role, "robot.adoption_settled",
                               f"adoption:{record.adoption_id}", None, summary)
        self.open = None
        self.counts = {}
        self.last = {**record.as_dict(), "settled_at": now, "settlement": summary}
        log.warning("adoption settled", adoption_id=record.adoption_id,
                    settled=summary["settled"], discrepancies=len(discrepancies))
        return summary

    def _at_input(self, unknown: Sequence[Intent], seen: InputScan) -> int | None:
        """The unknown STORE whose pack the input scanner shows."""
        if not seen.present:
            return None
        try:
            data = parse_scan(seen.data)
        except (DispenserError, ValueError):
            return None
        for i in unknown:
            if i.motion is Motion.STORE and i.pack_id is not None:
                p = self.d.get_pack(i.pack_id)
                if (p.drug_code, p.batch, p.serial, p.expiry) == (data.gtin, data.batch,
                                                                  data.serial, data.expiry):
                    return i.pack_id
        return None

    def _unsettled(self, unknown: Sequence[Intent], at_input: int | None, actor: Actor,
                   now: str) -> dict[str, Any]:
        """No prefix fits the counts: say only what is known (module docstring)."""
        ledger = self.ledger
        failed: list[str] = []
        refused: list[int] = []
        again: list[int] = []
        for i in unknown:
            if i.motion is Motion.PICK and i.shipment_id and i.shipment_id not in failed:
                try:
                    self.d.fail_shipment(
                        i.shipment_id, actor, "the robot was replaced while picking it: its "
                        "tote may hold packs the journal does not list; check it by hand")
                    failed.append(i.shipment_id)
                except DispenserError:
                    pass  # already final
            elif i.motion is Motion.STORE and i.pack_id is not None:
                if i.pack_id == at_input:
                    ledger.log.settle(i.seq, VOID, None, now)
                    handler = ledger.on_void.get(i.motion)
                    if handler is not None:
                        handler(i)
                    again.append(i.pack_id)
                else:
                    try:
                        self.d.refuse_stored(i.pack_id, "robot replaced: the pack was not "
                                             "at the input point; the slot count decides")
                        refused.append(i.pack_id)
                    except DispenserError:
                        pass
            elif i.motion not in _COUNTED:
                ledger.log.settle(i.seq, VOID, None, now)  # sent again when still needed
        return {"failed_shipments": failed, "refused_packs": refused,
                "stored_again": again}
