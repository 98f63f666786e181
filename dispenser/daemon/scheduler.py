"""The working loop: keeps the robot's queue full and turns completions into records.

One cycle (every ``poll_s``):

1. read the robot's status (one request);
2. after a start, a lost link or a fault, reconcile with the robot (``RobotLedger``); on
   every other cycle check that it is still the journal's robot: another robot (a
   replaced controller board) stops everything, changing nothing, until a technician
   adopts it (``Adoption``);
3. apply the completions not yet applied, each with its effect (``RobotLedger``); once the
   slots an adoption must count are counted, settle it;
4. follow the robot's state: faults and emergency stops latch the machine (``Faults``);
5. while an adoption's counts are due: SCAN_SLOT them, nothing else; else when the
   machine is ``ready``: close merge windows, give free outputs to the next shipments and
   plan what their totes need (``TotePlanner``), and STORE for the next pack being loaded
   (``LoadDesk``); the intents are journaled, then queued;
6. refresh the robot's watchdog and systemd's.

When the journal takes no writes (disk full, see ``journal_failed``) the loop parks: it
sends nothing and applies no completion (they wait in the robot's ring, which holds more
than the commands outstanding), keeps following the robot and refreshing its watchdog, and
holds faults and printed labels in memory until a probe finds the journal writable again.

Nothing here runs in a thread: the asyncio loop is the only caller of the robot, the
dispensary and the controller machine.

Size: what is left once the robot ledger, the tote planner, loading, faults, adoption and
machine mode live in modules of their own (issue 9): the cycle, and the calls that change
the cycle's own state between two cycles (reconciling after a start or a lost link, checking
it is still the journal's robot and storage, the HOME and SCAN_SLOT waiters, adopting a
robot and settling its counts, acknowledging a fault with its RESET, parking while the
journal takes no writes and the labels printed meanwhile). They share the cycle's flags
(``_need_reconcile``, ``unadopted``, the link-down time, the held prints), so they stay in
the class that owns the loop. The adoption's side (``adopt``, ``adoption_status``, settling)
is the part that could move next, if it grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dispenser import sdnotify
from dispenser.config import RobotConfig
from dispenser.core import Actor, Dispensary
from dispenser.core.views import SYSTEM, PackView
from dispenser.daemon.adoption import Adoption
from dispenser.daemon.controller import ControllerMachine, ControllerState
from dispenser.daemon.faults import FaultRecord, Faults
from dispenser.daemon.ledger import After, Counters, Intent, RobotLedger, RobotMismatch
from dispenser.daemon.loading import HardwareError, LoadDesk
from dispenser.daemon.machinemode import MachineMode
from dispenser.daemon.printdesk import PrintDesk
from dispenser.daemon.robot import (
    Completion,
    CompletionsLost,
    Motion,
    Outcome,
    ResetRefused,
    Robot,
    RobotMode,
    RobotUnavailable,
    Status,
)
from dispenser.daemon.totes import TotePlanner
from dispenser.daemon.utilization import BusyClock
from dispenser.journal import JournalUnavailable
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["HardwareError", "Scheduler"]

Publish = Callable[[dict[str, Any]], None]

FAST_POLL_S = 0.002
# Shipments formed (merge window closed, stock reserved, view built) in one cycle: about
# 10-30 ms of the loop on the development VM; more due are formed in the next cycles.
FORM_PER_CYCLE = 100


class _Halt(Exception):
    """Stop this cycle: the robot and the journal disagree and a fault is latched."""


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class Scheduler:
    def __init__(self, *, robot: Robot, dispensary: Dispensary,
                 machine: ControllerMachine, desk: PrintDesk, config: RobotConfig,
                 publish: Publish, clock: Callable[[], datetime],
                 low_stock_packs: int = 5, poll_s: float = 0.02, idle_poll_s: float = 0.1,
                 form_every_s: float = 0.2) -> None:
        self.robot = robot
        self.d = dispensary
        self.journal = dispensary.journal
        self.machine = machine
        self.desk = desk
        self.config = config
        self.publish = publish
        self.clock = clock
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self.form_every_s = form_every_s
        self.counters = Counters()
        self.busy = BusyClock()  # time the robot was seen in motion (metrics)
        self.ledger = RobotLedger(self.journal, robot, clock, self.counters)
        self.totes = TotePlanner(dispensary, self.ledger, self.counters, self._now,
                                 self._event, desk.submit, lambda: self.outputs,
                                 low_stock_packs)
        self.loading = LoadDesk(dispensary, robot, self.ledger, self.counters, self._now,
                                self.totes.check_low_stock)
        self.faults = Faults(self.journal, machine, self.ledger, self._now, self._event)
        self.adoption = Adoption(dispensary, self.ledger, self._now)
        self.mode = MachineMode(self.journal, machine, self._now)
        self.ledger.effects[Motion.HOME] = self._on_home
        self.ledger.effects[Motion.SCAN_SLOT] = self._on_scan
        self.ledger.on_void[Motion.SCAN_SLOT] = self._scan_void
        self.ledger.on_unrecorded_move = self._unrecorded_move
        self.status: Status | None = None
        self._scan_waiters: dict[int, asyncio.Future[Completion]] = {}
        self._home_waiters: list[asyncio.Future[bool]] = []
        self._need_reconcile = True
        self._link_down_since: float | None = None
        self._last_form = 0.0
        self._forming_more = False
        self._last_refresh = 0.0
        self._last_sd_watchdog = 0.0
        self._sd_interval = sdnotify.watchdog_interval()
        self._stopping = False
        self._wake = asyncio.Event()
        self.last_error: str | None = None
        # The robot's storage differs from the configuration (``_check_geometry``).
        self.geometry_differs: dict[str, Any] | None = None
        # Another robot answers (RobotMismatch) and nobody adopted it yet: its context.
        self.unadopted: dict[str, Any] | None = None
        self._restored = False
        self._settle_waiters: list[asyncio.Future[dict[str, Any]]] = []
        self._last_output_full: frozenset[int] = frozenset()
        self._held_prints: list[str] = []  # labels printed while the journal was down

    # ================================================================ helpers
    def _now(self) -> str:
        return self.clock().isoformat()

    def wake(self) -> None:
        self.totes.bump()
        self._wake.set()

    def _event(self, topic: str, **body: Any) -> None:
        self.publish({"topic": topic, "at": self._now(), **body})

    @property
    def outputs(self) -> int:
        if self.status is not None and self.status.output_count:
            return min(self.status.output_count, self.config.outputs)
        return self.config.outputs

    @property
    def link_up(self) -> bool:
        return self._link_down_since is None and self.status is not None

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
        # Loading goes one pack at a time: when the robot stores faster than a poll period
        # (a simulator at high speed), look again soon so that bulk loading is not paced
        # by our polling.
        if self.loading.loads and self.loading.fast_stores and self.loading.storing:
            return FAST_POLL_S
        return self.poll_s if self._busy() else self.idle_poll_s

    def _busy(self) -> bool:
        """Poll fast while the robot works or work waits; slowly (and cheaply) when idle.
        API calls that bring work wake the loop at once."""
        st = self.status
        return bool(self.ledger.outstanding or self.loading.loads or st is None
                    or self._forming_more
                    or st.queue_depth or self._need_reconcile
                    or ((self.totes.totes or self.totes.tasks.active)
                        and self.machine.state is ControllerState.READY)
                    or self.machine.state in (ControllerState.STARTUP,
                                              ControllerState.HOMING))

    async def cycle(self) -> None:
        try:
            status = await self.robot.read_status()
            self.busy.observe(status.mode is RobotMode.BUSY, time.monotonic())
            self._link_up()
            if not self._journal_back():
                await self._park(status)
            else:
                if self._need_reconcile:
                    status = await self._reconcile(status)
                else:
                    self._check_robot(status)
                if await self.ledger.apply_completions(status):
                    self.totes.bump()
                if self.adoption.ready:
                    await self._settle_adoption()
                self.status = status
                if self.faults.follow(status) and not self._need_reconcile:
                    log.warning("the robot stopped waiting for the controller; resetting it")
                    self._need_reconcile = True
                await self._plan_and_send(status)
                await self.loading.watch_input(status)
                await self._refresh_watchdog()
        except _Halt:
            pass
        except JournalUnavailable as exc:
            self.journal_failed(exc)
            with contextlib.suppress(RobotUnavailable):
                await self._refresh_watchdog()
        except CompletionsLost as exc:
            if not self.faults.latched:
                self.faults.raise_fault("completions_lost", str(exc), {})
        except RobotUnavailable as exc:
            self._link_trouble(exc)
        except Exception as exc:
            # A refusal of the core or a fault of our own: stop the machine and keep the
            # daemon up (the API still answers, the fault says what happened) instead of
            # dying and meeting the same error after every restart.
            log.exception("working loop error")
            self._need_reconcile = True
            if self.machine.state not in (ControllerState.FAULT, ControllerState.ESTOP,
                                          ControllerState.STOPPING):
                self.faults.raise_fault("internal_error", f"{type(exc).__name__}: {exc}", {})
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

    def _link_trouble(self, exc: RobotUnavailable) -> None:
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
            self.faults.raise_fault("link_down", f"no answer from the robot for "
                                    f"{self.config.link_fault_after_s:g} s: {exc}",
                                    {"error": str(exc)})

    # ================================================================ reconcile
    async def _reconcile(self, status: Status) -> Status:
        """After start, a lost link or a fault: agree with the robot before sending."""
        self.totes.bump()
        try:
            self.ledger.reconcile(status)
        except RobotMismatch as exc:
            self._robot_mismatch(exc)
            raise _Halt from None
        self.unadopted = None
        self.totes.restore()
        if not self._restored:
            self._restored = True
            self.adoption.restore()
            self.loading.restore()
        self.faults.relatch()
        if status.mode is RobotMode.CONTROLLER_LOST:
            log.info("robot stopped when the controller went silent; resetting it")
            await self.robot.reset()
            status = await self.robot.read_status()
        await self.robot.set_watchdog(self.config.watchdog_ms)
        self._last_refresh = time.monotonic()
        self._need_reconcile = False
        self._check_geometry(status)
        return status

    def _check_robot(self, status: Status) -> None:
        """Every cycle: still the journal's robot? (A board replaced without the link
        going down shows only in its counters.)"""
        try:
            self.ledger.check(status)
        except RobotMismatch as exc:
            self._need_reconcile = True
            self._robot_mismatch(exc)
            raise _Halt from None

    def _robot_mismatch(self, exc: RobotMismatch) -> None:
        """Sending anything now could pick twice or lose track, and changing the journal
        would guess: stop here, change nothing, until a technician adopts the robot. The
        fault is raised once; acknowledging it leads to maintenance mode, where the robot
        waits for ``adopt``."""
        first = self.unadopted is None
        self.unadopted = exc.context
        if first and self.machine.state is not ControllerState.STOPPING:
            self.faults.raise_fault("robot_mismatch", str(exc), exc.context)

    def _geometry(self, status: Status) -> dict[str, Any] | None:
        g = self.d.geometry
        robot = status.geometry
        mine = (g.sides, g.levels, g.columns, g.capacity)
        if robot != mine and all(robot):
            return {"robot": list(robot), "config": list(mine)}
        return None

    def _check_geometry(self, status: Status) -> None:
        """At every reconcile: picking against storage the robot does not have would send
        the gripper to the wrong places."""
        self.geometry_differs = self._geometry(status)
        if self.geometry_differs is not None:
            self.faults.raise_fault(
                "geometry", "the robot's storage geometry differs from the configuration "
                "([stock] sides/levels/columns/slot_capacity): correct the configuration "
                "and restart, or connect the right robot; then acknowledge this fault",
                self.geometry_differs)

    def _unrecorded_move(self, ctx: dict[str, Any]) -> None:
        self.faults.raise_fault(
            "unrecorded_move", f"the robot moved {ctx['packs']} pack(s) the journal could "
            "not record; check the tote or slot named in the context", ctx)

    # ================================================================ planning
    async def _plan_and_send(self, status: Status) -> None:
        if self._stopping:
            return
        room = self.ledger.room(status)
        intents: list[Intent] = []
        st = self.machine.state
        if st is ControllerState.HOMING and room > 0:
            intents += self._plan_homing(status)
        if self.adoption.counting:
            # The adopted robot's counts come before any pick or load.
            if st in (ControllerState.READY, ControllerState.PAUSED,
                      ControllerState.MAINTENANCE) and room > 0:
                intents += self._plan_counts(status, room)
            if intents:
                await self.ledger.send(intents)
            return
        if status.output_full != self._last_output_full:
            self._last_output_full = status.output_full
            self.totes.bump()
        if st is ControllerState.READY:
            now = time.monotonic()
            if self._forming_more or now - self._last_form >= self.form_every_s:
                self._last_form = now
                formed = self.d.form_shipments(FORM_PER_CYCLE)
                # More were due: formed in the next cycles, a slice each, so that a burst
                # of orders does not hold the loop for the whole merge round.
                self._forming_more = len(formed) == FORM_PER_CYCLE
                for view in formed:
                    self.totes.shipment_event(view)
            self.totes.assign_outputs(status)
            intents += self.totes.plan(status, room - len(intents))
        if intents and not await self.ledger.send(intents):
            self.totes.bump()
            self._need_reconcile = self._need_reconcile or self.ledger.resync_needed
        if st in (ControllerState.READY, ControllerState.PAUSED) and room - len(intents) > 0:
            store = await self.loading.prepare()
            if store and not await self.ledger.send(store, journaled=True):
                self._need_reconcile = self._need_reconcile or self.ledger.resync_needed

    def _plan_homing(self, status: Status) -> list[Intent]:
        homing = self.ledger.pending(Motion.HOME)
        if status.homed and not homing:
            if status.mode in (RobotMode.IDLE, RobotMode.BUSY):
                self.machine.fire("homed")
                self.mode.restore()  # paused or in maintenance before: still so
            return []
        if status.mode in (RobotMode.FAULT, RobotMode.ESTOP, RobotMode.CONTROLLER_LOST):
            return []
        if homing:
            return []
        return [self.ledger.intent(Motion.HOME)]

    def _plan_counts(self, status: Status, room: int) -> list[Intent]:
        if not status.homed:
            if self.ledger.pending(Motion.HOME) or status.mode in (
                    RobotMode.FAULT, RobotMode.ESTOP, RobotMode.CONTROLLER_LOST):
                return []
            return [self.ledger.intent(Motion.HOME)]
        return self.adoption.plan(room)

    # ================================================================ adoption
    async def adopt(self, actor: Actor, note: str | None,
                    timeout_s: float = 120.0) -> dict[str, Any]:
        """Adopt the robot that answers in place of the journal's (maintenance mode only):
        record it, mark what its predecessor never confirmed unknown, count the slots
        those commands touched and settle them (``dispenser.daemon.adoption``). Returns
        the adoption, settled once the counts are in (within ``timeout_s``; otherwise
        the counts go on and ``settled_at`` is null). Raises ValueError when the machine
        is not in maintenance mode or the robot is the journal's, HardwareError when the
        robot cannot be read."""
        if self.machine.state is not ControllerState.MAINTENANCE:
            raise ValueError("adopting a robot moves it (it counts slots): switch to "
                             "maintenance mode first (acknowledge the robot_mismatch fault, "
                             "or dispenserctl maintenance on)")
        if self.adoption.counting:
            raise ValueError("an adoption is still counting its slots")
        try:
            status = await self.robot.read_status()
        except RobotUnavailable as exc:
            raise HardwareError(f"robot not reachable: {exc}") from exc
        self.ledger.cursor = self.ledger.log.applied_completion()
        self.ledger.accepted = self.ledger.log.accepted()
        try:
            self.ledger.check(status)
        except RobotMismatch:
            pass
        else:
            raise ValueError("the robot that answers is the journal's own: nothing to adopt")
        record = self.adoption.adopt(status, self.robot.peer, actor, note)
        self.unadopted = None
        self._need_reconcile = True
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._settle_waiters.append(fut)
        self.wake()
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(fut)
        except TimeoutError:
            return record.as_dict()

    def adoption_status(self) -> dict[str, Any] | None:
        """For ``machine.status``: another robot waits to be adopted, or an adoption's
        slots are being counted; else None."""
        if self.unadopted is not None:
            return {"state": "waiting", "robot": self.unadopted,
                    "action": "another robot answers than the journal's: a technician "
                              "adopts it in maintenance mode (dispenserctl robot adopt)"}
        record = self.adoption.open
        if record is not None:
            return {"state": "counting", "adoption_id": record.adoption_id,
                    "slots_to_count": record.slots,
                    "counted": sorted(self.adoption.counts)}
        return None

    async def _settle_adoption(self) -> None:
        """All counts are in: settle the unknown commands (one transaction)."""
        seen = await self.robot.read_input()
        after: After = []
        self.adoption.settle_now(seen, SYSTEM, after)
        for fn in after:
            fn()
        self.totes.bump()
        result = self.adoption.last or {}
        waiters, self._settle_waiters = self._settle_waiters, []
        for f in waiters:
            _resolve(f, result)
        self._event("machine", state=self.machine.state.value, adoption="settled")

    # ================================================================ home and scan
    def _on_home(self, intent: Intent, c: Completion, after: After) -> None:
        ok = c.outcome is Outcome.OK
        waiters, self._home_waiters = self._home_waiters, []
        for f in waiters:
            after.append(functools.partial(_resolve, f, ok))

    def _on_scan(self, intent: Intent, c: Completion, after: After) -> None:
        self.adoption.on_count(intent, c)
        fut = self._scan_waiters.pop(intent.seq, None)
        if fut is not None:
            after.append(functools.partial(_resolve, fut, c))

    def _scan_void(self, intent: Intent) -> None:
        self.adoption.forget_scans()

    async def manual_command(self, motion: Motion, slot: int = 0,
                             timeout_s: float = 60.0) -> Completion | bool:
        """HOME or SCAN_SLOT outside of shipments (self-test in maintenance mode)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if motion is Motion.HOME:
            intent = self.ledger.intent(Motion.HOME)
            self._home_waiters.append(fut)
        else:
            intent = self.ledger.intent(Motion.SCAN_SLOT, slot)
            self._scan_waiters[intent.seq] = fut
        await self.ledger.send([intent])
        if intent.seq not in self.ledger.outstanding:
            raise HardwareError("the robot did not accept the command")
        try:
            async with asyncio.timeout(timeout_s):
                result: Completion | bool = await fut
        except TimeoutError:
            raise HardwareError(f"the robot did not finish the command within {timeout_s:g} s"
                                ) from None
        return result

    # ================================================================ staff requests
    def request_load(self, scan: str, actor: Actor, wait: bool) -> asyncio.Future[PackView]:
        fut = self.loading.request(scan, actor, wait)
        self.wake()
        return fut

    def maybe_complete(self, shipment_id: str) -> bool:
        return self.totes.maybe_complete(shipment_id)

    def on_print_starting(self, shipment_id: str) -> None:
        """The print desk is about to send a shipment's first document: journaled, so
        that after a crash it is printed again marked COPY."""
        try:
            self.totes.on_print_starting(shipment_id)
        except JournalUnavailable:
            # Printed all the same (a label that waits for the disk helps nobody); only a
            # crash before the journal is back would print it again unmarked.
            log.warning("start of printing not journaled", shipment_id=shipment_id)

    def on_printed(self, shipment_id: str) -> None:
        """The print desk printed a shipment's label and slip."""
        try:
            self.totes.on_printed(shipment_id)
        except JournalUnavailable:
            # Printed all the same: recorded once the journal takes writes (printing it
            # again meanwhile would only waste labels).
            log.warning("printed label not journaled yet", shipment_id=shipment_id)
            self._held_prints.append(shipment_id)
        self.wake()

    # ================================================================ journal outage
    def journal_failed(self, exc: JournalUnavailable) -> None:
        """The journal stopped taking writes: latch a ``journal`` fault (held in memory
        until it can be journaled) and agree with the journal again once it is back."""
        self._need_reconcile = True
        self.faults.raise_fault("journal", f"{exc.message}; then acknowledge this fault",
                                {"cause": exc.cause, "path": exc.path,
                                 "filesystem": exc.filesystem, "detail": exc.detail})

    def _journal_back(self) -> bool:
        """True when the journal takes writes. Held faults and printed labels are written
        first; while it is unavailable this fails fast (the journal probes at most once a
        second)."""
        if (self.journal.unavailable is None and not self.faults.log.held
                and not self._held_prints):
            return True
        prints, self._held_prints = self._held_prints, []
        try:
            with self.journal.transaction():
                self.faults.log.write_held()
        except JournalUnavailable:
            self._held_prints = prints + self._held_prints
            return False
        log.info("journal back: applying what the robot did meanwhile")
        self._need_reconcile = True
        for sid in prints:
            self.on_printed(sid)
        return True

    async def _park(self, status: Status) -> None:
        """One cycle without the journal: no command, no completion applied; follow the
        robot (faults are held in memory) and keep its watchdog alive so it finishes what
        it was given."""
        self.status = status
        self.faults.follow(status)
        await self._refresh_watchdog()

    async def ack_fault(self, fault_id: int, actor: Actor, note: str | None) -> FaultRecord:
        """A person cleared the cause: RESET the robot (HOME after an emergency stop),
        reconcile, resume. Raises HardwareError when the robot refuses the RESET, KeyError
        for an unknown fault and ValueError for one already acknowledged."""
        record = self.faults.log.get(fault_id)
        if record is None:
            raise KeyError(fault_id)
        if not record.active:
            raise ValueError(f"fault {fault_id} was already acknowledged")
        trigger = "ack"
        try:
            status = await self.robot.read_status()
            if record.kind == "geometry":
                differs = self._geometry(status)
                if differs is not None:
                    raise HardwareError(
                        "the robot's storage still differs from the configuration (robot "
                        f"{differs['robot']}, [stock] {differs['config']}): correct the "
                        "configuration and restart, or connect the right robot")
            if record.kind == "robot_mismatch":
                self.ledger.cursor = self.ledger.log.applied_completion()
                self.ledger.accepted = self.ledger.log.accepted()
                try:
                    self.ledger.check(status)
                except RobotMismatch as exc:
                    # Still another robot: nothing a RESET changes. The machine waits in
                    # maintenance mode for a technician to adopt it.
                    self.unadopted = exc.context
                    trigger = "ack_into_maintenance"
                else:
                    self.unadopted = None
            if status.mode in (RobotMode.FAULT, RobotMode.ESTOP, RobotMode.CONTROLLER_LOST):
                await self.robot.reset()
        except ResetRefused as exc:
            raise HardwareError("the robot refused the RESET: the cause is still there "
                                "(jam, open door, pressed emergency stop)") from exc
        except RobotUnavailable as exc:
            if record.kind != "link_down":
                raise HardwareError(f"robot not reachable: {exc}") from exc
        if self._link_down_since is not None:
            # A person looked: give the link (and the driver's reconnect backoff) the full
            # time again before calling it a fault once more.
            self._link_down_since = time.monotonic()
        if self.faults.acknowledge(record, actor, note, trigger):
            self._need_reconcile = True
            self.wake()
        acked = self.faults.log.get(fault_id)
        assert acked is not None
        return acked

    # ================================================================ shutdown
    async def _drain(self, timeout_s: float = 30.0) -> None:
        """Stop: no new commands; queued ones are aborted, the motion in progress finishes;
        every completion is applied before the link is closed."""
        deadline = time.monotonic() + timeout_s
        try:
            await self.robot.abort_queue()
        except RobotUnavailable as exc:
            log.warning("could not abort the robot's queue", error=str(exc))
        while time.monotonic() < deadline:
            try:
                status = await self.robot.read_status()
                await self.ledger.apply_completions(status)
                await self._refresh_watchdog()
            except RobotUnavailable as exc:
                log.warning("robot unreachable while stopping", error=str(exc))
                break
            except JournalUnavailable as exc:
                log.warning("journal unavailable while stopping: completions stay in the "
                            "robot's ring for the next start", error=exc.message)
                break
            if status.queue_depth == 0 and status.executing_seq == 0:
                break
            await asyncio.sleep(self.poll_s)
        with contextlib.suppress(RobotUnavailable):
            await self.robot.set_watchdog(0)
