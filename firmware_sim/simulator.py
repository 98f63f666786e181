"""One simulated machine: robot (Modbus TCP and/or RTU), label printer, control socket.

In-process use (the daemon's ``--simulate`` mode, tests)::

    sim = Simulator(SimulatorOptions(tcp_port=0, instant=True))
    await sim.start()
    port = sim.tcp_port
    ...
    await sim.stop()

Size: just over the line, and one thing: the composition of a simulated machine (robot,
printer, transports, control socket) and what the control socket's verbs act on (status,
the input point, a slot's packs, replacing the board, injecting and clearing faults across
robot, link and printer, saving and loading state). Loading state replaces the robot and
the printer under the running listeners, so persistence stays with the composition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from firmware_sim.codes import Fault
from firmware_sim.control import ControlServer
from firmware_sim.errors import SimulatorError
from firmware_sim.packs import Pack
from firmware_sim.printer import Printer, PrinterPort
from firmware_sim.registers import RobotRegisters
from firmware_sim.robot import SLOT_COUNT, Robot
from firmware_sim.transport import LinkFaults, RtuServer, TcpServer

STATE_VERSION = 1
# Saves after completed batches come at most every SAVE_INTERVAL seconds, and never take
# more than about a tenth of the time (a full storage is a few megabytes of JSON).
SAVE_INTERVAL = 0.2
SAVE_SHARE = 10

ROBOT_FAULTS = ("jam", "slot_short", "slot_empty", "dropped", "estop", "door_open")
LINK_FAULTS = ("link_down", "delay", "corrupt_frame")
PRINTER_FAULTS = ("paper_out", "head_open", "printer_pause")
FAULTS = ROBOT_FAULTS + LINK_FAULTS + PRINTER_FAULTS
_PRINTER_CONDITION = {
    "paper_out": "paper_out",
    "head_open": "head_open",
    "printer_pause": "paused",
}
FAULT_PARAMS: dict[str, frozenset[str]] = {name: frozenset() for name in FAULTS} | {
    "jam": frozenset({"after_picks"}),
    "slot_short": frozenset({"slot", "remove"}),
    "slot_empty": frozenset({"slot"}),
    "link_down": frozenset({"seconds"}),
    "delay": frozenset({"ms"}),
    "corrupt_frame": frozenset({"count", "mode"}),
}


@dataclass
class SimulatorOptions:
    tcp_host: str = "127.0.0.1"
    tcp_port: int | None = 1502  # None: no TCP listener; 0: a free port
    rtu_link: str | None = None
    printer_link: str | None = None
    control_path: str | None = None
    speed: float = 1.0
    instant: bool = False
    state_file: str | None = None
    outputs: int = 4
    device_id: int = 1


class Simulator:
    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        o = self.options
        if not 1 <= o.device_id <= 247:
            raise SimulatorError("device id must be 1..247")
        self.robot = self._new_robot()
        self.registers = RobotRegisters(self.robot)
        self.printer = Printer()
        self.link_faults = LinkFaults()
        self.tcp: TcpServer | None = None
        self.rtu: RtuServer | None = None
        self.printer_port: PrinterPort | None = None
        self.control: Any = None
        self._next_save = 0.0
        self._save_timer: asyncio.TimerHandle | None = None
        self._started = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        o = self.options
        if o.state_file and os.path.exists(o.state_file):
            self._load_file(o.state_file)
            # The power-up completions (ABORTED) must not be given a second time.
            self.save(o.state_file)
        self.robot.start()
        try:
            if o.tcp_port is not None:
                self.tcp = TcpServer(
                    o.tcp_host, o.tcp_port, self.registers, o.device_id, self.link_faults
                )
                await self.tcp.start()
            if o.rtu_link:
                self.rtu = RtuServer(o.rtu_link, self.registers, o.device_id, self.link_faults)
                await self.rtu.start()
            if o.printer_link:
                self.printer_port = PrinterPort(self.printer, o.printer_link)
                await self.printer_port.start()
            if o.control_path:
                self.control = ControlServer(self, o.control_path)
                await self.control.start()
        except BaseException:
            await self.stop()
            raise
        self._started = True

    async def stop(self) -> None:
        """Close every listener (each on its own, so one failure hides no other), then save."""
        for part in (self.control, self.tcp, self.rtu, self.printer_port):
            if part is None:
                continue
            try:
                await part.stop()
            except Exception as exc:  # keep closing the others
                print(
                    f"dispenser-sim: error while closing {type(part).__name__}: {exc}",
                    file=sys.stderr,
                )
        self.control = self.tcp = self.rtu = self.printer_port = None
        await self.robot.stop()
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        if self.options.state_file and self._started:
            self.save(self.options.state_file)
        self._started = False

    # --- addresses ---------------------------------------------------------------------

    @property
    def tcp_port(self) -> int | None:
        return self.tcp.port if self.tcp is not None else None

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return (self.options.tcp_host, self.tcp.port) if self.tcp is not None else None

    @property
    def rtu_link(self) -> str | None:
        return self.options.rtu_link if self.rtu is not None else None

    @property
    def rtu_device(self) -> str | None:
        return self.rtu.device if self.rtu is not None else None

    @property
    def printer_link(self) -> str | None:
        return self.options.printer_link if self.printer_port is not None else None

    @property
    def printer_device(self) -> str | None:
        return self.printer_port.device if self.printer_port is not None else None

    @property
    def control_path(self) -> str | None:
        return self.options.control_path if self.control is not None else None

    def listeners(self) -> list[str]:
        """One line per listener, as printed at startup."""
        lines = []
        if self.tcp is not None:
            lines.append(f"modbus-tcp {self.options.tcp_host}:{self.tcp.port}")
        if self.rtu is not None:
            lines.append(f"modbus-rtu {self.options.rtu_link} -> {self.rtu.device}")
        if self.printer_port is not None:
            lines.append(f"printer {self.options.printer_link} -> {self.printer_port.device}")
        if self.control is not None:
            lines.append(f"control {self.options.control_path}")
        return lines

    # --- ground truth ------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        ledger = self.robot.ledger()
        ledger["labels"] = [dict(label) for label in self.printer.labels]
        ledger["printer"] = self.printer.state()
        return ledger

    def status(self) -> dict[str, Any]:
        r = self.robot
        links: dict[str, Any] = {
            "down": self.link_faults.down(),
            "delay_ms": round(self.link_faults.delay * 1000, 3),
            "corrupt_pending": self.link_faults.corrupt,
        }
        for name, server in (("tcp", self.tcp), ("rtu", self.rtu)):
            if server is not None:
                links[name] = vars(server.counters).copy()
        return {
            "robot": {
                "state": r.machine_state.name,
                "fault": Fault(r.fault_code).name,
                "homed": r.homed,
                "queue_depth": len(r.queue),
                "last_accepted_seq": r.last_accepted_seq,
                "last_completed_seq": r.last_completed_seq,
                "completion_count": r.completion_count,
                "input_count": len(r.input),
                "jam_after": r.jam_after,
                "drop_next": r.drop_next,
                "watchdog_expiries": r.watchdog_expiries,
            },
            "printer": self.printer.state(),
            "links": links,
            "listeners": self.listeners(),
        }

    # --- as staff and technicians would ------------------------------------------------

    def put_input(self, packs: list[dict[str, Any]] | list[Pack]) -> int:
        """Place packs at the input point, in order; returns how many are waiting there."""
        self.robot.put_input([self._pack(p) for p in packs])
        return len(self.robot.input)

    def take_input(self, count: int | None = 1) -> list[Pack]:
        """Take the first ``count`` packs (None: all) off the input point, as a person
        would a refused pack; the ones the scanner reads first come first."""
        if count is not None and count < 1:
            raise SimulatorError("count must be 1 or more")
        return self.robot.take_input(count)

    async def replace_board(self) -> dict[str, Any]:
        """A technician replaces the robot's controller board (the machine is switched
        off for it): storage, totes and the input point stay as they are; the protocol
        memory starts empty (no sequence number accepted, no completion, an empty ring);
        queued commands are lost without a completion; the robot is not homed."""
        running = self.robot.running
        if running:
            await self.robot.stop()
        try:
            state = self.robot.to_state()
            state["robot"].update(last_accepted_seq=0, last_completed_seq=0,
                                  completion_count=0, ring=[0] * len(self.robot.ring),
                                  queue=[], controller_lost=False)
            robot = self._new_robot()
            hook, robot.on_batch_done = robot.on_batch_done, None
            robot.load_state(state)
            robot.on_batch_done = hook
            self.robot = self.registers.robot = robot
        finally:
            if running:
                self.robot.start()
        if self.options.state_file:
            self.save(self.options.state_file)
        return {"last_accepted_seq": 0, "completion_count": 0}

    def put_slot(self, slot: int, packs: list[dict[str, Any]] | list[Pack]) -> int:
        try:
            self.robot.put_slot(slot, [self._pack(p) for p in packs])
        except ValueError as exc:
            raise SimulatorError(str(exc)) from exc
        return len(self.robot.slots.get(slot, ()))

    @staticmethod
    def _pack(p: dict[str, Any] | Pack) -> Pack:
        if isinstance(p, Pack):
            return Pack(p.gtin, p.batch, p.expiry, p.serial)
        try:
            pack = Pack.from_dict(p)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from exc
        pack.pick_seq = None
        return pack

    # --- faults ------------------------------------------------------------------------

    def inject(self, fault: str, **params: Any) -> dict[str, Any]:
        """Make something happen to the machine (see docs/simulator.md for the list)."""
        r = self.robot
        if fault not in FAULT_PARAMS:
            raise SimulatorError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        unknown = set(params) - FAULT_PARAMS[fault]
        if unknown:
            raise SimulatorError(f"{fault}: unknown params {', '.join(sorted(unknown))}")

        def number(name: str, default: float | None = None, minimum: float = 0) -> float:
            value = params.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
                raise SimulatorError(f"{fault}: {name} must be a number >= {minimum}")
            return float(value)

        def slot() -> int:
            value = params.get("slot")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SLOT_COUNT:
                raise SimulatorError(f"{fault}: slot must be 0..{SLOT_COUNT - 1}")
            return value

        if fault == "jam":
            r.jam_after = int(number("after_picks", 0))
        elif fault == "slot_short":
            taken = r.take_from_slot(slot(), int(number("remove", 1, 1)))
            return {"removed": [p.to_dict() for p in taken]}
        elif fault == "slot_empty":
            taken = r.take_from_slot(slot(), None)
            return {"removed": [p.to_dict() for p in taken]}
        elif fault == "dropped":
            r.drop_next = True
        elif fault == "estop":
            r.press_estop()
        elif fault == "door_open":
            r.open_door()
        elif fault == "link_down":
            seconds = number("seconds", None, 0.001)
            self.link_faults.down_until = time.monotonic() + seconds
            if self.tcp is not None:
                self.tcp.link_down(seconds)
        elif fault == "delay":
            self.link_faults.delay = number("ms", None) / 1000
        elif fault == "corrupt_frame":
            mode = params.get("mode", "alternate")
            if mode not in ("alternate", "tid", "length"):
                raise SimulatorError("corrupt_frame: mode is alternate, tid or length")
            self.link_faults.corrupt = int(number("count", 1, 1))
            self.link_faults.corrupted = 0
            self.link_faults.corrupt_mode = mode
        elif fault in _PRINTER_CONDITION:
            self.printer.set_condition(_PRINTER_CONDITION[fault], True)
        else:
            raise SimulatorError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        return {"fault": fault}

    def clear(self, fault: str | None = None) -> dict[str, Any]:
        """Remove a condition as a person at the machine would; None clears all of them.

        The robot stays in FAULT/ESTOP until the controller's RESET, as documented.
        """
        names = list(FAULTS) if fault is None else [fault]
        r = self.robot
        for name in names:
            if name == "jam":
                r.clear_jam()
            elif name == "dropped":
                r.clear_drop()
            elif name == "estop":
                r.release_estop()
            elif name == "door_open":
                r.close_door()
            elif name == "link_down":
                self.link_faults.down_until = 0.0
                if self.tcp is not None:
                    self.tcp.link_up()
            elif name == "delay":
                self.link_faults.delay = 0.0
            elif name == "corrupt_frame":
                self.link_faults.corrupt = 0
            elif name in _PRINTER_CONDITION:
                self.printer.set_condition(_PRINTER_CONDITION[name], False)
            elif name in ("slot_short", "slot_empty"):
                pass  # vanished packs do not come back
            else:
                raise SimulatorError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        return {"cleared": names}

    # --- persistence -------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        state = self.robot.to_state()
        state["version"] = STATE_VERSION
        state["outputs_count"] = self.robot.outputs
        state["printer"] = self.printer.to_state()
        return state

    def save(self, path: str) -> None:
        """Write the state atomically (temp file in the same directory, then rename)."""
        began = time.monotonic()
        data = json.dumps(self.to_state(), separators=(",", ":"))
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".sim-state-", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        now = time.monotonic()
        self._next_save = now + max(SAVE_INTERVAL, SAVE_SHARE * (now - began))

    async def load(self, path: str) -> None:
        """Power-cycle the robot into a saved state (not homed; queued commands ABORTED).

        A file that cannot be loaded changes nothing.
        """
        running = self.robot.running
        if running:
            await self.robot.stop()
        try:
            self._load_file(path)
        finally:
            if running:
                self.robot.start()

    def _new_robot(self) -> Robot:
        o = self.options
        robot = Robot(outputs=o.outputs, speed=o.speed, instant=o.instant)
        if o.state_file:
            robot.on_batch_done = self._batch_done
        return robot

    def _load_file(self, path: str) -> None:
        robot = self._new_robot()
        hook, robot.on_batch_done = robot.on_batch_done, None
        printer = Printer()
        try:
            with open(path) as f:
                state = json.load(f)
            if state.get("version") != STATE_VERSION:
                raise SimulatorError(f"{path}: state version {state.get('version')!r} unknown")
            robot.load_state(state)
            printer.load_state(state.get("printer", {}))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SimulatorError):
                raise
            raise SimulatorError(f"cannot load state from {path}: {exc}") from exc
        robot.on_batch_done = hook
        self.robot = self.registers.robot = robot
        self.printer = printer
        if self.printer_port is not None:
            self.printer_port.printer = printer

    def _batch_done(self) -> None:
        if self._save_timer is not None or not self.options.state_file:
            return
        wait = self._next_save - time.monotonic()
        if wait <= 0:
            self._save_quietly(self.options.state_file)
        else:
            self._save_timer = asyncio.get_running_loop().call_later(wait, self._timed_save)

    def _timed_save(self) -> None:
        self._save_timer = None
        if self.options.state_file:
            self._save_quietly(self.options.state_file)

    def _save_quietly(self, path: str) -> None:
        """Save from inside the robot's executor: a full disk must not stop the robot."""
        try:
            self.save(path)
        except OSError as exc:
            self._next_save = time.monotonic() + 5.0
            print(f"dispenser-sim: cannot save state to {path}: {exc}", file=sys.stderr)
