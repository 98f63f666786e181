"""Loading stock: staff scan a pack and put it at the robot's input point; the robot
stores it.

Loads go one at a time (the input scanner sees only the first pack): the staff scan must
match what the robot's scanner reads at the input point; then the pack gets its slot and
its STORE intent in one transaction (``prepare``), so a crash can never leave a pack
``loading`` without a command that says where it went. The STORE's completion books the
pack as stored or refused (``on_store``).

A STORE that did not happen for a reason that passes is **sent again**, the pack staying
``loading`` in its slot place: the robot refused the write (queue full, not ready, its
watchdog had expired), the command never reached it (``on_void``), an emergency stop or a
fault aborted it, or the robot was not homed. Before it is sent again the input scanner
must still show that pack (otherwise it is refused: somebody took it away). After a restart
the packs still ``loading`` without a STORE in flight are taken up the same way
(``restore``).

A pack the robot **refused** (slot full, mixed slot ...) still lies at the input point and
blocks it: every later load would read it. ``input_blocked`` names it for
``machine.status`` ("take the pack off the input point"), a load meanwhile is refused as
``refused_pack_at_input`` (not as a mismatch), and once the input scanner no longer shows
it (``watch_input``), loading goes on.

An ``admission`` (the WWKS2 front door with ``input_mode = "wwks2"``) may have the last
word on each pack: after the machine's own checks and before the pack is queued for its
STORE, it is asked (``admit``, which refuses with ``LoadRefused``), and it hears how the
load ended (``concluded``: the pack stored, or None).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from dispenser.core import Actor, Dispensary
from dispenser.core.errors import DispenserError, LoadRefused
from dispenser.core.gs1 import parse_scan
from dispenser.core.states import PackState
from dispenser.core.views import PackView
from dispenser.daemon.ledger import After, Counters, Intent, RobotLedger
from dispenser.daemon.robot import (
    Completion,
    InputScan,
    Motion,
    Outcome,
    Refusal,
    Robot,
    RobotUnavailable,
    Status,
)
from dispenser.journal import JournalUnavailable
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["Admission", "HardwareError", "LoadDesk", "LoadRequest"]

# How often the input scanner is read while a refused pack blocks the input point.
INPUT_WATCH_S = 1.0
# STORE outcomes after which the pack still lies at the input point and is sent again.
_PASSING = (Outcome.ABORTED, Outcome.ESTOP)


class HardwareError(Exception):
    """The robot refused or could not be reached for an action a person asked for."""


@dataclass
class LoadRequest:
    scan: str
    actor: Actor
    wait: bool
    future: asyncio.Future[PackView]
    pack_id: int | None = None
    ticket: object = None  # the admission's, for ``concluded``


class Admission(Protocol):
    """Who else decides whether a pack that passed the machine's checks is stored."""

    async def admit(self, scan: str, actor: Actor) -> object:
        """A ticket when the pack may be stored; raises ``LoadRefused`` otherwise."""
        ...

    def concluded(self, ticket: object, stored: PackView | None) -> None:
        """The load ended: the pack is stored (``stored``) or it is not (None)."""
        ...


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class LoadDesk:
    def __init__(self, dispensary: Dispensary, robot: Robot, ledger: RobotLedger,
                 counters: Counters, clock: Callable[[], str],
                 check_low_stock: Callable[[str], None]) -> None:
        self.d = dispensary
        self.robot = robot
        self.ledger = ledger
        self.counters = counters
        self._now = clock
        self._check_low_stock = check_low_stock
        self.loads: deque[LoadRequest] = deque()
        self._store_for: dict[int, LoadRequest] = {}  # pack_id -> request waiting for STORE
        # When the robot stores faster than a poll period (a simulator at high speed),
        # the scheduler looks again soon so bulk loading is not paced by its polling.
        self.fast_stores = False
        self._store_sent_at = 0.0
        # Packs still loading whose STORE is to be sent again (pack ids, in order).
        self.retries: deque[int] = deque()
        # The pack the robot refused, still lying at the input point (for machine.status).
        self.input_blocked: dict[str, Any] | None = None
        self._input_seen_at = 0.0
        self.admission: Admission | None = None
        self.on_admitted: Callable[[], None] = lambda: None  # wake the working loop
        self._tickets: dict[int, object] = {}  # pack_id -> admission ticket
        self._admitting: set[asyncio.Task[None]] = set()
        # One pack asked about at a time, in the order scanned: the packs lie at the
        # input point in that order, and the loads must reach ``loads`` in it.
        self._admit_lock = asyncio.Lock()
        ledger.effects[Motion.STORE] = self.on_store
        ledger.on_void[Motion.STORE] = self.on_void

    def request(self, scan: str, actor: Actor, wait: bool) -> asyncio.Future[PackView]:
        fut: asyncio.Future[PackView] = asyncio.get_running_loop().create_future()
        req = LoadRequest(scan, actor, wait, fut)
        if self.admission is None:
            self.loads.append(req)
        else:
            # Asked off the working loop: the answer may take seconds.
            task = asyncio.get_running_loop().create_task(self._admit(req, self.admission))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)
        return fut

    async def _admit(self, req: LoadRequest, admission: Admission) -> None:
        async with self._admit_lock:
            try:
                req.ticket = await admission.admit(req.scan, req.actor)
            except DispenserError as exc:
                if not req.future.done():
                    req.future.set_exception(exc)
                return
            except Exception as exc:
                log.exception("load admission failed")
                if not req.future.done():
                    req.future.set_exception(HardwareError(f"the load could not be asked "
                                                           f"about: {exc}"))
                return
            self.loads.append(req)
        self.on_admitted()

    def _conclude(self, ticket: object, stored: PackView | None) -> None:
        if ticket is not None and self.admission is not None:
            try:
                self.admission.concluded(ticket, stored)
            except Exception:
                log.exception("load admission conclusion failed")

    @property
    def storing(self) -> bool:
        return self.ledger.pending(Motion.STORE)

    def restore(self) -> None:
        """After a start: packs still ``loading`` whose STORE is not in flight (nor waiting
        for an adoption's counts) are sent again."""
        busy = {i.pack_id for i in self.ledger.outstanding.values()
                if i.motion is Motion.STORE}
        busy |= {i.pack_id for i in self.ledger.log.unknown() if i.motion is Motion.STORE}
        for p in self.d.list_stock(state=PackState.LOADING, limit=100000):
            if p.pack_id not in busy:
                self._retry(p.pack_id)

    def _retry(self, pack_id: int) -> None:
        if pack_id not in self.retries:
            self.retries.append(pack_id)

    async def prepare(self) -> list[Intent]:
        """Check the next load against the robot's input scanner and plan its STORE (a
        STORE to send again comes first)."""
        if self.storing:
            return []
        while self.retries:
            intent = await self._store_again(self.retries[0])
            self.retries.popleft()
            if intent is not None:
                self._store_sent_at = time.monotonic()
                return [intent]
        while self.loads and self.loads[0].future.done():
            self.loads.popleft()
        if not self.loads:
            return []
        req = self.loads.popleft()
        try:
            scan = self.d.check_scan(req.scan)
            try:
                seen = await self.robot.read_input()
            except RobotUnavailable as exc:
                raise HardwareError(f"robot not reachable: {exc}") from exc
            if not seen.present:
                self.input_blocked = None
                raise LoadRefused("no_pack_at_input", "no pack lies at the robot's input "
                                  "point; put the scanned pack there and scan it again")
            robot = parse_scan(seen.data)
            if (robot.gtin, robot.batch, robot.serial, robot.expiry) != (
                    scan.drug_code, scan.batch, scan.serial, scan.expiry):
                blocked = self._blocking(seen)
                if blocked is not None:
                    raise LoadRefused("refused_pack_at_input", blocked["action"])
                raise LoadRefused("input_mismatch", "the pack at the input point is not the "
                                  "one scanned; take it off and scan the pack you put there")
            self.input_blocked = None
            # The pack's slot and its STORE intent are committed together.
            with self.d.batch():
                view = self.d.begin_load(req.scan, req.actor)
                assert view.slot is not None
                intent = self.ledger.intent(Motion.STORE, view.slot, 0, 1,
                                            pack_id=view.pack_id)
                self.ledger.log.add([intent], self._now())
        except (DispenserError, HardwareError, JournalUnavailable) as exc:
            if isinstance(exc, DispenserError):
                self.counters.packs_refused += 1
            if not req.future.done():
                req.future.set_exception(exc)
            self._conclude(req.ticket, None)
            return []
        req.pack_id = view.pack_id
        if req.ticket is not None:
            self._tickets[view.pack_id] = req.ticket
        if req.wait:
            self._store_for[view.pack_id] = req
        elif not req.future.done():
            req.future.set_result(view)
        self._store_sent_at = time.monotonic()
        return [intent]

    async def _store_again(self, pack_id: int) -> Intent | None:
        """A new STORE for a pack still loading, if it still lies at the input point;
        otherwise it is refused."""
        try:
            p = self.d.get_pack(pack_id)
        except DispenserError:
            return None
        if p.state is not PackState.LOADING or p.slot is None:
            return None
        # A robot that cannot be asked raises here: the pack stays first in ``retries``.
        seen = await self.robot.read_input()
        here = False
        if seen.present:
            try:
                d = parse_scan(seen.data)
                here = (d.gtin, d.batch, d.serial, d.expiry) == (p.drug_code, p.batch,
                                                                 p.serial, p.expiry)
            except DispenserError:
                here = False
        if not here:
            reason = "not at the input point when its STORE was to be sent again"
            view = self.d.refuse_stored(pack_id, reason)
            log.warning("pack to store again is gone from the input point", pack_id=pack_id)
            self._finish(pack_id, HardwareError(
                f"the pack was {reason}; scan it again when it lies there"), view)
            return None
        with self.ledger.journal.transaction():
            intent = self.ledger.intent(Motion.STORE, p.slot, 0, 1, pack_id=pack_id)
            self.ledger.log.add([intent], self._now())
        log.info("store sent again", pack_id=pack_id, slot=p.slot, seq=intent.seq)
        return intent

    def _finish(self, pack_id: int, error: Exception | None, view: PackView | None) -> None:
        self._conclude(self._tickets.pop(pack_id, None), None if error is not None else view)
        req = self._store_for.pop(pack_id, None)
        if req is None or req.future.done():
            return
        if error is not None:
            req.future.set_exception(error)
        else:
            assert view is not None
            req.future.set_result(view)

    def on_store(self, intent: Intent, c: Completion, after: After) -> None:
        pid = intent.pack_id
        assert pid is not None
        req = self._store_for.get(pid)
        self.fast_stores = time.monotonic() - self._store_sent_at < 0.04
        if c.outcome in _PASSING or c.refusal is Refusal.NOT_HOMED:
            # Nothing moved and the pack still lies at the input point: send it again.
            after.append(functools.partial(self._retry, pid))
            after.append(lambda: log.info("store did not happen, sent again", pack_id=pid,
                                          outcome=c.outcome.name))
            return
        # Forgotten only once applied: a commit that fails leaves the caller waiting for
        # the completion applied again later.
        after.append(lambda: self._store_for.pop(pid, None))
        ticket = self._tickets.get(pid)
        if ticket is not None:
            after.append(lambda: self._tickets.pop(pid, None))
        if c.outcome is Outcome.OK:
            view = self.d.confirm_stored(pid)
            self.counters.packs_stored += 1
            after.append(lambda: log.info("stored", pack_id=pid, slot=intent.slot))
            after.append(lambda: self._check_low_stock(view.drug_code))
            after.append(functools.partial(self._conclude, ticket, view))
        elif c.outcome is Outcome.DROPPED:
            self.d.confirm_stored(pid)
            view = self.d.record_pack_lost(pid, PackState.DROPPED)
            self.counters.packs_lost += 1
            after.append(functools.partial(self._conclude, ticket, None))
        else:
            text = c.refusal.value if c.refusal is not None else c.outcome.value
            view = self.d.refuse_stored(pid, f"robot: {text}")
            self.counters.packs_refused += 1
            after.append(lambda: log.warning("robot did not store the pack", pack_id=pid,
                                             outcome=c.outcome.name, reason=text))
            if c.refusal is not Refusal.NO_PACK_AT_INPUT:
                # Refused where it lies: the input point is blocked until it is taken off.
                blocked = self._blocked_by(view, f"robot: {text}")
                after.append(lambda: setattr(self, "input_blocked", blocked))
            after.append(functools.partial(self._conclude, ticket, None))
        if req is not None and not req.future.done():
            after.append(functools.partial(_resolve, req.future, view))

    def on_void(self, intent: Intent) -> None:
        """The STORE never reached the robot: the pack still lies at the input point and
        its STORE is sent again (``prepare``)."""
        if intent.pack_id is not None:
            self._retry(intent.pack_id)

    # ------------------------------------------------------------------ the input point
    @staticmethod
    def _blocked_by(view: PackView, reason: str) -> dict[str, Any]:
        return {"pack_id": view.pack_id, "drug_code": view.drug_code, "batch": view.batch,
                "serial": view.serial, "expiry": view.expiry.isoformat(), "reason": reason,
                "action": f"the robot refused the pack at the input point ({reason}): take "
                          "the pack off the input point, then scan the next one"}

    def _blocking(self, seen: InputScan) -> dict[str, Any] | None:
        """The refused pack the input scanner shows, if it shows one (also one refused
        before a restart)."""
        try:
            d = parse_scan(seen.data)
        except DispenserError:
            return None
        b = self.input_blocked
        if b is not None and (b["drug_code"], b["batch"], b["serial"],
                              b["expiry"]) == (d.gtin, d.batch, d.serial,
                                               d.expiry.isoformat() if d.expiry else None):
            return b
        for p in self.d.list_stock(d.gtin, PackState.REFUSED, limit=1000):
            if (p.batch, p.serial, p.expiry) == (d.batch, d.serial, d.expiry):
                self.input_blocked = self._blocked_by(p, "refused before")
                return self.input_blocked
        return None

    async def watch_input(self, status: Status) -> None:
        """Follow the input point while a refused pack blocks it (and once after a start):
        it is free again when the scanner no longer shows that pack."""
        if self.input_blocked is None and self._input_seen_at:
            return
        if self.input_blocked is not None and status.input_count == 0:
            self.input_blocked = None
            return
        now = time.monotonic()
        if now - self._input_seen_at < INPUT_WATCH_S:
            return
        self._input_seen_at = now
        if status.input_count == 0:
            return
        seen = await self.robot.read_input()
        if not seen.present or self._blocking(seen) is None:
            self.input_blocked = None
