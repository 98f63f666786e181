"""Prometheus metrics: ``[metrics] listen = "127.0.0.1:9468"`` serves ``/metrics``.

The metrics are built with the official client library (``prometheus_client``) and served
by a small HTTP server on the daemon's own event loop, so everything a scrape reads is read
on the loop that changes it: no lock, no copy, no thread. A scrape reads counters the
daemon keeps anyway (the scheduler's, the driver's, the print desk's), the
``state_counts`` and ``hold_counts`` tables (kept by triggers), the small ``faults`` table
and the live packs in memory: no scan of the journal's history, about 10 ms at a full
machine (bench/bench_metrics.py; ``dispenser_metrics_collect_seconds`` says how long the
last one took).
Two histograms are observed as things happen: API calls (by method) and journal commits.

No label carries patient data: labels are states, reason codes, method names, fault kinds
and error kinds, all from fixed sets (a method the API does not know is ``unknown``).
Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from dispenser.api.protocol import ErrorCode
from dispenser.config import MetricsConfig
from dispenser.core.checks import (
    DUPLICATE_DISPENSING,
    DUPLICATE_PRESCRIPTION,
    NOT_ELIGIBLE,
    PRESCRIPTION_EXPIRED,
    QUANTITY_LIMIT,
    STOCK_SHORT,
)
from dispenser.core.states import OrderState, PackState, ShipmentState
from dispenser.daemon.controller import ControllerState
from dispenser.daemon.holdcounts import hold_counts
from dispenser.daemon.robot import Motion, Outcome
from dispenser.daemon.statecounts import state_counts
from dispenser.logs import get_logger

if TYPE_CHECKING:
    from dispenser.daemon.app import Daemon

__all__ = ["Metrics", "MetricsServer", "MetricsStartError", "outcome_label"]

log = get_logger(__name__)

HOLD_CODES = (NOT_ELIGIBLE, PRESCRIPTION_EXPIRED, DUPLICATE_DISPENSING,
              DUPLICATE_PRESCRIPTION, QUANTITY_LIMIT, STOCK_SHORT)
MACHINE_PACK_STATES = (PackState.LOADING, PackState.IN_STOCK, PackState.PICKED,
                       PackState.QUARANTINED)
# API calls take from tens of microseconds (a status read) to seconds (a load waiting for
# the robot's STORE); journal commits from about a millisecond (fsync) up.
API_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
               5.0, 10.0, 30.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# The loop's steps are meant to stay under ~50 ms; the watchdog of the robot expires at 2 s.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# A scrape's request head is small; anything larger or slower is not a scraper.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 16


class MetricsStartError(Exception):
    """The metrics endpoint cannot listen (address in use, not permitted)."""


def outcome_label(error_code: int | None) -> str:
    """``ok``, or the API error's name (``invalid_params``, ``forbidden``, ...)."""
    if error_code is None:
        return "ok"
    try:
        return ErrorCode(error_code).name.lower()
    except ValueError:
        return "error"


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class Metrics:
    """The daemon's metrics registry: three observed histograms and the API counter, plus a
    collector that reads the daemon's state at scrape time (on the event loop)."""

    def __init__(self, daemon: Daemon, config: MetricsConfig, version: str) -> None:
        # The start time of each counter as an extra gauge (``_created``) is noise in the
        # text format: Prometheus tells a restart from a counter that drops.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.daemon = daemon
        self.config = config
        self.version = version
        self.registry = CollectorRegistry(auto_describe=False)
        self.api_requests = Counter(
            "dispenser_api_requests", "API calls answered, by method and outcome (ok or "
            "the error's name).", ["method", "outcome"], registry=self.registry)
        self.api_duration = Histogram(
            "dispenser_api_request_duration_seconds", "Time from a call's arrival to its "
            "answer (including the journal commit it waited for), by method.", ["method"],
            buckets=API_BUCKETS, registry=self.registry)
        self.commit_duration = Histogram(
            "dispenser_journal_commit_duration_seconds", "Time of each journal COMMIT "
            "(the fsync of synchronous=FULL).", buckets=COMMIT_BUCKETS,
            registry=self.registry)
        self.loop_lag = Histogram(
            "dispenser_event_loop_lag_seconds", "How late the event loop woke up from a "
            "20 ms sleep: the step that held it meanwhile.", buckets=LAG_BUCKETS,
            registry=self.registry)
        self.last_collect_s = 0.0
        self._failed: set[str] = set()
        self.registry.register(_StateCollector(self))

    # -- observed as things happen (on the loop)
    def on_request(self, method: str, error_code: int | None, seconds: float) -> None:
        if method not in self.daemon.registry:
            method = "unknown"  # never a label value a client made up
        self.api_requests.labels(method, outcome_label(error_code)).inc()
        self.api_duration.labels(method).observe(seconds)

    def on_commit(self, seconds: float) -> None:
        self.commit_duration.observe(seconds)

    def on_loop_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for (``Accept``), and its type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # -- read at scrape time
    def section(self, name: str, build: Callable[[], list[Metric]]) -> list[Metric]:
        """One part's metrics; a part that fails is left out of this scrape (and logged
        once), the others still answer."""
        try:
            return build()
        except Exception:
            if name not in self._failed:
                self._failed.add(name)
                log.exception("metrics part failed", part=name)
            return []


