"""Loading stock: staff scan a pack and put it at the robot's input point; the robot
stores it.

Loads go one at a time (the input scanner sees only the first pack): the staff scan must
match what the robot's scanner reads at the input point; then the pack gets its slot and
its STORE intent in one transaction (``prepare``), so a crash can never leave a pack
``loading`` without a command that says where it went. The STORE's completion books the
pack as stored or refused (``on_store``); a STORE that never reached the robot refuses the
pack (``on_void``) and the person is asked to scan it again.

An ``admission`` (the WWKS2 front door with ``input_mode = "wwks2"``) may have the last
word on each pack: after the machine's own checks and before the pack is queued for its
STORE, it is asked (``admit``, which refuses with ``LoadRefused``), and it hears how the
load ended (``concluded``: the pack stored, or None).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from dispenser.daemon.robot import Completion, Motion, Outcome, Robot, RobotUnavailable
from dispenser.journal import JournalUnavailable
from dispenser.logs import get_logger

log = get_logger(__name__)

__all__ = ["Admission", "HardwareError", "LoadDesk", "LoadRequest"]


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

    async def prepare(self) -> list[Intent]:
        """Check the next load against the robot's input scanner and plan its STORE."""
        if self.storing:
            return []
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
                raise LoadRefused("no_pack_at_input", "no pack lies at the robot's input "
                                  "point; put the scanned pack there and scan it again")
            robot = parse_scan(seen.data)
            if (robot.gtin, robot.batch, robot.serial, robot.expiry) != (
                    scan.gtin, scan.batch, scan.serial, scan.expiry):
                raise LoadRefused("input_mismatch", "the pack at the input point is not the "
                                  "one scanned; take it off and scan the pack you put there")
            # The pack's slot and its STORE intent are committed together.
            with self.d.batch():
                view = self.d.begin_load(req.scan, req.actor)
                assert view.slot is not None
                intent = self.ledger.intent(Motion.STORE, view.slot, 0, 1,
                                            pack_id=view.pack_id)
                self.ledger.log.add([intent], self._now())
        except (DispenserError, HardwareError, JournalUnavailable) as exc:
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

    def on_store(self, intent: Intent, c: Completion, after: After) -> None:
        pid = intent.pack_id
        assert pid is not None
        req = self._store_for.get(pid)
        # Forgotten only once applied: a commit that fails leaves the caller waiting for
        # the completion applied again later.
        after.append(lambda: self._store_for.pop(pid, None))
        ticket = self._tickets.get(pid)
        if ticket is not None:
            after.append(lambda: self._tickets.pop(pid, None))
        self.fast_stores = time.monotonic() - self._store_sent_at < 0.04
        if c.outcome is Outcome.OK:
            view = self.d.confirm_stored(pid)
            self.counters.packs_stored += 1
            after.append(lambda: log.info("stored", pack_id=pid, slot=intent.slot))
            after.append(lambda: self._check_low_stock(view.gtin))
            after.append(functools.partial(self._conclude, ticket, view))
        elif c.outcome is Outcome.DROPPED:
            self.d.confirm_stored(pid)
            view = self.d.record_pack_lost(pid, PackState.DROPPED)
            after.append(functools.partial(self._conclude, ticket, None))
        else:
            text = c.refusal.value if c.refusal is not None else c.outcome.value
            view = self.d.refuse_stored(pid, f"robot: {text}")
            after.append(lambda: log.warning("robot did not store the pack", pack_id=pid,
                                             outcome=c.outcome.name, reason=text))
            after.append(functools.partial(self._conclude, ticket, None))
        if req is not None and not req.future.done():
            after.append(functools.partial(_resolve, req.future, view))

    def on_void(self, intent: Intent) -> None:
        """The STORE never reached the robot: the pack was not stored."""
        if intent.pack_id is None:
            return
        req = self._store_for.get(intent.pack_id)
        with contextlib.suppress(DispenserError):  # already refused or stored
            self.d.refuse_stored(intent.pack_id, "store command never reached the robot")
        self._store_for.pop(intent.pack_id, None)
        self._conclude(self._tickets.pop(intent.pack_id, None), None)
        if req is not None and not req.future.done():
            req.future.set_exception(HardwareError(
                "the robot did not take the STORE command; take the pack off the input "
                "point and scan it again"))
