"""Prometheus metrics (issue 13): a real daemon driving the simulator, scraped over HTTP
while it dispenses and parsed with prometheus_client's own parser; the counters move as
the machine works, every metric docs/metrics.md lists is served (and nothing else), no
label carries patient data, and ``promtool check metrics`` accepts the output."""

from __future__ import annotations

import asyncio
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispenser.api.protocol import ApiError
from dispenser.testing import ROOT, Daemon, Sim, drugs, free_port, load_packs, order, pack, wait_for
from dispenser.testing.tools import require_tool

TODAY = date.today()
DOCUMENTED = re.findall(r"^\| `(dispenser_[a-z_]+)` \|", (ROOT / "docs" / "metrics.md")
                        .read_text(), re.M)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsDaemon(Daemon):
    """The harness's daemon with ``[metrics] listen`` on a free loopback port."""

    def __init__(self, workdir: Path, sim: Sim, *, metrics_port: int) -> None:
        super().__init__(workdir, sim)
        self.metrics_port = metrics_port

    def write_config(self) -> Path:
        path = super().write_config()
        path.write_text(path.read_text() +
                        f'\n[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n')
        return path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@pytest.fixture
def slow_sim(workdir: Path) -> Iterator[Sim]:
    # Motions that take time, so that the robot is seen busy.
    s = Sim(workdir, instant=False, speed=50)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def mdaemon(workdir: Path, slow_sim: Sim) -> Iterator[MetricsDaemon]:
    d = MetricsDaemon(workdir, slow_sim, metrics_port=free_port())
    yield d
    assert d.stop() == 0, d.log_tail()