class _StateCollector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.d = metrics.daemon

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        m = self.metrics
        for name, build in (("machine", self._machine), ("orders", self._orders),
                            ("robot", self._robot), ("modbus", self._modbus),
                            ("printer", self._printer), ("api", self._api),
                            ("journal", self._journal), ("faults", self._faults),
                            ("stock", self._stock)):
            yield from m.section(name, build)
        took = _gauge("dispenser_metrics_collect_seconds",
                      "Time the previous scrape took to read the daemon's state.")
        took.add_metric([], m.last_collect_s)
        yield took
        m.last_collect_s = time.perf_counter() - began

    def _machine(self) -> list[Metric]:
        info = _gauge("dispenser_build_info", "Always 1; the version as a label.",
                      ("version",))
        info.add_metric([self.metrics.version], 1)
        state = _gauge("dispenser_machine_state", "1 for the machine's current state.",
                       ("state",))
        now = self.d.machine.state
        for s in ControllerState:
            state.add_metric([s.value], 1 if s is now else 0)
        return [info, state]

    def _orders(self) -> list[Metric]:
        counts = state_counts(self.d.journal)
        orders = _gauge("dispenser_orders", "Orders in the journal, by state.", ("state",))
        for o in OrderState:
            orders.add_metric([o.value], counts["orders"].get(o.value, 0))
        shipments = _gauge("dispenser_shipments", "Shipments in the journal, by state.",
                           ("state",))
        for s in ShipmentState:
            shipments.add_metric([s.value], counts["shipments"].get(s.value, 0))
        held = {**dict.fromkeys(HOLD_CODES, 0), **hold_counts(self.d.journal)}
        reasons = _gauge("dispenser_held_orders", "Held orders by hold reason (an order "
                         "held for two reasons counts under both).", ("reason",))
        for code, n in sorted(held.items()):
            reasons.add_metric([code], n)
        done = _counter("dispenser_shipments_completed",
                        "Shipments completed since the daemon started.")
        done.add_metric([], self.d.scheduler.counters.shipments_completed)
        return [orders, reasons, shipments, done]

    def _robot(self) -> list[Metric]:
        sched = self.d.scheduler
        c = sched.counters
        st = sched.status
        link = _gauge("dispenser_robot_link_up", "1 while the robot answers.")
        link.add_metric([], 1 if sched.link_up else 0)
        downs = _counter("dispenser_robot_link_downs", "Times the robot link was lost.")
        downs.add_metric([], c.link_downs)
        depth = _gauge("dispenser_robot_queue_depth", "Commands in the robot's queue.")
        depth.add_metric([], st.queue_depth if st else 0)
        capacity = _gauge("dispenser_robot_queue_capacity", "Commands the robot's queue "
                          "holds.")
        capacity.add_metric([], st.queue_capacity if st else 0)
        outstanding = _gauge("dispenser_robot_commands_outstanding", "Commands sent whose "
                             "completion has not been applied yet.")
        outstanding.add_metric([], len(sched.ledger.outstanding))
        busy = _counter("dispenser_robot_busy_seconds", "Time the robot was seen in motion "
                        "(rate() of it is the robot's utilization).")
        busy.add_metric([], sched.busy.seconds(time.monotonic()))
        commands = _counter("dispenser_robot_commands", "Robot commands completed, by "
                            "command and result.", ("command", "result"))
        picks = _counter("dispenser_picks", "PICK commands completed, by result.",
                         ("result",))
        by_command = dict(c.by_command)
        for motion in Motion:
            for outcome in Outcome:
                n = by_command.get((motion.value, outcome.value), 0)
                commands.add_metric([motion.value, outcome.value], n)
                if motion is Motion.PICK:
                    picks.add_metric([outcome.value], n)
        packs = _counter("dispenser_packs_handled", "Packs the robot moved or refused, by "
                         "result: picked, stored, lost (dropped or stuck in a fault), "
                         "refused (a load refused by a check or by the robot).", ("result",))
        for result, n in (("picked", c.packs_picked), ("stored", c.packs_stored),
                          ("lost", c.packs_lost), ("refused", c.packs_refused)):
            packs.add_metric([result], n)
        outputs = _gauge("dispenser_outputs", "Output points, by use.", ("state",))
        in_use = len(sched.totes.outputs_in_use())
        outputs.add_metric(["in_use"], in_use)
        outputs.add_metric(["free"], max(0, sched.outputs - in_use))
        loads = _gauge("dispenser_loads_waiting", "Scanned packs waiting to be stored.")
        loads.add_metric([], len(sched.loading.loads))
        return [link, downs, depth, capacity, outstanding, busy, commands, picks, packs,
                outputs, loads]

    def _modbus(self) -> list[Metric]:
        t = self.d.robot.traffic()
        transactions = _counter("dispenser_modbus_transactions", "Modbus transactions "
                                "answered by the robot.")
        transactions.add_metric([], t["transactions"])
        errors = _counter("dispenser_modbus_errors", "Modbus transactions that failed, by "
                          "kind (timeout, exception_NN, bad_reply, short_reply, link_down, "
                          "connect_failed).", ("kind",))
        for kind, n in sorted(t["errors"].items()):
            errors.add_metric([kind], n)
        reconnects = _counter("dispenser_modbus_reconnects", "Connections to the robot "
                              "made again.")
        reconnects.add_metric([], t["reconnects"])
        return [transactions, errors, reconnects]

    def _printer(self) -> list[Metric]:
        desk = self.d.desk
        ready = _gauge("dispenser_printer_ready", "0 while the printer keeps a shipment "
                       "waiting (its last answer), 1 otherwise.")
        ready.add_metric([], 0 if desk.waiting_reasons else 1)
        reasons = _gauge("dispenser_printer_not_ready", "1 for each reason the printer "
                         "gave for not printing.", ("reason",))
        for reason in desk.waiting_reasons:
            reasons.add_metric([reason], 1)
        printed = _counter("dispenser_labels_printed", "Shipping labels printed, each with "
                           "its packing slip (reprints not counted).")
        printed.add_metric([], desk.printed_count)
        waiting = _gauge("dispenser_shipments_waiting_for_printer", "Shipments whose label "
                         "is still to be printed.")
        waiting.add_metric([], len(desk.pending))
        return [ready, reasons, printed, waiting]

    def _api(self) -> list[Metric]:
        connections = _gauge("dispenser_api_connections", "API connections open.")
        connections.add_metric([], self.d.server.connection_count)
        return [connections]

    def _journal(self) -> list[Metric]:
        writable = _gauge("dispenser_journal_writable", "1 while the journal takes writes.")
        writable.add_metric([], 1 if self.d.journal.unavailable is None else 0)
        return [writable]

    def _faults(self) -> list[Metric]:
        totals: Tally[str] = Tally()
        latched: Tally[str] = Tally()
        for kind, n, active in self.d.journal.query(
                "SELECT kind, count(*), sum(acked_at IS NULL) FROM faults GROUP BY kind"):
            totals[str(kind)] += int(n)
            latched[str(kind)] += int(active or 0)
        for record in self.d.scheduler.faults.log.held:  # not journaled yet
            totals[record.kind] += 1
            latched[record.kind] += 1
        now = _gauge("dispenser_faults_latched", "Faults latched now (not acknowledged), by "
                     "kind.", ("kind",))
        total = _counter("dispenser_faults", "Faults raised, by kind (all the journal "
                         "holds).", ("kind",))
        for kind in sorted(totals):
            now.add_metric([kind], latched[kind])
            total.add_metric([kind], totals[kind])
        return [now, total]

    def _stock(self) -> list[Metric]:
        d = self.d.dispensary
        today = self.d.clock().date()
        soon = today + timedelta(days=self.metrics.config.near_expiry_days)
        in_stock = near = expired = 0
        others: dict[str, int] = dict.fromkeys((s.value for s in MACHINE_PACK_STATES), 0)
        stocked = PackState.IN_STOCK
        for pack in d.packs.live.values():
            if pack.state is stocked:  # most packs: no hashing of the state
                in_stock += 1
                expiry = pack.expiry
                if expiry < soon:
                    if expiry < today:
                        expired += 1
                    else:
                        near += 1
            else:
                others[pack.state.value] = others.get(pack.state.value, 0) + 1
        others[stocked.value] = in_stock
        packs = _gauge("dispenser_packs", "Packs in the machine, by state.", ("state",))
        for state, n in others.items():
            packs.add_metric([state], n)
        near_g = _gauge("dispenser_packs_near_expiry", "Packs in stock that expire within "
                        "[metrics] near_expiry_days.")
        near_g.add_metric([], near)
        expired_g = _gauge("dispenser_packs_expired", "Packs in stock past their expiry "
                           "(never dispensed: take them out).")
        expired_g.add_metric([], expired)
        slots = d.stock.slots
        blocked = sum(1 for s in slots.values() if s.blocked)
        slot_g = _gauge("dispenser_slots", "Storage slots, by state.", ("state",))
        slot_g.add_metric(["occupied"], len(slots) - blocked)
        slot_g.add_metric(["blocked"], blocked)
        slot_g.add_metric(["free"], max(0, d.geometry.slots - len(slots)))
        return [packs, near_g, expired_g, slot_g]


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 on the event loop; one request per connection."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._open = 0

    @property
    def address(self) -> str:
        if self._server is not None and self._server.sockets:
            host, port = self._server.sockets[0].getsockname()[:2]
            return f"{host}:{port}"
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                      limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise MetricsStartError(f"metrics.listen: cannot listen on {self.host}:"
                                    f"{self.port}: {exc.strerror or exc}") from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers, body = self._answer(head)
                response = self._response(status, headers, body)
                if head.startswith(b"HEAD "):  # the length of what GET would send
                    response = response[:len(response) - len(body)]
                writer.write(response)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, dict[str, str], bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", {}, b"bad request\n"
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if target.split("?")[0] != "/metrics":
            return "404 Not Found", {}, b"the metrics are at /metrics\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", {"Allow": "GET, HEAD"}, b""
        body, content_type = self.metrics.exposition(headers.get("accept", ""))
        return "200 OK", {"Content-Type": content_type}, body

    @staticmethod
    def _response(status: str, headers: dict[str, Any], body: bytes) -> bytes:
        head = [f"HTTP/1.1 {status}", "Connection: close",
                f"Content-Length: {len(body)}"]
        if "Content-Type" not in headers:
            headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        head += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
