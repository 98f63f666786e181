"""The composition root of dispenserd: builds every part and runs them until stopped.

Start order: journal (with the daemon's migrations) -> dispensary -> robot and printer
clients -> controller machine -> scheduler and print desk -> API server and, with
``[wwks2] enabled``, the WWKS2 server (READY is sent to systemd once they listen) ->
working loops. Stop order (SIGTERM, SIGINT): STOPPING -> no new commands, the robot's
queue is aborted and the motion in progress finishes, every completion is applied (output
tasks that end are reported to WWKS2 clients) -> printing stops -> WWKS2 server closed ->
API closed -> links closed -> journal closed. Each step of the shutdown runs on its own so
one failure hides no other.

Size: the composition root (building every part, running them, the ordered shutdown) and
the daemon-wide answers that need several parts at once: the audit of API calls (the hook,
rows held while the journal takes no writes, refusal summaries, the audit-mismatch fault)
and the status replies (``machine.status``, ``diag.stats``: the scheduler, the print desk,
the WWKS2 server, the journal and the robot's traffic). Both could be modules of their own,
given the parts they read; not yet done because the API methods call them on the ``Daemon``
they are registered with (``write_api_audit``, ``mark_audited``, ``machine_status``,
``stats``), so moving them changes the method modules too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispenser import sdnotify
from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.api.server import ApiServer, ApiStartError, Caller, MethodRegistry, Outcome
from dispenser.config import Config, missing_file
from dispenser.core import Dispensary
from dispenser.core.errors import DispenserError
from dispenser.core.formulary import Formulary, FormularyError
from dispenser.core.states import OrderState
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import OrderView
from dispenser.daemon import labels
from dispenser.daemon.auditkey import load_audit_key, log_audit_key
from dispenser.daemon.commit import GroupCommit
from dispenser.daemon.controller import ControllerMachine, ControllerState
from dispenser.daemon.faults import FaultRecord
from dispenser.daemon.holdcounts import HOLD_COUNT_MIGRATIONS
from dispenser.daemon.looplag import LoopLag
from dispenser.daemon.methods import audit_summary, outcome_dict, register_methods
from dispenser.daemon.metrics import Metrics, MetricsServer, MetricsStartError
from dispenser.daemon.modbus_robot import ModbusRobot
from dispenser.daemon.printdesk import PrintDesk, reason_names
from dispenser.daemon.robot import Robot
from dispenser.daemon.scheduler import Scheduler
from dispenser.daemon.schema import DAEMON_MIGRATIONS
from dispenser.daemon.statecounts import STATE_COUNT_MIGRATIONS, state_counts
from dispenser.daemon.wwks2_articles import WWKS2_MIGRATIONS
from dispenser.daemon.wwks2_backend import DaemonWwks2Backend
from dispenser.data import demo_formulary
from dispenser.journal import (
    Journal,
    JournalError,
    JournalUnavailable,
    VerifyResult,
    verify_journal,
)
from dispenser.journal.audit import MISMATCH, MISMATCH_ACKNOWLEDGED
from dispenser.journal.health import open_problem
from dispenser.logs import get_logger
from dispenser.wwks2.server import Wwks2Server
from drivers.printer.client import Printer

log = get_logger(__name__)

VERSION = "0.1.0"
# Calls refused to callers without a role are summarized in the audit trail this often:
# one row per peer, with counts by method and reason (never the calls' params).
REFUSAL_SUMMARY_S = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_formulary(path: Path | None) -> Formulary:
    """The configured formulary, or without one the demo formulary shipped with the
    package. A missing file raises ``FormularyError`` naming the key and the folder."""
    if path is None:
        with demo_formulary() as demo:
            return Formulary.load(demo)
    try:
        return Formulary.load(path)
    except FileNotFoundError:
        raise FormularyError(missing_file("formulary.path", path)) from None


class Daemon:
    """dispenserd. ``simulator`` is an already started in-process simulator (``--simulate``)
    whose robot and printer the configuration points at."""

    def __init__(self, config: Config, *, simulator: Any = None,
                 extra_tasks: list[Callable[[Daemon], Coroutine[Any, Any, None]]] | None = None,
                 clock: Callable[[], datetime] = utc_now, new_audit_key: bool = False) -> None:
        self.config = config
        self.simulator = simulator
        self.extra_tasks = extra_tasks or []
        self.clock = clock
        self.started = time.monotonic()
        self._audited: set[int] = set()
        self._stop = asyncio.Event()
        self.exit_code = 0

        path = Path(config.journal.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(open_problem(str(path), exc)) from None
        # One journal, one daemon (the lock), opened with the audit key: its tail is
        # checked against the checkpoint before anything is written.
        key, source = load_audit_key(config.journal)
        self.journal = Journal(path, extra_migrations=[*DAEMON_MIGRATIONS,
                                                       *STATE_COUNT_MIGRATIONS,
                                                       *HOLD_COUNT_MIGRATIONS,
                                                       *WWKS2_MIGRATIONS],
                               exclusive=True, audit_key=key, new_audit_key=new_audit_key)
        log_audit_key(key, source)
        try:
            self._build(config)
        except BaseException:
            self.journal.close()
            raise

    def _build(self, config: Config) -> None:
        clock = self.clock
        limit = os.environ.get("DISPENSERD_JOURNAL_MAX_PAGES")
        if limit:
            # Tests only: a journal that fills up without a small filesystem.
            log.warning("journal size capped for a test", max_pages=int(limit))
            self.journal.conn.execute(f"PRAGMA max_page_count = {int(limit)}")
        self._held_audit: list[tuple[str, str, str, str, str, dict[str, Any]]] = []
        self.formulary = load_formulary(config.formulary.path)
        s = config.stock
        self.geometry = SlotGeometry(s.sides, s.levels, s.columns, s.slot_capacity)
        # The checks' indexes are built by a task once the daemon runs (``_warm_indexes``):
        # a journal of a million dispensing records takes seconds to read, and until then
        # the checks ask the journal.
        self.dispensary = Dispensary(self.journal, self.formulary, config.policy,
                                     self.geometry, clock,
                                     {i.code: i.name for i in config.institutions},
                                     warm_indexes=False)
        self.robot: Robot = ModbusRobot.from_config(config.robot)
        p = config.printer
        self.printer = Printer.serial(p.url, baudrate=p.baudrate, timeout_s=p.timeout_s)
        self.machine = ControllerMachine(
            on_listener_error=lambda exc: log.error("machine listener failed", error=str(exc)))
        self.machine.add_listener(self._on_machine_change)
        self.registry = MethodRegistry()
        self.server = ApiServer(config.api, self.registry, on_mutating_call=self._audit_hook)
        self.desk = PrintDesk(self.printer, self.formulary, self.dispensary.get_shipment,
                              on_printed=self._on_printed, on_waiting=self._on_print_waiting,
                              on_starting=self._on_print_starting)
        self.scheduler = Scheduler(
            robot=self.robot, dispensary=self.dispensary,
            machine=self.machine, desk=self.desk, config=config.robot, publish=self.publish,
            clock=clock, low_stock_packs=config.stock.low_stock_packs)
        self.commit = GroupCommit(self.dispensary)
        # The WWKS2 front door: pharmacy software drives output tasks (docs/wwks2.md).
        self.wwks2: Wwks2Server | None = None
        self.wwks2_backend: DaemonWwks2Backend | None = None
        if config.wwks2.enabled:
            self.wwks2_backend = DaemonWwks2Backend(
                config=config.wwks2, dispensary=self.dispensary, scheduler=self.scheduler,
                commit=self.commit, machine=self.machine, desk=self.desk,
                formulary=self.formulary, policy=config.policy, clock=clock)
            self.wwks2 = Wwks2Server(config.wwks2, self.wwks2_backend)
            self.wwks2_backend.events = self.wwks2
        register_methods(self.registry, self)
        self.loop_lag = LoopLag()
        self.metrics_server: MetricsServer | None = None
        address = config.metrics.address
        if address is not None:  # off unless configured: then nothing is observed
            metrics = Metrics(self, config.metrics, VERSION)
            self.server.on_request = metrics.on_request
            self.journal.on_commit.append(metrics.on_commit)
            self.loop_lag.on_sample = metrics.on_loop_lag
            self.metrics_server = MetricsServer(metrics, *address)
        if config.policy.audit_mismatch == "continue":
            self.scheduler.faults.nonstop_kinds = frozenset({"audit"})
        self.journal.on_unavailable.append(self._journal_unavailable)
        self.journal.on_available.append(self._journal_available)
        if self.journal.tail_findings:
            self._audit_mismatch()

    # ------------------------------------------------------------------ journal & audit
    def _journal_unavailable(self, exc: JournalUnavailable) -> None:
        sdnotify.status(f"journal unavailable: {exc.message}")
        self.scheduler.journal_failed(exc)

    def _journal_available(self) -> None:
        sdnotify.status(f"machine {self.machine.state.value}")
        with contextlib.suppress(RuntimeError):  # no loop: nothing held to write
            asyncio.get_running_loop().call_soon(self._write_held_audit)
        self.scheduler.wake()

    def _audit_mismatch(self) -> None:
        """The chain's end does not match its checkpoint: recorded in the chain itself (so
        ``audit.verify`` reports it until acknowledged, and the checkpoint may follow the
        journal again) and as a latched ``audit`` fault (it stops picking unless the
        policy says continue)."""
        findings = [f.as_dict() for f in self.journal.tail_findings]
        with self.journal.transaction():
            self.journal.audit(self.clock().isoformat(), "dispenserd", "system", MISMATCH,
                               "audit", None, {"findings": findings})
        self.journal.release_checkpoint()
        first = self.journal.tail_findings[0]
        self.scheduler.faults.raise_fault(
            "audit", f"the audit trail does not match its checkpoint ({first.message}); "
            "check it with `dispenserctl audit verify`, then acknowledge this fault",
            {"findings": findings})

    def fault_acknowledged(self, record: FaultRecord) -> None:
        """After ``fault.ack`` of an audit mismatch: recorded in the chain, after which
        ``audit.verify`` no longer reports what the start-up check found (the rows about
        it stay in the trail)."""
        if record.kind == "audit":
            with self.journal.transaction():
                self.journal.audit(self.clock().isoformat(), record.acked_by or "dispenserd",
                                   record.acked_role or "system", MISMATCH_ACKNOWLEDGED,
                                   "audit", None, {"fault_id": record.fault_id,
                                                   "note": record.note})

    async def verify_audit(self) -> VerifyResult:
        """The whole chain and the checkpoint, on a thread with its own connection (a long
        chain takes seconds: not on the event loop)."""
        key = self.journal.key
        path = self.journal.path
        return await asyncio.to_thread(verify_journal, path, key)

    def journal_status(self) -> dict[str, Any]:
        problem = self.journal.unavailable
        return {"writable": problem is None,
                "problem": None if problem is None else problem.as_dict(),
                "held_faults": len(self.scheduler.faults.log.held),
                "held_audit_rows": len(self._held_audit),
                "checkpoint_held": self.journal.checkpoint_held}

    def _write_held_audit(self) -> None:
        if not self._held_audit:
            return
        rows, self._held_audit = self._held_audit, []
        try:
            with self.journal.transaction():
                self.journal.audit_many([(t, a, r, act, sub, None, after)
                                         for t, a, r, act, sub, after in rows])
        except JournalUnavailable:
            self._held_audit = rows + self._held_audit

    # ------------------------------------------------------------------ events & audit
    def publish(self, event: dict[str, Any]) -> None:
        self.server.publish(event)

    def order_event(self, view: OrderView) -> None:
        if view.state is OrderState.HELD:  # the reasons' codes, never the order's content
            log.info("order held", order_id=view.order_id,
                     holds=sorted({h.code for h in view.holds}))
        self.publish({"topic": "order", "order_id": view.order_id, "state": view.state.value,
                      "shipment_id": view.shipment_id, "at": self.clock().isoformat()})

    def _on_machine_change(self, before: ControllerState, after: ControllerState,
                           trigger: str) -> None:
        if before is after:
            return
        log.info("machine state", state=after.value, previous=before.value, trigger=trigger)
        sdnotify.status(f"machine {after.value}")
        self.publish({"topic": "machine", "state": after.value, "previous": before.value,
                      "at": self.clock().isoformat()})

    def _on_printed(self, shipment_id: str) -> None:
        self.scheduler.on_printed(shipment_id)

    def _on_print_starting(self, shipment_id: str) -> None:
        self.scheduler.on_print_starting(shipment_id)

    def _on_print_waiting(self, shipment_id: str, reasons: list[str]) -> None:
        self.publish({"topic": "shipment", "shipment_id": shipment_id, "state": "labelling",
                      "waiting_for": "printer", "reasons": reasons,
                      "at": self.clock().isoformat()})

    def mark_audited(self, caller: Caller) -> None:
        self._audited.add(id(caller))

    def _api_audit_row(self, caller: Caller, method: str, params: dict[str, Any], ok: bool,
                       error: ApiError | None) -> tuple[str, str, str, str, str,
                                                        dict[str, Any]]:
        subject, safe = audit_summary(method, params)
        return (self.clock().isoformat(),
                caller.principal or f"connection:{caller.connection_id}",
                caller.role or "none", "api." + method, subject,
                {"params": safe, "outcome": outcome_dict(ok, error)})

    def write_api_audit(self, caller: Caller, method: str, params: dict[str, Any], ok: bool,
                        error: ApiError | None) -> None:
        time_, actor, role, action, subject, after = self._api_audit_row(
            caller, method, params, ok, error)
        self.journal.audit(time_, actor, role, action, subject, None, after)

    async def write_refusal_summaries(self) -> None:
        """One audit row per peer whose calls were refused for want of a role since the
        last summary (``api.refused_without_role``: peer, window, counts)."""
        windows = self.server.refusals.take_window()
        if not windows:
            return

        def write() -> None:
            at = self.clock().isoformat()
            for w in windows:
                self.journal.audit(at, w.peer, "none", "api.refused_without_role", w.peer,
                                   None, {"from": w.started.isoformat(),
                                          "to": w.ended.isoformat(), "calls": w.calls,
                                          "refused": w.refused})

        await self.commit.run(write)

    async def _summarize_refusals(self) -> None:
        while True:
            await asyncio.sleep(REFUSAL_SUMMARY_S)
            try:
                await self.write_refusal_summaries()
            except Exception:
                log.exception("refusal summary not written")

    async def _audit_hook(self, caller: Caller, method: str, params: dict[str, Any],
                          outcome: Outcome) -> None:
        if outcome.error is not None and outcome.error.code == ErrorCode.JOURNAL_UNAVAILABLE:
            self._audited.discard(id(caller))
            return  # refused because nothing can be written: it changed nothing
        if id(caller) in self._audited:
            self._audited.discard(id(caller))
            if outcome.ok or outcome.error is None or int(outcome.error.code) not in (
                    -32005, -32007, -32602):
                return
        row = self._api_audit_row(caller, method, params, outcome.ok, outcome.error)
        try:
            await self.commit.run(lambda: self.journal.audit(*row[:5], None, row[5]))
        except JournalUnavailable:
            # The call was answered already (the journal failed in between): its row is
            # kept in memory and written as soon as the journal takes writes again.
            self._held_audit.append(row)

    # ------------------------------------------------------------------ queries for the API
    def order_body(self, order_id: str) -> dict[str, Any] | None:
        """The order as submitted (patient, prescription, delivery) for ``order.get``.

        Patient data: for the API reply only, never for logs."""
        try:
            return self.dispensary.order_body(order_id)
        except (DispenserError, TypeError, LookupError):
            return None

    def note_pause(self, by: str, reason: str) -> None:
        """Who paused the machine and why, for ``machine.status``: kept in the journal with
        the pause (``MachineMode``) until the machine is resumed."""
        self.scheduler.mode.note_pause(by, reason)

    def held_orders(self) -> dict[str, int]:
        """Held orders by the kind of hold: ``checks`` (waiting for a pharmacist) and
        ``stock_short`` (waiting for stock). Reads only the held rows (``orders_state``
        index), not the whole table."""
        counts = {"checks": 0, "stock_short": 0}
        # instr() first: it spares parsing the JSON of the holds that cannot match.
        for short, n in self.journal.query(
                "SELECT instr(holds, 'stock_short') > 0 AND EXISTS (SELECT 1 FROM "
                "json_each(holds) WHERE json_extract(value, '$.code') = 'stock_short'), "
                "count(*) FROM orders WHERE state = 'held' GROUP BY 1"):
            counts["stock_short" if short else "checks"] = int(n)
        return counts

    def info(self) -> dict[str, Any]:
        st = self.scheduler.status
        g = self.geometry
        return {
            "version": VERSION, "robot_protocol": st.protocol_version if st else None,
            "robot_firmware": (f"{st.firmware_version >> 8}.{st.firmware_version & 0xFF}"
                               if st else None),
            "outputs": self.scheduler.outputs, "slots": g.slots, "slot_capacity": g.capacity,
            "tote_capacity": st.tote_capacity if st else None,
            "simulated": self.simulator is not None,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "machine_state": self.machine.state.value,
        }

    async def printer_status(self) -> dict[str, Any]:
        status = await self.printer.status()
        return {"ready": status.ready, "reasons": reason_names(status.reasons),
                "formats_in_buffer": status.formats_in_buffer}

    async def print_test_label(self) -> tuple[bool, list[str]]:
        outcome = await self.printer.print_label(labels.selftest_label())
        return outcome.printed, reason_names(outcome.reasons)

    async def machine_status(self) -> dict[str, Any]:
        sched = self.scheduler
        st = sched.status
        robot: dict[str, Any] = {"link": "up" if sched.link_up else "down"}
        if st is not None:
            robot.update({
                "machine_state": st.mode.name, "fault_code": st.fault.name,
                "homed": st.homed, "door_open": st.door_open,
                "queue_depth": st.queue_depth, "queue_capacity": st.queue_capacity,
                "last_accepted_seq": st.last_accepted_seq,
                "last_completed_seq": st.last_completed_seq,
                "completion_count": st.completion_count,
                "output_full": sorted(st.output_full), "input_count": st.input_count,
            })
        counts = state_counts(self.journal)  # kept by triggers: no scan of every order
        active = sched.faults.log.page(active=True, limit=10)
        busy = sched.totes.outputs_in_use()
        tasks = sched.totes.tasks.outputs_in_use()
        status = {
            "state": self.machine.state.value,
            "pause": sched.mode.pause_info,
            "fault": active[0].as_dict() if active else None,
            "active_faults": [f.fault_id for f in active],
            "journal": self.journal_status(),
            "robot": robot,
            "printer": {"waiting": self.desk.pending, "reasons": self.desk.waiting_reasons},
            "outputs": [{"output": k, "shipment_id": busy.get(k), "task_id": tasks.get(k)}
                        for k in range(1, sched.outputs + 1)],
            "loads_waiting": len(sched.loading.loads),
            "stock": self.dispensary.stock_counts().as_dict(),
            "input_blocked": sched.loading.input_blocked,
            "robot_adoption": sched.adoption_status(),
            **counts,
            "held_orders": self.held_orders(),
        }
        if self.wwks2 is not None:
            status["wwks2"] = self.wwks2_status()
        return status

    def wwks2_status(self) -> dict[str, Any]:
        """The WWKS2 front door: where it listens, who is connected, message counters."""
        assert self.wwks2 is not None
        snap = self.wwks2.snapshot()
        return {
            "address": f"{self.config.wwks2.host}:{self.wwks2.port}",
            "subscriber_id": self.config.wwks2.subscriber_id,
            "clients": [{"subscriber_id": c.subscriber_id, "peer": c.peer}
                        for c in self.wwks2.clients()],
            "messages_in": snap["messages_in"], "messages_out": snap["messages_out"],
            "unprocessed": snap["unprocessed"], "refused": snap["refused"],
        }

    def stats(self) -> dict[str, Any]:
        s = self.robot.traffic()
        p50, p99 = s.get("latency_p50_s"), s.get("latency_p99_s")
        c = self.scheduler.counters
        sched_tasks = self.scheduler.totes.tasks
        return {
            "transactions": s["transactions"], "errors": s["errors"],
            "reconnects": s["reconnects"],
            "latency_ms": {"p50": None if p50 is None else round(p50 * 1000, 3),
                           "p99": None if p99 is None else round(p99 * 1000, 3),
                           "samples": s.get("latency_samples")},
            "commands_sent": c.commands_sent, "writes": c.writes,
            "completions_applied": c.completions_applied, "results": c.results,
            "packs_picked": c.packs_picked, "packs_stored": c.packs_stored,
            "shipments_completed": c.shipments_completed, "link_downs": c.link_downs,
            "group_commit": {"batches": self.commit.batches, "calls": self.commit.calls,
                             "largest": self.commit.largest},
            "api": self.server.stats(),
            "loop": self.loop_lag.snapshot(),
            "tasks": {**state_counts(self.journal)["tasks"],
                      "finished_since_start": sched_tasks.tasks_finished},
            **({"wwks2": self.wwks2.snapshot()} if self.wwks2 is not None else {}),
        }

    # ------------------------------------------------------------------ running
    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping: finishing the motion in progress")
            sdnotify.stopping()
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.server.start()
        if self.metrics_server is not None:
            try:
                await self.metrics_server.start()
            except MetricsStartError:
                await self.server.stop()
                raise
            log.info("metrics listening", url=f"http://{self.metrics_server.address}/metrics")
        if self.wwks2 is not None:
            try:
                await self.wwks2.start()
            except OSError as exc:
                await self._stop_metrics()
                await self.server.stop()
                w = self.config.wwks2
                raise ApiStartError(f"cannot listen for WWKS2 on {w.host}:{w.port}: "
                                    f"{exc.strerror or exc}") from None
        sdnotify.ready()
        sdnotify.status(f"machine {self.machine.state.value}")
        log.info("dispenserd ready", api=self.server.addresses, robot=self.robot.peer,
                 simulated=self.simulator is not None)
        tasks = [asyncio.create_task(self.scheduler.run(), name="scheduler"),
                 asyncio.create_task(self.desk.run(), name="printdesk")]
        extra = [asyncio.create_task(fn(self), name="extra") for fn in self.extra_tasks]
        extra.append(asyncio.create_task(self._summarize_refusals(), name="refusals"))
        extra.append(asyncio.create_task(self._warm_indexes(), name="indexes"))
        extra.append(asyncio.create_task(self.loop_lag.run(), name="loop-lag"))
        if self.wwks2_backend is not None:
            extra.append(asyncio.create_task(self.wwks2_backend.pump_stock_changes(),
                                             name="wwks2-stock"))
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([*tasks, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stop_wait and t.exception() is not None:
                log.error("a working loop failed; stopping", task=t.get_name(),
                          error=repr(t.exception()))
                self.exit_code = 1
        await self.shutdown(tasks, extra, stop_wait)
        return self.exit_code

    async def _warm_indexes(self) -> None:
        """Build the checks' indexes a few thousand journal rows at a time, giving the
        loop back between steps (each step stays well under the loop's 50 ms)."""
        began, steps = time.monotonic(), 0
        d = self.dispensary
        while not d.warm_indexes():
            steps += 1
            await asyncio.sleep(0)
        log.info("check indexes built", steps=steps, seconds=round(time.monotonic() - began, 2),
                 prescriptions=len(d.prescriptions.index), patients_with_supply=len(d.supplies))

    async def shutdown(self, tasks: list[asyncio.Task[None]], extra: list[asyncio.Task[None]],
                       stop_wait: asyncio.Task[Any]) -> None:
        if self.machine.may("stop"):
            self.machine.fire("stop")
        for t in extra:
            t.cancel()
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("scheduler", lambda: self._stop_scheduler(tasks[0])),
            ("printdesk", lambda: self._stop_desk(tasks[1])),
            ("wwks2", self._stop_wwks2),
            ("metrics", self._stop_metrics),
            ("api", self.server.stop),
            ("refusal summary", self.write_refusal_summaries),
            ("robot", self.robot.close),
            ("printer", self.printer.close),
        ]
        if self.simulator is not None:
            steps.append(("simulator", self.simulator.stop))
        for name, step in steps:
            try:
                async with asyncio.timeout(40):
                    await step()
            except Exception as exc:
                log.error("shutdown step failed", step=name, error=repr(exc))
        stop_wait.cancel()
        for t in extra:
            with contextlib.suppress(BaseException):
                await t
        if self.scheduler.faults.log.held or self._held_audit:
            # The journal never came back: say what it could not keep (the robot's ring
            # still holds the completions; they are applied at the next start).
            log.error("stopped with records the journal could not take",
                      faults=[f.kind for f in self.scheduler.faults.log.held],
                      audit_rows=[r[3] for r in self._held_audit])
        self.journal.close()
        log.info("dispenserd stopped")

    async def _stop_metrics(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.stop()

    async def _stop_scheduler(self, task: asyncio.Task[None]) -> None:
        self.scheduler.stop()
        if not task.done():
            await task

    async def _stop_wwks2(self) -> None:
        if self.wwks2_backend is not None:
            await self.wwks2_backend.stop()
        if self.wwks2 is not None:
            await self.wwks2.stop()

    async def _stop_desk(self, task: asyncio.Task[None]) -> None:
        self.desk.stop()
        if not task.done():
            try:
                async with asyncio.timeout(10):
                    await task
            except TimeoutError:
                task.cancel()


__all__ = ["Daemon", "load_formulary", "utc_now"]
