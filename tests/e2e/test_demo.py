"""The demo as a new user meets it (issue 13): ``dispenserd --simulate`` started from a
folder of its own, the README's loading round run line by line, the journal kept in
``var/demo/`` across a restart and removed by ``--fresh``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dispenser.api.client import ApiClient
from dispenser.testing import BIN, ROOT, wait_for

README = (ROOT / "README.md").read_text()
VENV = Path(sys.executable).parent.parent


def readme_block(heading: str, index: int) -> list[str]:
    """The shell lines of the ``index``-th ``sh`` block after a README heading."""
    section = README[README.index(heading):]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[index]
    return [line for line in block.splitlines() if line.strip()]


def shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One README line as a user runs it in the demo's folder (``.venv`` is there)."""
    return subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


class Demo:
    """``dispenserd --simulate`` as a process in its own folder; its log as JSON lines."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "demo.log"

    def start(self, *extra: str) -> None:
        self.started = self.log.stat().st_size if self.log.exists() else 0
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "dispenserd"), "--simulate", "--instant", *self.args, *extra],
                cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, env=env)
        sock = self.folder / "var" / "dispenser.sock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.text()
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the demo did not start:\n" + self.text())

    def text(self) -> str:
        return self.log.read_bytes()[self.started:].decode(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()
                if line.startswith("{")]

    def events(self) -> list[str]:
        return [str(r.get("event")) for r in self.records()]

    async def client(self) -> ApiClient:
        # The demo lets the account that started it in as a technician: no token.
        return await ApiClient.connect(str(self.folder / "var" / "dispenser.sock"))

    async def wait_event(self, event: str, timeout: float = 90) -> None:
        async def seen() -> bool:
            return event in self.events()
        await wait_for(seen, timeout, what=f"{event!r} in the demo's log")

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    # Not the repository's folder: the demo must find what it needs wherever it starts.
    (tmp_path / ".venv").symlink_to(VENV)
    yield tmp_path


def today() -> str:
    return f"{datetime.now(UTC):%Y%m%d}"


async def state_of(client: ApiClient, order_id: str) -> str:
    return str((await client.call("order.get", {"order_id": order_id}))["state"])


async def test_the_readme_loading_round(folder: Path) -> None:
    demo = Demo(folder, "--demo-orders", "4")
    demo.start()
    client = await demo.client()
    try:
        assert (folder / "var" / "demo" / "journal").exists()
        await demo.wait_event("demo: stock loaded")
        load = f"DEMO-{today()}-LOAD"

        async def held_short() -> bool:
            order = await client.call("order.get", {"order_id": load})
            return order["state"] == "held" and [h["code"] for h in order["hold_reasons"]] == [
                "stock_short"]
        await wait_for(held_short, 30, what=f"{load} held stock_short")
        hint = next(r for r in demo.records()
                    if r["event"] == "demo: waits for a pack loaded by hand")
        assert hint["order_id"] == load
        assert f"`{hint['drug_code']}`" in README  # the drug the README names

        holds, put, load_line, orders = readme_block("### Loading stock in the demo", 0)
        done = shell(holds, folder)
        assert done.returncode == 0 and load in done.stdout and "stock_short" in done.stdout
        done = shell(put, folder)
        assert done.returncode == 0, done.stderr
        assert f"put {hint['drug_code']} batch L1" in done.stdout
        done = shell(load_line, folder)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "-> slot" in done.stdout and "(in_stock)" in done.stdout

        async def completed() -> bool:
            return await state_of(client, load) == "completed"
        await wait_for(completed, 30, what=f"{load} completed")
        done = shell(orders, folder)
        assert re.search(rf"{load}\s+completed", done.stdout), done.stdout

        # A refused pack blocks the input point until it is taken off.
        put, load_line, take = readme_block("### Loading stock in the demo", 1)
        assert shell(put, folder).returncode == 0
        done = shell(load_line, folder)
        assert done.returncode == 4 and "expired" in done.stdout, done.stdout
        done = shell(take, folder)
        assert done.returncode == 0, done.stderr
        assert "batch OLD" in done.stdout and "input point: 0 packs there" in done.stdout

        # Holds are logged with their codes; the log carries no patient data.
        held = [r for r in demo.records() if r["event"] == "shipment held"]
        assert any(r["holds"] == ["stock_short"] and r["drugs"] == [hint["drug_code"]]
                   for r in held), held
        order = await client.call("order.get", {"order_id": load})
        for secret in (order["patient"]["name"], order["patient"]["phone"],
                       order["delivery"]["address"]):
            assert secret not in demo.text()
    finally:
        await client.close()
        assert demo.stop() == 0, demo.text()[-3000:]


async def test_a_restart_continues_and_fresh_starts_over(folder: Path) -> None:
    demo = Demo(folder, "--demo-orders", "3")
    demo.start()
    client = await demo.client()
    try:
        await demo.wait_event("demo: stock loaded")
        first = f"DEMO-{today()}-0001"

        async def all_settled() -> bool:
            # Completed, or held by a check of the demo's hospital feed for a pharmacist.
            orders = [await client.call("order.get", {"order_id": f"DEMO-{today()}-{i:04d}"})
                      for i in (1, 2, 3)]
            return all(o["state"] == "completed" or (o["state"] == "held" and all(
                h["code"] != "stock_short" for h in o["hold_reasons"])) for o in orders)
        await wait_for(all_settled, 60, what="the demo orders completed or held by a check")
        settled = [await state_of(client, f"DEMO-{today()}-{i:04d}") for i in (1, 2, 3)]
        stock = await client.call("stock.list", {"limit": 1000})
        received = (await client.call("order.get", {"order_id": first}))["received_at"]
    finally:
        await client.close()
    assert demo.stop() == 0

    demo.start()
    client = await demo.client()
    try:
        await demo.wait_event("demo: stock loaded")
        # The journal is the same: the orders are there, none was sent again, no pack
        # was loaded twice.
        assert (await client.call("order.get", {"order_id": first}))["received_at"] == received
        assert [await state_of(client, f"DEMO-{today()}-{i:04d}") for i in (1, 2, 3)] == settled
        events = demo.events()
        assert "demo: orders submitted before" in events
        assert "demo: packs loaded before" in events
        assert "demo order refused" not in events and "demo pack left out" not in events
        again = await client.call("stock.list", {"limit": 1000})
        assert [p["pack_id"] for p in again["items"]] == [p["pack_id"] for p in stock["items"]]
    finally:
        await client.close()
    assert demo.stop() == 0

    demo.start("--fresh")
    client = await demo.client()
    try:
        await demo.wait_event("demo: stock loaded")
        assert "demo: orders submitted before" not in demo.events()
        assert (await client.call("order.get", {"order_id": first}))["received_at"] > received
    finally:
        await client.close()
    assert demo.stop() == 0


async def test_a_second_demo_in_the_same_folder_leaves_the_first_alone(folder: Path) -> None:
    demo = Demo(folder)
    demo.start()
    try:
        for extra, why in ((["--fresh"], "cannot start the demo over: the journal "
                            "var/demo/journal is in use by process"),
                           ([], "another simulator serves var/sim.sock")):
            second = subprocess.run([str(BIN / "dispenserd"), "--simulate", *extra],
                                    cwd=folder, capture_output=True, text=True, timeout=60)
            assert second.returncode == 2, second.stdout + second.stderr
            assert why in second.stdout, second.stdout
        # The first one's control socket and journal are untouched.
        done = shell(".venv/bin/dispenser-sim take", folder)
        assert done.returncode == 1 and "no pack lies at the input point" in done.stderr
        assert (folder / "var" / "demo" / "journal").exists()
    finally:
        assert demo.stop() == 0


def test_fresh_never_removes_a_configured_journal(tmp_path: Path) -> None:
    config = tmp_path / "d.toml"
    config.write_text("")
    done = subprocess.run([str(BIN / "dispenserd"), "--simulate", "--fresh", "--config",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "never removes a configured journal" in done.stderr
