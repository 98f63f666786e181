"""The working loop: keeps the robot's queue full and turns completions into records.

One cycle (every ``poll_s``):

1. read the robot's status block (one FC03);
2. read the completions not yet applied (by completion number) and apply each in one
   journal transaction with its effect (``Dispensary.record_pick`` ...), see ``robotlog``;
3. follow the robot's state: faults and emergency stops latch the controller machine;
4. when the controller is ``ready``: give free outputs to the next shipments, plan PICKs
   for what their totes still need, RELEASE_TOTE for totes whose label is printed, STORE for
   packs being loaded; journal the intents, then queue them (at most 15 per FC16);
5. refresh the robot's watchdog and systemd's.

When the journal takes no writes (disk full, see ``journal_failed``) the loop parks: it
sends nothing and applies no completion (they wait in the robot's ring, which holds more
than the commands outstanding), keeps following the robot and refreshing its watchdog, and
holds faults and printed labels in memory until a probe finds the journal writable again.

Nothing here runs in a thread: the asyncio loop is the only caller of the robot client,
the dispensary and the controller machine. Transactions that mix the core's calls with the
daemon's own rows use ``Dispensary.batch()``, so if one fails the core's memory is
reloaded from the journal along with the rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispenser import sdnotify
from dispenser.config import RobotConfig
from dispenser.core import Dispensary
from dispenser.daemon.printdesk import PrintDesk
from dispenser.daemon.robotlog import Intent, RobotLog
from dispenser.errors import DispenserError, LoadRefused
from dispenser.gs1 import parse_scan
from dispenser.journal import JournalUnavailable
from dispenser.lifecycle import ControllerMachine, ControllerState
from dispenser.logs import get_logger
from dispenser.states import PackState, ShipmentState
from dispenser.views import SYSTEM, Actor, PackView, ShipmentView
from drivers.robot.client import RobotClient
from drivers.robot.codec import (
    Command,
    Completion,
    FaultCode,
    InvalidReason,
    MachineState,
    Opcode,
    Result,
    RobotStatus,
)
from drivers.robot.errors import (
    CompletionsLost,
    ModbusExceptionReply,
    QueueFull,
    ResetRefused,
    RobotError,
    SequenceRejected,
)

log = get_logger(__name__)

Publish = Callable[[dict[str, Any]], None]

# Outstanding (accepted, not yet applied) commands never exceed this, so a controller that
# dies can always find every completion it missed in the robot's 64-entry ring.
MAX_OUTSTANDING = 56
MAX_PER_WRITE = 15
MAX_INVALID_PER_SHIPMENT = 3
COMPLETIONS_PER_COMMIT = 4
FAST_POLL_S = 0.002

_FAULT_KIND = {FaultCode.JAM: "jam", FaultCode.DROPPED: "dropped",
               FaultCode.ESTOP: "estop", FaultCode.DOOR_OPEN: "door_open",
               FaultCode.CONTROLLER_LOST: "controller_lost"}


class _Halt(Exception):
    """Stop this cycle: the robot and the journal disagree and a fault is latched."""


class HardwareError(Exception):
    """The robot refused or could not be reached for an action a person asked for."""


@dataclass
class LoadRequest:
    scan: str
    actor: Actor
    wait: bool
    future: asyncio.Future[PackView]
    pack_id: int | None = None


@dataclass
class _Tote:
    shipment_id: str
    output: int  # 0: no tote (nothing for the robot to pick)
    printed: bool = False
    released: bool = False
    labelling: bool = False
    invalid: int = 0
    full_hits: int = 0
    seen: int = -1  # generation at which its picks were last planned in full


@dataclass
class Counters:
    commands_sent: int = 0
    writes: int = 0
    completions_applied: int = 0
    packs_picked: int = 0
    packs_stored: int = 0
    shipments_completed: int = 0
    link_downs: int = 0
    results: dict[str, int] = field(default_factory=dict)


class Scheduler:
    def __init__(self, *, robot: RobotClient, dispensary: Dispensary, robotlog: RobotLog,
                 machine: ControllerMachine, desk: PrintDesk, config: RobotConfig,
                 publish: Publish, clock: Callable[[], datetime],
                 low_stock_packs: int = 5, poll_s: float = 0.02, idle_poll_s: float = 0.1,
                 form_every_s: float = 0.2) -> None:
        self.robot = robot
        self.d = dispensary
        self.rlog = robotlog
        self.journal = robotlog.journal
        self.machine = machine
        self.desk = desk
        self.config = config
        self.publish = publish
        self.clock = clock
        self.low_stock_packs = low_stock_packs
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self.form_every_s = form_every_s
        self.counters = Counters()
        self.status: RobotStatus | None = None
        self.next_seq = 1
        self.cursor = 0
        self.outstanding: dict[int, Intent] = {}
        self.totes: dict[str, _Tote] = {}
        self.loads: deque[LoadRequest] = deque()
        self._store_for: dict[int, LoadRequest] = {}  # pack_id -> request waiting for STORE
        self._scan_waiters: dict[int, asyncio.Future[Completion]] = {}
        self._home_waiters: list[asyncio.Future[bool]] = []
        self._need_reconcile = True
        self._link_down_since: float | None = None
        self._last_form = 0.0
        self._last_refresh = 0.0
        self._last_sd_watchdog = 0.0
        self._sd_interval = sdnotify.watchdog_interval()
        self._stopping = False
        self._wake = asyncio.Event()
        self._low_stock: set[str] = set()
        self.last_error: str | None = None
        self.active_fault: int | None = None
        self._geometry_checked = False
        self._generation = 0
        self._fast_stores = False
        self._faulted_intent: Intent | None = None
        self._store_sent_at = 0.0
        self._last_output_full: frozenset[int] = frozenset()
        # Fault kinds that are recorded and latched but do not stop the machine (the
        # daemon puts "audit" here when [policy] audit_mismatch = "continue").
        self.nonstop_kinds: frozenset[str] = frozenset()
        self._held_prints: list[str] = []  # labels printed while the journal was down

    # ================================================================ helpers
    def _now(self) -> str:
        return self.clock().isoformat()

    def wake(self) -> None:
        self._bump()
        self._wake.set()

    def _bump(self) -> None:
        """Something that can change what the totes need happened: plan them again."""
        self._generation += 1

    def _event(self, topic: str, **body: Any) -> None:
        self.publish({"topic": topic, "at": self._now(), **body})

    def _shipment_event(self, view: ShipmentView) -> None:
        self._event("shipment", shipment_id=view.shipment_id, state=view.state.value,
                    order_ids=view.order_ids)
        for oid in view.order_ids:
            self._event("order", order_id=oid, state=view.state.value
                        if view.state is not ShipmentState.FORMING else "received",
                        shipment_id=view.shipment_id)

    @property
    def outputs(self) -> int:
        if self.status is not None and self.status.output_count:
            return min(self.status.output_count, self.config.outputs)
        return self.config.outputs

    # ================================================================ loop
    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run cycles until ``stop()``; then let the robot finish and record everything."""
        while not self._stopping:
            await self.cycle()
            try:
                async with asyncio.timeout(self._next_poll()):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
        await self._drain()

    def _next_poll(self) -> float:
        # Loading goes one pack at a time (the input scanner shows only the first pack):
        # when the robot stores faster than a poll period (a simulator at high speed),
        # look again soon so that bulk loading is not paced by our polling.
        if self.loads and self._fast_stores and any(
                i.purpose == "store" for i in self.outstanding.values()):
            return FAST_POLL_S
        return self.poll_s if self._busy() else self.idle_poll_s

    def _busy(self) -> bool:
        """Poll fast while the robot works or work waits; slowly (and cheaply) when idle.
        API calls that bring work wake the loop at once."""
        st = self.status
        return bool(self.outstanding or self.loads or st is None or st.queue_depth
                    or self._need_reconcile
                    or (self.totes and self.machine.state is ControllerState.READY)
                    or self.machine.state in (ControllerState.STARTUP,
                                              ControllerState.HOMING))

    async def cycle(self) -> None:
        try:
            status = await self.robot.read_status()
            self._link_up()
            if not self._journal_back():
                await self._park(status)
            else:
                if self._need_reconcile:
                    status = await self._reconcile(status)
                status = await self._apply_completions(status)
                self.status = status
                self._follow(status)
                await self._plan_and_send(status)
                await self._refresh_watchdog()
        except _Halt:
            pass
        except JournalUnavailable as exc:
            self.journal_failed(exc)
            with contextlib.suppress(RobotError):
                await self._refresh_watchdog()
        except CompletionsLost as exc:
            if self.machine.state not in (ControllerState.FAULT, ControllerState.ESTOP):
                self.raise_fault("completions_lost", str(exc), {})
        except RobotError as exc:
            self._link_trouble(exc)
        except Exception as exc:
            # A refusal of the core or a fault of our own: stop the machine and keep the
            # daemon up (the API still answers, the fault says what happened) instead of
            # dying and meeting the same error after every restart.
            log.exception("working loop error")
            self._need_reconcile = True
            if self.machine.state not in (ControllerState.FAULT, ControllerState.ESTOP,
                                          ControllerState.STOPPING):
                self.raise_fault("internal_error", f"{type(exc).__name__}: {exc}", {})
        self._sd_watchdog()

    def _sd_watchdog(self) -> None:
        if self._sd_interval is None:
            return
        now = time.monotonic()
        if now - self._last_sd_watchdog >= self._sd_interval:
            sdnotify.watchdog()
            self._last_sd_watchdog = now

    async def _refresh_watchdog(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh >= self.config.watchdog_ms / 4000:
            await self.robot.refresh_watchdog()
            self._last_refresh = now

    # ================================================================ link
    def _link_up(self) -> None:
        if self._link_down_since is not None:
            log.info("robot link back", down_s=round(time.monotonic() - self._link_down_since, 2))
            self._link_down_since = None
            self._need_reconcile = True
            self._event("machine", state=self.machine.state.value, link="up")

    def _link_trouble(self, exc: RobotError) -> None:
        now = time.monotonic()
        self.last_error = str(exc)
        if self._link_down_since is None:
            self._link_down_since = now
            self.counters.link_downs += 1
            log.warning("robot link trouble, retrying", error=str(exc))
            self._event("machine", state=self.machine.state.value, link="down")
        self._need_reconcile = True
        if (now - self._link_down_since >= self.config.link_fault_after_s
                and self.machine.state not in (ControllerState.FAULT, ControllerState.ESTOP,
                                               ControllerState.STOPPING)):
            self.raise_fault("link_down", f"no answer from the robot for "
                             f"{self.config.link_fault_after_s:g} s: {exc}",
                             {"error": str(exc)})

    @property
    def link_up(self) -> bool:
        return self._link_down_since is None and self.status is not None

    # ================================================================ reconcile
    async def _reconcile(self, status: RobotStatus) -> RobotStatus:
        """After start, a lost link or a fault: agree with the robot before sending."""
        self._bump()
        now = self._now()
        with self.d.batch():
            voided = self.rlog.void_above(status.last_accepted_seq, now)
            for intent in voided:
                self.outstanding.pop(intent.seq, None)
                self._on_void(intent)
        if voided:
            log.info("commands never sent, planned again", count=len(voided),
                     seqs=[i.seq for i in voided][:20])
        self.cursor = self.rlog.applied_completion()
        if status.completion_count < self.cursor:
            # Sending anything now could pick twice or lose track: stop here until a
            # person has looked (each acknowledgement checks again).
            if self.machine.state not in (ControllerState.FAULT, ControllerState.ESTOP):
                self.raise_fault(
                    "robot_mismatch",
                    "the robot reports fewer completions than the journal applied; its "
                    "memory was cleared or it is another robot: count its stock",
                    {"robot_completions": status.completion_count,
                     "journal_completions": self.cursor})
            raise _Halt
        self.outstanding = {i.seq: i for i in self.rlog.planned()}
        self.next_seq = max(self.rlog.max_seq(), status.last_accepted_seq) + 1
        if not self.totes:
            # Shipments whose tote was handed on (and label printed) but which were not
            # completed yet, e.g. waiting for a fridge pack's scan when the daemon stopped.
            for view in self.d.list_shipments(ShipmentState.LABELLING, limit=100000):
                self.maybe_complete(view.shipment_id)
            for t in self.rlog.open_totes():
                self.totes[t.shipment_id] = _Tote(t.shipment_id, t.output, printed=t.printed)
                try:
                    view = self.d.get_shipment(t.shipment_id)
                except DispenserError:
                    continue
                if view.state is ShipmentState.LABELLING:
                    self.totes[t.shipment_id].labelling = True
                    if not t.printed:
                        self.desk.submit(t.shipment_id)
        # A fault latched before a restart stays latched until someone acknowledges it.
        active = [f for f in self.rlog.faults(active=True) if f.kind not in self.nonstop_kinds]
        if active and self.machine.state not in (ControllerState.FAULT, ControllerState.ESTOP):
            trigger = "estop" if any(f.kind == "estop" for f in active) else "fault"
            if self.machine.may(trigger):
                self.machine.fire(trigger)
                log.warning("faults still to be acknowledged", faults=[f.fault_id
                                                                      for f in active])
        if status.machine_state is MachineState.CONTROLLER_LOST:
            log.info("robot stopped when the controller went silent; resetting it")
            await self.robot.reset()
            status = await self.robot.read_status()
        await self.robot.set_watchdog(self.config.watchdog_ms)
        self._last_refresh = time.monotonic()
        self._need_reconcile = False
        self._check_geometry(status)
        return status

    def _check_geometry(self, status: RobotStatus) -> None:
        if self._geometry_checked:
            return
        self._geometry_checked = True
        g = self.d.geometry
        robot = (status.sides, status.levels, status.columns, status.slot_capacity)
        mine = (g.sides, g.levels, g.columns, g.capacity)
        if robot != mine and all(robot):
            self.raise_fault("geometry", "the robot's storage geometry differs from the "
                             "configuration ([stock] sides/levels/columns/slot_capacity)",
                             {"robot": list(robot), "config": list(mine)})

    def _on_void(self, intent: Intent) -> None:
        if intent.purpose == "store" and intent.pack_id is not None:
            req = self._store_for.get(intent.pack_id)
            try:
                with self.journal.transaction():
                    self.d.refuse_stored(intent.pack_id, "store command never reached the robot")
            except DispenserError:
                pass
            self._store_for.pop(intent.pack_id, None)
            if req is not None and not req.future.done():
                req.future.set_exception(HardwareError(
                    "the robot did not take the STORE command; take the pack off the input "
                    "point and scan it again"))

    # ================================================================ completions
    async def _apply_completions(self, status: RobotStatus) -> RobotStatus:
        while status.completion_count > self.cursor:
            upto = min(status.completion_count, self.cursor + 64)
            completions = await self.robot.read_completions(self.cursor, upto)
            if completions:
                self._bump()
            # A few completions share one commit (one fsync); each is applied in its own
            # savepoint together with its effect and the cursor, so the journal never holds
            # an effect without its cursor or the other way round. Callers waiting on
            # results are told only once that commit is on disk. Between commits the loop
            # lets API calls through, so a burst of completions never stalls them long.
            for start in range(0, len(completions), COMPLETIONS_PER_COMMIT):
                after: list[Callable[[], object]] = []
                with self.d.batch():
                    for c in completions[start:start + COMPLETIONS_PER_COMMIT]:
                        self._apply(c, after)
                for fn in after:
                    fn()
                await asyncio.sleep(0)
            if upto >= status.completion_count:
                break
        return status

    def _apply(self, c: Completion, after: list[Callable[[], object]]) -> None:
        intent = self.outstanding.pop(c.seq, None) or self.rlog.get(c.seq)
        now = self._now()
        name = Result(c.result).name
        self.counters.results[name] = self.counters.results.get(name, 0) + 1
        if intent is not None and c.result in (Result.JAM, Result.DROPPED, Result.ESTOP):
            self._faulted_intent = intent
        with self.journal.transaction():
            if intent is None:
                log.error("completion for a command the journal does not know",
                          seq=c.seq, number=c.number, opcode=c.opcode, result=name)
                self.rlog.advance(c.number)
            else:
                if intent.state == "void":
                    log.error("completion for a command recorded as never sent",
                              seq=c.seq, result=name)
                try:
                    with self.journal.transaction():
                        self._effect(intent, c, after)
                except DispenserError as exc:
                    log.error("completion could not be applied", seq=c.seq,
                              purpose=intent.purpose, shipment_id=intent.shipment_id,
                              result=name, error=str(exc))
                    if intent.purpose in ("pick", "store") and c.detail > 0 and (
                            c.result != Result.INVALID):
                        # Packs moved that the journal cannot account for: a person must
                        # look at the tote or slot before the machine goes on.
                        ctx = {"seq": c.seq, "command": intent.purpose, "slot": intent.slot,
                               "output": intent.output, "shipment_id": intent.shipment_id,
                               "pack_id": intent.pack_id, "packs": c.detail,
                               "error": exc.message}
                        after.append(functools.partial(
                            self.raise_fault, "unrecorded_move",
                            f"the robot moved {c.detail} pack(s) the journal could not "
                            "record; check the tote or slot named in the context", ctx))
                self.rlog.complete(c.seq, c.number, int(c.result), c.detail, now)
        self.cursor = c.number
        self.counters.completions_applied += 1

    def _effect(self, intent: Intent, c: Completion, after: list[Callable[[], object]]) -> None:
        result = Result(c.result)
        if intent.purpose == "pick":
            self._effect_pick(intent, c, result, after)
        elif intent.purpose == "store":
            self._effect_store(intent, c, result, after)
        elif intent.purpose == "release":
            self._effect_release(intent, result, after)
        elif intent.purpose == "home":
            ok = result is Result.OK
            waiters, self._home_waiters = self._home_waiters, []
            for f in waiters:
                after.append(functools.partial(_resolve, f, ok))
        elif intent.purpose == "scan":
            fut = self._scan_waiters.pop(intent.seq, None)
            if fut is not None:
                after.append(functools.partial(_resolve, fut, c))

    def _effect_pick(self, intent: Intent, c: Completion, result: Result,
                     after: list[Callable[[], object]]) -> None:
        sid = intent.shipment_id
        assert sid is not None
        tote = self.totes.get(sid)
        if result in (Result.OK, Result.SLOT_EMPTY, Result.JAM, Result.DROPPED, Result.ESTOP):
            moved = min(c.detail, intent.count)
            if result is Result.ESTOP and moved == 0:
                return  # cut short before anything moved: planned again
            if result in (Result.JAM, Result.DROPPED) and moved < intent.count:
                # The pack after the delivered ones left the slot but is in neither the
                # tote nor the slot (stuck in the gripper, or fallen). Record it as picked,
                # then as lost from the tote: the shipment is owed one more pack and the
                # slot's other packs stay where the journal says they are.
                packs = self.d.record_pick(sid, intent.slot, moved + 1)
                lost = packs.pop()
                state = PackState.DROPPED if result is Result.DROPPED else PackState.MISSING
                self.d.record_pack_lost(lost.pack_id, state)
                after.append(lambda: log.warning("pack lost in a fault", pack_id=lost.pack_id,
                                                 shipment_id=sid, state=state.value))
            else:
                packs = self.d.record_pick(sid, intent.slot, moved)
            self.counters.packs_picked += len(packs)
            drug = packs[0].gtin if packs else None
            if result is not Result.OK:
                log.warning("pick short", shipment_id=sid, slot=intent.slot,
                            asked=intent.count, picked=moved, result=result.name)
                after.append(lambda: self._event("stock", kind="discrepancy", slot=intent.slot,
                                                 shipment_id=sid, expected=intent.count,
                                                 found=moved))
            after.append(lambda: log.info("picked", shipment_id=sid, slot=intent.slot,
                                          packs=len(packs), output=intent.output))
            if drug is not None:
                after.append(lambda: self._check_low_stock(drug))
        elif result is Result.OUTPUT_FULL:
            if tote is not None:
                tote.full_hits += 1
            log.warning("output full, pick planned again", shipment_id=sid,
                        output=intent.output)
        elif result is Result.INVALID:
            reason = c.invalid_reason
            log.error("robot refused a pick", shipment_id=sid, slot=intent.slot,
                      reason=reason.name if reason else c.detail)
            if reason is InvalidReason.NOT_HOMED:
                return
            if tote is not None:
                tote.invalid += 1
                if tote.invalid >= MAX_INVALID_PER_SHIPMENT:
                    view = self.d.fail_shipment(sid, SYSTEM, f"robot refused its picks "
                                                f"({reason.name if reason else c.detail})")
                    after.append(lambda: self._shipment_event(view))
        # ABORTED: nothing moved; the reservation stays and is planned again.

    def _effect_store(self, intent: Intent, c: Completion, result: Result,
                      after: list[Callable[[], object]]) -> None:
        pid = intent.pack_id
        assert pid is not None
        req = self._store_for.get(pid)
        # Forgotten only once applied: a commit that fails leaves the caller waiting for
        # the completion applied again later.
        after.append(lambda: self._store_for.pop(pid, None))
        self._fast_stores = time.monotonic() - self._store_sent_at < 2 * self.poll_s
        if result is Result.OK:
            view = self.d.confirm_stored(pid)
            self.counters.packs_stored += 1
            after.append(lambda: log.info("stored", pack_id=pid, slot=intent.slot))
            after.append(lambda: self._check_low_stock(view.gtin))
        elif result is Result.DROPPED:
            self.d.confirm_stored(pid)
            view = self.d.record_pack_lost(pid, PackState.DROPPED)
        else:
            reason = c.invalid_reason
            text = (reason.name.lower() if reason is not None else result.name.lower())
            view = self.d.refuse_stored(pid, f"robot: {text}")
            after.append(lambda: log.warning("robot did not store the pack", pack_id=pid,
                                             result=result.name, reason=text))
        if req is not None and not req.future.done():
            after.append(functools.partial(_resolve, req.future, view))

    def _effect_release(self, intent: Intent, result: Result,
                        after: list[Callable[[], object]]) -> None:
        sid = intent.shipment_id
        assert sid is not None
        if result is not Result.OK:
            return  # planned again
        self.rlog.mark_released(sid, self._now())
        tote = self.totes.get(sid)
        if tote is not None:
            tote.released = True
            if not tote.labelling:  # a failed shipment's tote, handed on for a person
                self.totes.pop(sid, None)
        log.info("tote handed on", shipment_id=sid, output=intent.output)
        # In the same transaction as the hand-on: no crash can leave the shipment
        # handed on but not completed.
        self.maybe_complete(sid)

    def _check_low_stock(self, gtin: str) -> None:
        level = self.d.stock_level(gtin)
        if level <= self.low_stock_packs and gtin not in self._low_stock:
            self._low_stock.add(gtin)
            self._event("stock", kind="low_stock", drug_code=gtin, in_stock=level)
        elif level > self.low_stock_packs:
            self._low_stock.discard(gtin)

    # ================================================================ shipments
    def maybe_complete(self, shipment_id: str) -> bool:
        """Complete a labelled shipment once printed, handed on and manual lines scanned.

        Reads the tote's state from the journal, so it also completes shipments whose
        tote was handed on before a restart."""
        record = self.rlog.tote(shipment_id)
        if record is None or not record.printed or not record.released:
            return False
        try:
            view = self.d.get_shipment(shipment_id)
        except DispenserError:
            return False
        if view.state is not ShipmentState.LABELLING:
            return False
        if any(len(m.confirmed) < m.quantity for m in view.manual_picks):
            return False
        view = self.d.complete_shipment(shipment_id)
        self.counters.shipments_completed += 1
        self.totes.pop(shipment_id, None)
        log.info("completed", shipment_id=shipment_id, orders=len(view.order_ids),
                 packs=len(view.picked) + sum(len(m.confirmed) for m in view.manual_picks))
        self._shipment_event(view)
        return True

    def _forget_tote(self, shipment_id: str, release: bool) -> None:
        tote = self.totes.pop(shipment_id, None)
        if tote is not None and release:
            self.rlog.mark_released(shipment_id, self._now())

    def on_printed(self, shipment_id: str) -> None:
        self._bump()
        try:
            with self.journal.transaction():
                self.rlog.mark_printed(shipment_id, self._now())
                tote = self.totes.get(shipment_id)
                if tote is not None and tote.output == 0:
                    self.rlog.mark_released(shipment_id, self._now())
        except JournalUnavailable:
            # Printed all the same: recorded once the journal takes writes (printing it
            # again meanwhile would only waste labels).
            log.warning("printed label not journaled yet", shipment_id=shipment_id)
            self._held_prints.append(shipment_id)
            return
        tote = self.totes.get(shipment_id)
        if tote is not None:
            tote.printed = True
            if tote.output == 0:
                tote.released = True
        log.info("labelled", shipment_id=shipment_id)
        try:
            self.maybe_complete(shipment_id)
        except JournalUnavailable:
            self._held_prints.append(shipment_id)  # completed when the journal is back
        self.wake()

    def _assign_outputs(self, status: RobotStatus) -> None:
        busy = {t.output for t in self.totes.values() if t.output and not t.released}
        free = [k for k in range(1, self.outputs + 1)
                if k not in busy and k not in status.output_full]
        if not free:
            return
        capacity = status.tote_capacity or 40
        for view in self.d.next_shipments(limit=len(free) + 4):
            needs_tote = bool(view.robot_picks)
            packs = sum(p.count for p in view.robot_picks)
            if packs > capacity:
                # One shipment is one tote; the robot would stop with OUTPUT_FULL half
                # way. Refuse it whole, before any pack moves, so nothing is half sent.
                failed = self.d.fail_shipment(
                    view.shipment_id, SYSTEM,
                    f"{packs} packs do not fit one tote ({capacity}); split the orders")
                log.error("shipment too large for one tote", shipment_id=view.shipment_id,
                          packs=packs, tote_capacity=capacity)
                self._shipment_event(failed)
                continue
            if needs_tote and not free:
                continue
            output = free.pop(0) if needs_tote else 0
            with self.d.batch():
                started = self.d.start_picking(view.shipment_id)
                self.rlog.assign_tote(view.shipment_id, output, self._now())
            self.totes[view.shipment_id] = _Tote(view.shipment_id, output)
            log.info("picking", shipment_id=view.shipment_id, output=output,
                     picks=sum(p.count for p in view.robot_picks),
                     manual=sum(m.quantity for m in view.manual_picks))
            self._shipment_event(started)
            if not free:
                break

    def _plan_tote(self, tote: _Tote, status: RobotStatus, room: int) -> list[Intent]:
        """Intents this tote needs now (at most ``room``)."""
        sid = tote.shipment_id
        out: list[Intent] = []
        mine = [i for i in self.outstanding.values() if i.shipment_id == sid]
        if tote.labelling:
            if tote.printed and not tote.released and tote.output and not any(
                    i.purpose == "release" for i in mine) and room > 0:
                out.append(self._intent(Opcode.RELEASE_TOTE, 0, tote.output, 0, "release",
                                        shipment_id=sid))
            return out
        if tote.seen == self._generation:
            return out  # nothing happened since its picks were planned in full
        view = self.d.get_shipment(sid)
        if view.state is not ShipmentState.PICKING:
            if view.state in (ShipmentState.FAILED, ShipmentState.CANCELLED):
                # Whatever is in its tote goes to a person (the packs are quarantined):
                # hand the tote on before the output takes another shipment's packs.
                if tote.output and not tote.released and not mine and room > 0:
                    out.append(self._intent(Opcode.RELEASE_TOTE, 0, tote.output, 0,
                                            "release", shipment_id=sid))
                elif not tote.output or tote.released:
                    self._forget_tote(sid, release=not tote.released)
            return out
        if not view.robot_picks and not view.owed and not any(
                i.purpose == "pick" for i in mine):
            labelled = self.d.start_labelling(sid)
            tote.labelling = True
            self._shipment_event(labelled)
            self.desk.submit(sid)
            return out
        if tote.output in status.output_full:
            if not view.picked and not mine:
                self._move_tote(tote, status)
            return out
        wanted: dict[int, int] = {}
        for p in view.robot_picks:
            wanted[p.slot] = wanted.get(p.slot, 0) + p.count
        for i in mine:
            if i.purpose == "pick":
                wanted[i.slot] = wanted.get(i.slot, 0) - i.count
        for slot, count in wanted.items():
            if count <= 0 or len(out) >= room:
                continue
            out.append(self._intent(Opcode.PICK, slot, tote.output, count, "pick",
                                    shipment_id=sid))
        if len(out) < room:
            tote.seen = self._generation
        return out

    def _move_tote(self, tote: _Tote, status: RobotStatus) -> None:
        busy = {t.output for t in self.totes.values() if t.output and not t.released}
        for k in range(1, self.outputs + 1):
            if k not in busy and k not in status.output_full:
                with self.journal.transaction():
                    self.rlog.move_tote(tote.shipment_id, k)
                log.info("output full, shipment moves on", shipment_id=tote.shipment_id,
                         output_from=tote.output, output_to=k)
                tote.output = k
                return

    def _intent(self, opcode: Opcode, slot: int, output: int, count: int, purpose: str,
                shipment_id: str | None = None, pack_id: int | None = None) -> Intent:
        seq = self.next_seq
        self.next_seq += 1
        return Intent(seq, int(opcode), slot, output, count, purpose, shipment_id, pack_id)

    # ================================================================ planning
    def _may_pick(self) -> bool:
        return self.machine.state is ControllerState.READY

    def _may_move(self) -> bool:
        return self.machine.state in (ControllerState.READY, ControllerState.PAUSED,
                                      ControllerState.MAINTENANCE, ControllerState.HOMING)

    async def _plan_and_send(self, status: RobotStatus) -> None:
        if self._stopping:
            return
        room = min(status.queue_capacity - status.queue_depth,
                   MAX_OUTSTANDING - len(self.outstanding))
        intents: list[Intent] = []
        st = self.machine.state
        if st is ControllerState.HOMING and room > 0:
            intents += self._plan_homing(status)
        if status.output_full != self._last_output_full:
            self._last_output_full = status.output_full
            self._bump()
        if self._may_pick():
            now = time.monotonic()
            if now - self._last_form >= self.form_every_s:
                self._last_form = now
                for view in self.d.form_shipments():
                    self._shipment_event(view)
            self._assign_outputs(status)
            # Hand-ons first (they free outputs), then the oldest tote's picks.
            for tote in sorted(self.totes.values(), key=lambda t: not t.labelling):
                if room - len(intents) <= 0:
                    break
                intents += self._plan_tote(tote, status, room - len(intents))
        if intents:
            await self._send(intents)
        if st in (ControllerState.READY, ControllerState.PAUSED) and room - len(intents) > 0:
            store = await self._prepare_load(status)
            if store:
                self._store_sent_at = time.monotonic()
                await self._send(store, journaled=True)

    def _plan_homing(self, status: RobotStatus) -> list[Intent]:
        if status.homed and not any(i.purpose == "home" for i in self.outstanding.values()):
            if status.machine_state in (MachineState.IDLE, MachineState.BUSY):
                self.machine.fire("homed")
            return []
        if status.machine_state in (MachineState.FAULT, MachineState.ESTOP,
                                    MachineState.CONTROLLER_LOST):
            return []
        if any(i.purpose == "home" for i in self.outstanding.values()):
            return []
        return [self._intent(Opcode.HOME, 0, 0, 0, "home")]

    async def _prepare_load(self, status: RobotStatus) -> list[Intent]:
        """Check the next load against the robot's input scanner and plan its STORE."""
        if any(i.purpose == "store" for i in self.outstanding.values()):
            return []
        while self.loads and self.loads[0].future.done():
            self.loads.popleft()
        if not self.loads:
            return []
        req = self.loads.popleft()
        try:
            scan = self.d.check_scan(req.scan)
            seen = await self.robot.read_input()
            if not seen.present:
                raise LoadRefused("no_pack_at_input", "no pack lies at the robot's input "
                                  "point; put the scanned pack there and scan it again")
            robot = parse_scan(seen.data)
            if (robot.gtin, robot.batch, robot.serial, robot.expiry) != (
                    scan.gtin, scan.batch, scan.serial, scan.expiry):
                raise LoadRefused("input_mismatch", "the pack at the input point is not the "
                                  "one scanned; take it off and scan the pack you put there")
            # The pack's slot and its STORE intent are committed together: a crash can
            # never leave a pack "loading" without a command that says where it went.
            seq = self.next_seq
            with self.d.batch():
                view = self.d.begin_load(req.scan, req.actor)
                assert view.slot is not None
                intent = Intent(seq, int(Opcode.STORE), view.slot, 0, 1, "store",
                                pack_id=view.pack_id)
                self.rlog.add([intent], self._now())
            self.next_seq = seq + 1
        except (DispenserError, RobotError, JournalUnavailable) as exc:
            if not req.future.done():
                req.future.set_exception(exc)
            return []
        req.pack_id = view.pack_id
        if req.wait:
            self._store_for[view.pack_id] = req
        elif not req.future.done():
            req.future.set_result(view)
        return [intent]

    async def _send(self, intents: list[Intent], journaled: bool = False) -> None:
        """Journal (unless ``journaled``), then queue, in writes of at most 15 commands."""
        for start in range(0, len(intents), MAX_PER_WRITE):
            chunk = intents[start:start + MAX_PER_WRITE]
            if not journaled:
                with self.journal.transaction():
                    self.rlog.add(chunk, self._now())
            for i in chunk:
                self.outstanding[i.seq] = i
            commands = [Command(i.seq, Opcode(i.opcode), i.slot, i.output, i.count)
                        for i in chunk]
            try:
                await self.robot.queue(commands)
            except (QueueFull, SequenceRejected) as exc:
                # Refused whole: nothing was queued. Void and plan again next cycle.
                with self.d.batch():
                    self.rlog.void([i.seq for i in chunk], self._now())
                    for i in chunk:
                        self.outstanding.pop(i.seq, None)
                        self._on_void(i)
                self._bump()
                log.warning("robot refused the commands, planned again",
                            error=str(exc), count=len(chunk))
                if isinstance(exc, SequenceRejected):
                    self._need_reconcile = True
                return
            # Any other error (timeout, lost link) leaves the outcome unknown: the next
            # reconcile reads last_accepted_seq and voids what did not arrive.
            self.counters.writes += 1
            self.counters.commands_sent += len(chunk)

    # ================================================================ robot state
    def _follow(self, status: RobotStatus) -> None:
        st = self.machine.state
        if st is ControllerState.STARTUP:
            self.machine.fire("start")
            return
        if status.machine_state is MachineState.ESTOP or status.estop_pressed:
            if st is not ControllerState.ESTOP and st is not ControllerState.STOPPING:
                self.raise_fault("estop", "emergency stop pressed: release it, then "
                                 "acknowledge the fault", self._context(status))
            return
        if status.machine_state is MachineState.FAULT:
            if st not in (ControllerState.FAULT, ControllerState.ESTOP,
                          ControllerState.STOPPING):
                kind = _FAULT_KIND.get(status.fault_code, "robot_fault")
                self.raise_fault(kind, _FAULT_TEXT.get(kind, "robot stopped on a fault"),
                                 self._context(status))
            return
        if status.machine_state is MachineState.CONTROLLER_LOST:
            # Our own watchdog expired (the loop was held up): nothing for a person to do;
            # the reconcile RESETs the robot and plans the aborted commands again.
            if not self._need_reconcile:
                log.warning("the robot stopped waiting for the controller; resetting it")
                self._need_reconcile = True
            return
        if (status.machine_state is MachineState.NOT_HOMED
                and st in (ControllerState.READY, ControllerState.PAUSED)):
            self.raise_fault("not_homed", _FAULT_TEXT["not_homed"], self._context(status))

    def _context(self, status: RobotStatus) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "robot_state": status.machine_state.name, "fault_code": status.fault_code.name,
            "door_open": status.door_open, "last_accepted_seq": status.last_accepted_seq,
            "last_completed_seq": status.last_completed_seq,
            "executing_seq": status.executing_seq,
        }
        # The command the fault stopped: the one in motion, else the last one that
        # completed with a fault result (what completed after it was ABORTED).
        intent = None
        if status.executing_seq:
            intent = self.outstanding.get(status.executing_seq) or self.rlog.get(
                status.executing_seq)
        if intent is None and self._faulted_intent is not None:
            intent = self._faulted_intent
        if intent is None:
            seq = status.last_completed_seq
            intent = self.outstanding.get(seq) or self.rlog.get(seq)
        self._faulted_intent = None
        if intent is not None:
            ctx.update(seq=intent.seq, command=intent.purpose, slot=intent.slot,
                       output=intent.output, shipment_id=intent.shipment_id,
                       pack_id=intent.pack_id)
        return ctx

    def raise_fault(self, kind: str, message: str, context: dict[str, Any]) -> int:
        trigger = "estop" if kind == "estop" else "fault"
        stops = kind not in self.nonstop_kinds
        same = next((f for f in self.rlog.faults(active=True) if f.kind == kind), None)
        if same is not None:
            # Still the same unacknowledged fault (e.g. seen again after a restart).
            if stops and self.machine.may(trigger):
                self.machine.fire(trigger)
            return same.fault_id
        try:
            with self.journal.transaction():
                fid = self.rlog.raise_fault(kind, message, context, self._now())
        except JournalUnavailable:
            # Latched all the same; journaled as soon as the journal takes writes again.
            fid = self.rlog.hold_fault(kind, message, context, self._now()).fault_id
        if stops:
            self.active_fault = fid
            if self.machine.may(trigger):
                self.machine.fire(trigger)
        log.error("machine fault", fault_id=fid, kind=kind, fault_message=message,
                  **{k: v for k, v in context.items() if k in ("seq", "slot", "output",
                                                              "shipment_id")})
        self._event("fault", fault_id=fid, kind=kind, active=True, message=message)
        return fid

    async def ack_fault(self, fault_id: int, actor: Actor, note: str | None) -> None:
        """A person cleared the cause: RESET the robot (HOME after an emergency stop),
        reconcile, resume. Raises HardwareError when the robot refuses the RESET."""
        record = self.rlog.fault(fault_id)
        if record is None:
            raise KeyError(fault_id)
        if not record.active:
            raise ValueError(f"fault {fault_id} was already acknowledged")
        others = [f for f in self.rlog.faults(active=True) if f.fault_id != fault_id
                  and f.kind not in self.nonstop_kinds]
        try:
            status = await self.robot.read_status()
            if status.machine_state in (MachineState.FAULT, MachineState.ESTOP,
                                        MachineState.CONTROLLER_LOST):
                await self.robot.reset()
        except ResetRefused as exc:
            raise HardwareError("the robot refused the RESET: the cause is still there "
                                "(jam, open door, pressed emergency stop)") from exc
        except RobotError as exc:
            if record.kind != "link_down":
                raise HardwareError(f"robot not reachable: {exc}") from exc
        with self.journal.transaction():
            self.rlog.ack_fault(fault_id, actor.name, actor.role, note, self._now())
        if self._link_down_since is not None:
            # A person looked: give the link (and the driver's reconnect backoff) the full
            # time again before calling it a fault once more.
            self._link_down_since = time.monotonic()
        self._event("fault", fault_id=fault_id, kind=record.kind, active=False)
        log.info("fault acknowledged", fault_id=fault_id, kind=record.kind, by_role=actor.role)
        if others:
            return  # still latched by another fault
        self.active_fault = None
        if self.machine.may("ack"):
            self.machine.fire("ack")
        self._need_reconcile = True
        self.wake()

    # ================================================================ journal outage
    def journal_failed(self, exc: JournalUnavailable) -> None:
        """The journal stopped taking writes: latch a ``journal`` fault (held in memory
        until it can be journaled) and agree with the journal again once it is back."""
        self._need_reconcile = True
        self.raise_fault("journal", f"{exc.message}; then acknowledge this fault",
                         {"cause": exc.cause, "path": exc.path, "filesystem": exc.filesystem,
                          "detail": exc.detail})

    def _journal_back(self) -> bool:
        """True when the journal takes writes. Held faults and printed labels are written
        first; while it is unavailable this fails fast (the journal probes at most once a
        second)."""
        if self.journal.unavailable is None and not self.rlog.held and not self._held_prints:
            return True
        prints, self._held_prints = self._held_prints, []
        try:
            with self.journal.transaction():
                self.rlog.write_held()
        except JournalUnavailable:
            self._held_prints = prints + self._held_prints
            return False
        log.info("journal back: applying what the robot did meanwhile")
        self._need_reconcile = True
        for sid in prints:
            self.on_printed(sid)
        return True

    async def _park(self, status: RobotStatus) -> None:
        """One cycle without the journal: no command, no completion applied; follow the
        robot (faults are held in memory) and keep its watchdog alive so it finishes what
        it was given."""
        self.status = status
        self._follow(status)
        await self._refresh_watchdog()

    # ================================================================ staff requests
    def request_load(self, scan: str, actor: Actor, wait: bool) -> asyncio.Future[PackView]:
        fut: asyncio.Future[PackView] = asyncio.get_running_loop().create_future()
        self.loads.append(LoadRequest(scan, actor, wait, fut))
        self.wake()
        return fut

    async def manual_command(self, opcode: Opcode, slot: int = 0,
                             timeout_s: float = 60.0) -> Completion | bool:
        """HOME or SCAN_SLOT outside of shipments (self-test in maintenance mode)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if opcode is Opcode.HOME:
            intent = self._intent(opcode, 0, 0, 0, "home")
            self._home_waiters.append(fut)
        else:
            intent = self._intent(opcode, slot, 0, 0, "scan")
            self._scan_waiters[intent.seq] = fut
        await self._send([intent])
        if intent.seq not in self.outstanding:
            raise HardwareError("the robot did not accept the command")
        try:
            async with asyncio.timeout(timeout_s):
                result: Completion | bool = await fut
        except TimeoutError:
            raise HardwareError(f"the robot did not finish the command within {timeout_s:g} s"
                                ) from None
        return result

    # ================================================================ shutdown
    async def _drain(self, timeout_s: float = 30.0) -> None:
        """Stop: no new commands; queued ones are aborted, the motion in progress finishes;
        every completion is applied before the link is closed."""
        deadline = time.monotonic() + timeout_s
        try:
            await self.robot.abort_queue()
        except RobotError as exc:
            log.warning("could not abort the robot's queue", error=str(exc))
        while time.monotonic() < deadline:
            try:
                status = await self.robot.read_status()
                status = await self._apply_completions(status)
                await self._refresh_watchdog()
            except RobotError as exc:
                log.warning("robot unreachable while stopping", error=str(exc))
                break
            except JournalUnavailable as exc:
                log.warning("journal unavailable while stopping: completions stay in the "
                            "robot's ring for the next start", error=exc.message)
                break
            if status.queue_depth == 0 and status.executing_seq == 0:
                break
            await asyncio.sleep(self.poll_s)
        with contextlib.suppress(RobotError):
            await self.robot.set_watchdog(0)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


_FAULT_TEXT = {
    "jam": "a pack is stuck in the gripper or chute: clear it, then acknowledge the fault",
    "dropped": "a pack fell during transport: retrieve it, then acknowledge the fault",
    "door_open": "the safety door is open: close it, then acknowledge the fault",
    "controller_lost": "the robot lost the controller's watchdog",
    "not_homed": "the robot lost its reference position (was it switched off?): check it, "
                 "then acknowledge the fault to home it",
}

__all__ = ["HardwareError", "LoadRequest", "ModbusExceptionReply", "Scheduler"]