def get(url: str, accept: str | None = None,
        method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method,
                                     headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


async def scrape(d: MetricsDaemon) -> tuple[str, Samples]:
    status, kind, text = await asyncio.to_thread(get, d.url)
    assert status == 200 and kind.startswith("text/plain; version=0.0.4"), (status, kind)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def counters(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {k: v for k, v in samples.items()
            if k[0].endswith(("_total", "_count", "_sum", "_bucket"))}


async def test_metrics_move_as_the_machine_works(mdaemon: MetricsDaemon,
                                                 slow_sim: Sim) -> None:
    code = drugs()["robot"][11]["drug_code"]
    mdaemon.start()
    staff = await mdaemon.client("staff")
    osys = await mdaemon.client("order_system")
    try:
        await mdaemon.wait_ready(staff)
        text, before = await scrape(mdaemon)
        # Every documented metric is served, and only those.
        served = {f.name for f in text_string_to_metric_families(text)}
        assert served == {n.removesuffix("_total") for n in DOCUMENTED}
        assert value(before, "dispenser_machine_state", state="ready") == 1
        assert value(before, "dispenser_robot_link_up") == 1

        packs = [pack(code, "M1", TODAY + timedelta(days=200), f"M1-{i}") for i in range(5)]
        await load_packs(slow_sim, staff, packs)
        orders = [order("M-1", "PM1", [(code, 2)]), order("M-2", "PM2", [(code, 1)]),
                  # Not a programme diagnosis: held for a pharmacist.
                  order("M-3", "PM3", [(code, 1)], diagnoses=("J45",))]
        for o in orders:
            await osys.call("order.submit", {"order": o})
        with pytest.raises(ApiError):
            await staff.call("no.such.method")

        # Scraped over and over while it works: counters never go back.
        last = counters(before)

        async def done() -> bool:
            nonlocal last
            _, now = await scrape(mdaemon)
            for key, v in last.items():
                assert now.get(key, 0.0) >= v, key
            last = counters(now)
            states = [(await staff.call("order.get", {"order_id": i}))["state"]
                      for i in ("M-1", "M-2")]
            return states == ["completed", "completed"]
        await wait_for(done, 60, interval=0.2, what="M-1 and M-2 completed")

        text, after = await scrape(mdaemon)
        assert value(after, "dispenser_packs_handled_total", result="stored") == 5
        assert value(after, "dispenser_packs_handled_total", result="picked") == 3
        assert value(after, "dispenser_picks_total", result="ok") >= 2
        assert value(after, "dispenser_robot_commands_total", command="store",
                     result="ok") == 5
        assert value(after, "dispenser_robot_commands_total", command="hand_on",
                     result="ok") >= 2
        assert value(after, "dispenser_packs", state="in_stock") == 2
        assert value(after, "dispenser_orders", state="completed") == 2
        assert value(after, "dispenser_orders", state="held") == 1
        assert value(after, "dispenser_held_orders", reason="not_eligible") == 1
        assert value(after, "dispenser_held_orders", reason="stock_short") == 0
        assert value(after, "dispenser_shipments", state="completed") == 2
        assert value(after, "dispenser_shipments_completed_total") == 2
        assert value(after, "dispenser_labels_printed_total") == 2
        assert value(after, "dispenser_printer_ready") == 1
        assert value(after, "dispenser_slots", state="occupied") == 1
        assert value(after, "dispenser_robot_busy_seconds_total") > 0
        assert value(after, "dispenser_modbus_transactions_total") > value(
            before, "dispenser_modbus_transactions_total")
        assert value(after, "dispenser_api_requests_total", method="order.submit",
                     outcome="ok") == 3
        assert value(after, "dispenser_api_requests_total", method="unknown",
                     outcome="method_not_found") == 1
        assert value(after, "dispenser_api_request_duration_seconds_count",
                     method="stock.load") == 5
        assert value(after, "dispenser_journal_commit_duration_seconds_count") > value(
            before, "dispenser_journal_commit_duration_seconds_count")
        assert value(after, "dispenser_faults_latched", kind="door_open") == 0
        assert value(after, "dispenser_event_loop_lag_seconds_count") > value(
            before, "dispenser_event_loop_lag_seconds_count")

        # A fault: latched now, and counted.
        await slow_sim.call("sim.inject", {"fault": "door_open"})

        async def latched() -> bool:
            _, now = await scrape(mdaemon)
            return value(now, "dispenser_faults_latched", kind="door_open") == 1
        await wait_for(latched, 20, what="door_open latched in the metrics")
        _, now = await scrape(mdaemon)
        assert value(now, "dispenser_machine_state", state="fault") == 1
        assert value(now, "dispenser_faults_total", kind="door_open") == 1
        fault = (await staff.call("fault.list", {"active": True}))["items"][0]
        await slow_sim.call("sim.clear", {"fault": "door_open"})
        await staff.call("fault.ack", {"fault_id": fault["fault_id"]})
        _, now = await scrape(mdaemon)
        assert value(now, "dispenser_faults_latched", kind="door_open") == 0
        assert value(now, "dispenser_faults_total", kind="door_open") == 1

        # No label value is an id or patient data: only names from fixed sets.
        labels = {v for (_, ls) in now for (_, v) in ls}
        for o in orders:
            for secret in (o["order_id"], o["patient"]["id"], o["patient"]["name"],
                           o["patient"]["phone"], o["delivery"]["address"]):
                assert secret not in text
        assert all(re.fullmatch(r"[a-z0-9_.+]+|0\.1\.0|\+Inf", v) for v in labels), labels
    finally:
        await staff.close()
        await osys.close()


async def test_promtool_accepts_the_output(mdaemon: MetricsDaemon) -> None:
    promtool = require_tool("promtool")
    mdaemon.start()
    staff = await mdaemon.client("staff")
    try:
        await mdaemon.wait_ready(staff)
        text, _ = await scrape(mdaemon)
    finally:
        await staff.close()
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked


async def test_http_answers(mdaemon: MetricsDaemon) -> None:
    mdaemon.start()
    status, kind, body = await asyncio.to_thread(
        get, mdaemon.url, "application/openmetrics-text; version=1.0.0")
    assert status == 200 and kind.startswith("application/openmetrics-text"), kind
    assert body.rstrip().endswith("# EOF")
    assert "dispenser_picks_total" in body
    status, _, body = await asyncio.to_thread(get, mdaemon.url, None, "HEAD")
    assert status == 200 and body == ""
    status, _, _ = await asyncio.to_thread(get, mdaemon.url.replace("/metrics", "/other"))
    assert status == 404
    status, _, _ = await asyncio.to_thread(get, mdaemon.url, None, "POST")
    assert status == 405


def test_a_taken_port_stops_the_start(workdir: Path, sim: Sim) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        d = MetricsDaemon(workdir, sim, metrics_port=taken.getsockname()[1])
        code, out = d.run_to_exit()
    assert code == 2, out
    assert "metrics.listen: cannot listen on 127.0.0.1:" in out, out
