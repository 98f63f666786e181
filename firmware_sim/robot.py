"""The picking robot: storage, input point, outputs with totes, command queue, faults.

Everything physical happens here (docs/robot-protocol.md §3-§4); the register view of it
is in :mod:`firmware_sim.registers`. A command's effect on packs is applied when its motion
ends, so a motion cut short by an emergency stop moved no pack (the gripper puts back what
it held while the machine is recovered).

States (machine_state is derived, never stored)::

    NOT_HOMED --HOME--> IDLE <--> BUSY (HOMING while HOME runs)
        any --jam/drop/door--> FAULT --cause cleared + RESET--> IDLE
        any --emergency stop--> ESTOP --released + RESET--> NOT_HOMED
        any --watchdog expired--> CONTROLLER_LOST --RESET--> IDLE

Size: one machine with one state. Storage, the input point, the totes, the command queue,
the protocol's non-volatile memory, faults and the watchdog are fields of one ``Robot`` that
every command, fault and RESET reads and changes, and the diagram above is about all of them
at once. Split (the executor, or the ledger and persistence, apart), the same object would
be passed around and hide which fields a motion changes. The register view, the transports
and the packs are already apart (``registers``, ``transport``, ``modbus``, ``packs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_sim.codes import Fault, Invalid, MachineState, ModbusException, Opcode, Result
from firmware_sim.packs import Pack

SIDES = 2
LEVELS = 25
COLUMNS = 200
SLOT_COUNT = SIDES * LEVELS * COLUMNS
SLOT_CAPACITY = 10
TOTE_CAPACITY = 40
QUEUE_CAPACITY = 32
RING_ENTRIES = 64
MAX_BATCH = 15

# Timing of the standard machine in seconds (§4), before division by the speed factor.
MOVE_BASE = 0.4
SPEED_X = 4.0
SPEED_Y = 1.0
GRIP = 0.8
DROP = 0.3
RELEASE_TOTE_TIME = 1.5
SCAN_TIME = 0.5
HOME_TIME = 5.0


@dataclass(slots=True)
class Command:
    seq: int
    opcode: int
    slot: int
    output: int
    count: int
    aborted: bool = False
    batch_end: bool = False

    def to_list(self) -> list[int]:
        return [self.seq, self.opcode, self.slot, self.output, self.count]


@dataclass(slots=True)
class Tote:
    number: int
    packs: list[Pack] = field(default_factory=list)


def slot_position(slot: int) -> tuple[float, float]:
    column = slot % COLUMNS
    level = (slot // COLUMNS) % LEVELS
    return column * 0.10, level * 0.08


def output_position(output: int) -> tuple[float, float]:
    return 0.0, 0.40 * (output - 1)


INPUT_POSITION = (0.0, 0.0)

# Plain ints and names looked up once, for the per-command checks.
_OPCODES = frozenset(int(op) for op in Opcode)
_SLOT_OPCODES = frozenset((int(Opcode.STORE), int(Opcode.PICK), int(Opcode.SCAN_SLOT)))
_OUTPUT_OPCODES = frozenset((int(Opcode.PICK), int(Opcode.RELEASE_TOTE)))
_HOME, _STORE, _PICK = int(Opcode.HOME), int(Opcode.STORE), int(Opcode.PICK)
_RELEASE_TOTE = int(Opcode.RELEASE_TOTE)
_RESULT_NAMES = {result: result.name for result in Result}


def _report_crash(task: asyncio.Task[None]) -> None:
    """A robot task must never end on its own: say so loudly instead of going quiet."""
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        print(f"dispenser-sim: {task.get_name()} crashed: {exc!r}", file=sys.stderr, flush=True)


def _finish_motion(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


def move_time(a: tuple[float, float], b: tuple[float, float]) -> float:
    return MOVE_BASE + max(abs(a[0] - b[0]) / SPEED_X, abs(a[1] - b[1]) / SPEED_Y)


class Robot:
    """Model of the robot. Methods run on the event loop thread only."""

    def __init__(self, outputs: int = 4, speed: float = 1.0, instant: bool = False) -> None:
        if not 1 <= outputs <= 16:
            raise ValueError("outputs must be 1..16 (one bit each in output_full)")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.outputs = outputs
        self.speed = speed
        self.instant = instant
        self.started = time.monotonic()
        # Storage and pack flow.
        self.slots: dict[int, deque[Pack]] = {}
        self.input: deque[Pack] = deque()
        self.totes: dict[int, Tote] = {k: Tote(k) for k in range(1, outputs + 1)}
        self.next_tote = outputs + 1
        self.released: list[dict[str, Any]] = []
        self.dropped: list[Pack] = []
        self.jammed: list[Pack] = []
        self.removed: list[Pack] = []
        # Packs a person took off the input point (a pack the controller refused, say).
        self.taken_off: list[Pack] = []
        # Non-volatile protocol memory (§2.1).
        self.last_accepted_seq = 0
        self.last_completed_seq = 0
        self.completion_count = 0
        self.ring = [0] * (RING_ENTRIES * 8)
        # Machine state.
        self.homed = False
        self.fault = Fault.NONE
        self.controller_lost = False
        self.queue: deque[Command] = deque()
        self.executing: Command | None = None
        self.position = INPUT_POSITION
        # Physical conditions a person has to remove before a RESET helps.
        self.jam_present = False
        self.drop_present = False
        self.estop_pressed = False
        self.door_open = False
        # Injected future faults.
        self.jam_after: int | None = None
        self.drop_next = False
        # Watchdog (§2.2): volatile, a power cycle disarms it.
        self.watchdog_timeout_ms = 0
        self.watchdog_value = 0
        self.watchdog_refreshed = time.monotonic()
        # Times the watchdog expired since the simulator started (volatile, like the
        # watchdog): a test can tell the controller was late even after it reset the robot.
        self.watchdog_expiries = 0
        # Counters for the ledger.
        self.results: dict[str, int] = {r.name: 0 for r in Result}
        self.packs_picked = 0
        self.packs_stored = 0
        self.busy_seconds = 0.0
        self.machine_seconds = 0.0
        # Hooks.
        self.on_batch_done: Callable[[], None] | None = None
        self._wake = asyncio.Event()
        self._motion: asyncio.Future[bool] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._wake.set()
        self._tasks = [
            asyncio.create_task(self._executor(), name="robot-executor"),
            asyncio.create_task(self._watchdog(), name="robot-watchdog"),
        ]
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.executing = None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    # --- derived state -----------------------------------------------------------------

    @property
    def machine_state(self) -> MachineState:
        if self.fault == Fault.ESTOP:
            return MachineState.ESTOP
        if self.fault != Fault.NONE:
            return MachineState.FAULT
        if self.controller_lost:
            return MachineState.CONTROLLER_LOST
        if self.executing is not None and self.executing.opcode == Opcode.HOME:
            return MachineState.HOMING
        if self.queue:
            return MachineState.BUSY
        if not self.homed:
            return MachineState.NOT_HOMED
        return MachineState.IDLE

    @property
    def fault_code(self) -> int:
        if self.fault != Fault.NONE:
            return int(self.fault)
        if self.controller_lost:
            return int(Fault.CONTROLLER_LOST)
        return 0

    def heartbeat(self) -> int:
        return int((time.monotonic() - self.started) * 10) & 0xFFFF

    def output_full_bits(self) -> int:
        bits = 0
        for k, tote in self.totes.items():
            if len(tote.packs) >= TOTE_CAPACITY:
                bits |= 1 << (k - 1)
        return bits

    # --- controller requests (called by the register map) -------------------------------

    def accept(self, commands: list[Command]) -> None:
        """Queue a mailbox write whole or refuse it with a Modbus exception (§2.4)."""
        if self.controller_lost:
            raise ModbusException(ModbusException.DEVICE_BUSY, "controller lost: RESET first")
        previous = self.last_accepted_seq
        for command in commands:
            if command.seq <= previous:
                raise ModbusException(ModbusException.ILLEGAL_VALUE, "sequence not increasing")
            previous = command.seq
        if len(self.queue) + len(commands) > QUEUE_CAPACITY:
            raise ModbusException(ModbusException.DEVICE_BUSY, "queue full")
        commands[-1].batch_end = True
        self.queue.extend(commands)
        self.last_accepted_seq = previous
        self._wake.set()

    def refresh_watchdog(self, value: int) -> None:
        self.watchdog_value = value
        self.watchdog_refreshed = time.monotonic()

    def set_watchdog_timeout(self, ms: int) -> None:
        self.watchdog_timeout_ms = ms
        self.watchdog_refreshed = time.monotonic()

    def reset(self) -> None:
        """RESET (§2.2): refused with exception 04 while a cause is still there."""
        causes = [
            name
            for name, present in (
                ("jam", self.jam_present),
                ("dropped pack", self.drop_present),
                ("emergency stop", self.estop_pressed),
                ("door open", self.door_open),
            )
            if present
        ]
        if causes:
            raise ModbusException(ModbusException.DEVICE_FAILURE, ", ".join(causes))
        self.fault = Fault.NONE
        self.controller_lost = False
        self.watchdog_refreshed = time.monotonic()
        self._wake.set()

    def abort_queue(self) -> None:
        """Mark every queued command not in motion ABORTED; they complete in order."""
        for command in self.queue:
            if command is not self.executing:
                command.aborted = True
        self._wake.set()

    # --- things that happen to the machine ------------------------------------------------

    def press_estop(self) -> None:
        self.estop_pressed = True
        self.fault = Fault.ESTOP
        self.homed = False
        self.abort_queue()
        if self._motion is not None and not self._motion.done():
            self._motion.set_result(True)

    def release_estop(self) -> None:
        self.estop_pressed = False

    def open_door(self) -> None:
        """The motion in progress finishes; nothing further moves until closed + RESET."""
        self.door_open = True
        self._raise_fault(Fault.DOOR_OPEN)

    def close_door(self) -> None:
        self.door_open = False

    def clear_jam(self) -> None:
        self.jam_present = False
        self.jam_after = None

    def clear_drop(self) -> None:
        self.drop_present = False
        self.drop_next = False

    def _raise_fault(self, fault: Fault) -> None:
        """Latch a fault. The first one stays in fault_code (only an emergency stop, which
        press_estop sets, overrides it); RESET checks every cause anyway."""
        if self.fault == Fault.NONE:
            self.fault = fault
        self.abort_queue()

    def _lose_controller(self) -> None:
        self.controller_lost = True
        self.watchdog_expiries += 1
        self.abort_queue()

    # --- input and storage (staff, technicians, injected faults) -------------------------

    def put_input(self, packs: list[Pack]) -> None:
        self.input.extend(packs)

    def take_input(self, count: int | None) -> list[Pack]:
        """A person takes the first ``count`` packs (None: all) off the input point; the
        ledger lists them under ``taken_off``."""
        n = len(self.input) if count is None else min(count, len(self.input))
        taken = [self.input.popleft() for _ in range(n)]
        self.taken_off.extend(taken)
        return taken

    def put_slot(self, slot: int, packs: list[Pack]) -> None:
        """A technician fills a slot by hand: same rules as STORE."""
        if not 0 <= slot < SLOT_COUNT:
            raise ValueError(f"slot {slot} out of range 0..{SLOT_COUNT - 1}")
        content = self.slots.get(slot, deque())
        if len(content) + len(packs) > SLOT_CAPACITY:
            raise ValueError(f"slot {slot} holds at most {SLOT_CAPACITY} packs")
        reference = content[0] if content else (packs[0] if packs else None)
        if reference is not None and any(not p.same_article(reference) for p in packs):
            raise ValueError(f"slot {slot} holds one GTIN and batch only")
        content.extend(packs)
        if content:
            self.slots[slot] = content

    def take_from_slot(self, slot: int, count: int | None) -> list[Pack]:
        content = self.slots.get(slot)
        if not content:
            return []
        n = len(content) if count is None else min(count, len(content))
        taken = [content.popleft() for _ in range(n)]
        if not content:
            del self.slots[slot]
        self.removed.extend(taken)
        return taken

    # --- execution ---------------------------------------------------------------------

    def _blocked(self) -> bool:
        return self.fault != 0 or self.controller_lost

    async def _executor(self) -> None:
        while True:
            while self.queue and self.queue[0].aborted:
                self._complete(self.queue.popleft(), Result.ABORTED, 0)
            if not self.queue or self._blocked():
                self._wake.clear()
                await self._wake.wait()
                continue
            command = self.queue[0]
            self.executing = command
            try:
                result, detail = await self._execute(command)
            finally:
                self.executing = None
            self.queue.popleft()
            self._complete(command, result, detail)
            if self.instant and command.batch_end:
                # Instant motions never suspend the executor: hand the loop back once per
                # mailbox write, so requests are answered between batches.
                await asyncio.sleep(0)

    async def _watchdog(self) -> None:
        while True:
            if self.watchdog_timeout_ms == 0 or self.controller_lost:
                await asyncio.sleep(0.05)
                continue
            left = self.watchdog_refreshed + self.watchdog_timeout_ms / 1000 - time.monotonic()
            if left <= 0:
                self._lose_controller()
            else:
                await asyncio.sleep(left)

    def _complete(self, command: Command, result: Result, detail: int) -> None:
        self.completion_count += 1
        entry = ((self.completion_count - 1) % RING_ENTRIES) * 8
        seq, slot = command.seq, command.slot
        self.ring[entry : entry + 8] = [
            seq >> 16,
            seq & 0xFFFF,
            command.opcode & 0xFFFF,
            int(result),
            detail & 0xFFFF,
            (slot >> 16) & 0xFFFF,
            slot & 0xFFFF,
            command.output & 0xFFFF,
        ]
        self.last_completed_seq = seq
        self.results[_RESULT_NAMES[result]] += 1
        if command.batch_end and self.on_batch_done is not None:
            self.on_batch_done()

    async def _move(self, seconds: float) -> bool:
        """Spend a motion of ``seconds`` (standard machine). True if an e-stop cut it short."""
        self.machine_seconds += seconds
        if self.instant:
            # A motion of no duration: nothing can happen during it.
            return False
        loop = asyncio.get_running_loop()
        wall = seconds / self.speed
        began = loop.time()
        future: asyncio.Future[bool] = loop.create_future()
        handle = loop.call_later(wall, _finish_motion, future)
        self._motion = future
        try:
            return await future
        finally:
            handle.cancel()
            self._motion = None
            self.busy_seconds += loop.time() - began

    def _static_check(self, c: Command) -> Invalid | None:
        op = c.opcode
        if op not in _OPCODES:
            return Invalid.UNKNOWN_OPCODE
        if op in _SLOT_OPCODES and not 0 <= c.slot < SLOT_COUNT:
            return Invalid.SLOT_RANGE
        if op in _OUTPUT_OPCODES and not 1 <= c.output <= self.outputs:
            return Invalid.OUTPUT_RANGE
        if op == _PICK and not 1 <= c.count <= SLOT_CAPACITY:
            return Invalid.COUNT_RANGE
        if op == _STORE and c.count != 1:
            return Invalid.COUNT_RANGE
        if op != _HOME and not self.homed:
            return Invalid.NOT_HOMED
        return None

    async def _execute(self, c: Command) -> tuple[Result, int]:
        reason = self._static_check(c)
        if reason is not None:
            return Result.INVALID, int(reason)
        op = c.opcode
        if op == _PICK:
            return await self._pick(c)
        if op == _HOME:
            if await self._move(HOME_TIME):
                return Result.ESTOP, 0
            self.homed = True
            self.position = INPUT_POSITION
            return Result.OK, 0
        if op == _STORE:
            return await self._store(c)
        if op == _RELEASE_TOTE:
            if await self._move(RELEASE_TOTE_TIME):
                return Result.ESTOP, 0
            tote = self.totes[c.output]
            self.released.append(
                {"tote": tote.number, "output": c.output, "release_seq": c.seq, "packs": tote.packs}
            )
            self.totes[c.output] = Tote(self.next_tote)
            self.next_tote += 1
            return Result.OK, 0
        # SCAN_SLOT
        target = slot_position(c.slot)
        if await self._move(move_time(self.position, target) + SCAN_TIME):
            return Result.ESTOP, 0
        self.position = target
        return Result.OK, len(self.slots.get(c.slot, ()))

    def _store_refusal(self, slot: int) -> Invalid | None:
        if not self.input:
            return Invalid.NO_INPUT_PACK
        content = self.slots.get(slot)
        if content:
            if len(content) >= SLOT_CAPACITY:
                return Invalid.SLOT_FULL
            if not content[0].same_article(self.input[0]):
                return Invalid.MIXED_SLOT
        return None

    async def _store(self, c: Command) -> tuple[Result, int]:
        refusal = self._store_refusal(c.slot)
        if refusal is not None:
            return Result.INVALID, int(refusal)
        target = slot_position(c.slot)
        seconds = move_time(self.position, INPUT_POSITION) + GRIP
        seconds += move_time(INPUT_POSITION, target) + DROP
        if await self._move(seconds):
            return Result.ESTOP, 0
        # The world may have changed during the motion (a slot emptied by hand...).
        refusal = self._store_refusal(c.slot)
        if refusal is not None:
            return Result.INVALID, int(refusal)
        self.slots.setdefault(c.slot, deque()).append(self.input.popleft())
        self.position = target
        self.packs_stored += 1
        return Result.OK, 1

    async def _pick(self, c: Command) -> tuple[Result, int]:
        tote = self.totes[c.output]
        if len(tote.packs) + c.count > TOTE_CAPACITY:
            return Result.OUTPUT_FULL, 0
        source = slot_position(c.slot)
        target = output_position(c.output)
        seconds = move_time(self.position, source) + GRIP * c.count
        seconds += move_time(source, target) + DROP
        if await self._move(seconds):
            return Result.ESTOP, 0
        self.position = target
        content = self.slots.get(c.slot, deque())
        taken = [content.popleft() for _ in range(min(c.count, len(content)))]
        if not content:
            self.slots.pop(c.slot, None)
        for pack in taken:
            pack.pick_seq = c.seq
        self.packs_picked += len(taken)
        jam = False
        if self.jam_after is not None:
            if self.jam_after == 0:
                jam, self.jam_after = True, None
            else:
                self.jam_after -= 1
        if jam:
            self.jammed.extend(taken[-1:])
            tote.packs.extend(taken[:-1])
            self.jam_present = True
            self._raise_fault(Fault.JAM)
            return Result.JAM, max(len(taken) - 1, 0)
        if self.drop_next and taken:
            self.drop_next = False
            self.dropped.append(taken[-1])
            tote.packs.extend(taken[:-1])
            self.drop_present = True
            self._raise_fault(Fault.DROPPED)
            return Result.DROPPED, len(taken) - 1
        tote.packs.extend(taken)
        if len(taken) < c.count:
            return Result.SLOT_EMPTY, len(taken)
        return Result.OK, len(taken)

    # --- ledger and persistence ----------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "slots": {str(s): [p.to_dict() for p in self.slots[s]] for s in sorted(self.slots)},
            "input": [p.to_dict() for p in self.input],
            "outputs": {
                str(k): {"tote": t.number, "packs": [p.to_dict() for p in t.packs]}
                for k, t in sorted(self.totes.items())
            },
            "totes": [{**r, "packs": [p.to_dict() for p in r["packs"]]} for r in self.released],
            "dropped": [p.to_dict() for p in self.dropped],
            "jammed": [p.to_dict() for p in self.jammed],
            "removed": [p.to_dict() for p in self.removed],
            "taken_off": [p.to_dict() for p in self.taken_off],
            "robot": {
                "state": self.machine_state.name,
                "fault": Fault(self.fault_code).name,
                "homed": self.homed,
                "door_open": self.door_open,
                "estop_pressed": self.estop_pressed,
                "jam_present": self.jam_present,
                "drop_present": self.drop_present,
                "last_accepted_seq": self.last_accepted_seq,
                "last_completed_seq": self.last_completed_seq,
                "completion_count": self.completion_count,
                "executing_seq": self.executing.seq if self.executing else 0,
                "queue": [c.seq for c in self.queue],
                "watchdog_timeout_ms": self.watchdog_timeout_ms,
                "watchdog_expiries": self.watchdog_expiries,
                "results": dict(self.results),
                "packs_picked": self.packs_picked,
                "packs_stored": self.packs_stored,
                "busy_seconds": round(self.busy_seconds, 6),
                "machine_seconds": round(self.machine_seconds, 6),
                "elapsed_seconds": round(now - self.started, 6),
                "speed": self.speed,
                "instant": self.instant,
            },
        }

    def to_state(self) -> dict[str, Any]:
        """Everything a power cycle keeps (storage, totes, sequences, ring, conditions)."""
        state = self.ledger()
        state["robot"] = {
            "last_accepted_seq": self.last_accepted_seq,
            "last_completed_seq": self.last_completed_seq,
            "completion_count": self.completion_count,
            "ring": list(self.ring),
            "queue": [c.to_list() for c in self.queue],
            "fault": int(self.fault),
            "controller_lost": self.controller_lost,
            "jam_present": self.jam_present,
            "drop_present": self.drop_present,
            "estop_pressed": self.estop_pressed,
            "door_open": self.door_open,
            "next_tote": self.next_tote,
            "results": dict(self.results),
            "packs_picked": self.packs_picked,
            "packs_stored": self.packs_stored,
        }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Power up with a saved state: not homed; what was queued completes ABORTED."""

        def packs(items: list[Any]) -> list[Pack]:
            return [Pack.from_dict(p) for p in items]

        robot = state["robot"]
        self.slots = {int(s): deque(packs(v)) for s, v in state["slots"].items() if v}
        self.input = deque(packs(state["input"]))
        self.totes = {
            int(k): Tote(int(v["tote"]), packs(v["packs"])) for k, v in state["outputs"].items()
        }
        for k in range(1, self.outputs + 1):
            if k not in self.totes:
                self.totes[k] = Tote(self.next_tote)
                self.next_tote += 1
        self.released = [{**r, "packs": packs(r["packs"])} for r in state["totes"]]
        self.dropped = packs(state["dropped"])
        self.jammed = packs(state.get("jammed", []))
        self.removed = packs(state["removed"])
        self.taken_off = packs(state.get("taken_off", []))
        self.last_accepted_seq = int(robot["last_accepted_seq"])
        self.last_completed_seq = int(robot["last_completed_seq"])
        self.completion_count = int(robot["completion_count"])
        ring = [int(v) & 0xFFFF for v in robot["ring"]]
        if len(ring) != RING_ENTRIES * 8:
            raise ValueError("state file: completion ring has the wrong size")
        self.ring = ring
        self.fault = Fault(int(robot["fault"]))
        self.controller_lost = bool(robot["controller_lost"])
        self.jam_present = bool(robot["jam_present"])
        self.drop_present = bool(robot["drop_present"])
        self.estop_pressed = bool(robot["estop_pressed"])
        self.door_open = bool(robot["door_open"])
        self.next_tote = max(int(robot["next_tote"]), *(t.number + 1 for t in self.totes.values()))
        self.results.update({k: int(v) for k, v in robot.get("results", {}).items()})
        self.packs_picked = int(robot.get("packs_picked", 0))
        self.packs_stored = int(robot.get("packs_stored", 0))
        self.homed = False
        self.position = INPUT_POSITION
        self.watchdog_timeout_ms = 0
        self.queue = deque()
        self.executing = None
        for seq, opcode, slot, output, count in robot["queue"]:
            self._complete(Command(seq, opcode, slot, output, count), Result.ABORTED, 0)
        self._wake.set()
