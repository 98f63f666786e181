"""Run ``dispenser-sim`` and ``dispenserd`` as separate processes and talk to them only
through their sockets: the daemon's API (``ApiClient``) and the simulator's control socket
(``sim.ledger``, ``sim.put_input``, ``sim.inject``, ``sim.clear``)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.stack import pack_key, scan
from dispenser.api.auth import hash_token
from dispenser.api.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FORMULARY = ROOT / "dispenser" / "data" / "formulary.csv"
GS = "\x1d"

TOKENS = {"order_system": "tok-order-system", "staff": "tok-staff",
          "technician": "tok-technician"}


def drugs() -> dict[str, list[dict[str, str]]]:
    """Formulary rows split into robot and fridge items (deterministic choice)."""
    with open(FORMULARY, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    robot = [r for r in rows if r["fridge"] == "false" and r["manual"] == "false"]
    fridge = [r for r in rows if r["fridge"] == "true" and r["manual"] == "false"]
    return {"robot": robot, "fridge": fridge}


def pack(gtin: str, batch: str, expiry: date, serial: str) -> dict[str, str]:
    return {"gtin": gtin, "batch": batch, "expiry": expiry.isoformat(), "serial": serial}


def order(order_id: str, patient: str, items: list[tuple[str, int]], *,
          diagnoses: tuple[str, ...] = ("E11.9",), address: str | None = None,
          priority: str = "normal", prescription: str | None = None) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    return {
        "order_id": order_id,
        "patient": {"id": patient, "name": f"Test Patient {patient}", "phone": "+86 22 5550000"},
        "prescription": {"id": prescription or f"RX-{order_id}",
                         "issued_on": (date.today() - timedelta(days=5)).isoformat(),
                         "institution": "Test Clinic", "prescriber": "Dr Test",
                         "diagnoses": list(diagnoses)},
        "items": [{"drug_code": code, "quantity": qty, "days_supply": 30} for code, qty in items],
        "delivery": {"address": address or f"{patient} Test Street 1, Tianjin",
                     "window_start": start.isoformat(),
                     "window_end": (start + timedelta(hours=3)).isoformat()},
        "priority": priority,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 30.0,
                   interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


@dataclass
class Sim:
    """``dispenser-sim`` as a process."""

    workdir: Path
    instant: bool = True
    speed: float = 1.0
    proc: subprocess.Popen[str] | None = None
    port: int = 0

    @property
    def control(self) -> Path:
        return self.workdir / "sim-control.sock"

    @property
    def printer_link(self) -> Path:
        return self.workdir / "printer"

    def start(self) -> None:
        self.port = free_port()
        args = [str(BIN / "dispenser-sim"), "--tcp", f"127.0.0.1:{self.port}",
                "--printer-link", str(self.printer_link), "--control", str(self.control)]
        args += ["--instant"] if self.instant else ["--speed", str(self.speed)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("dispenser-sim exited at start")
            if "ready" in line:
                return
        raise RuntimeError("dispenser-sim did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        reader, writer = await asyncio.open_unix_connection(str(self.control),
                                                            limit=64 * 1024 * 1024)
        try:
            msg: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
            if params is not None:
                msg["params"] = params
            writer.write(json.dumps(msg).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
        if "error" in reply:
            raise RuntimeError(f"sim {method}: {reply['error']}")
        return reply["result"]

    async def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("sim.ledger")
        return result


@dataclass
class Daemon:
    """``dispenserd --config`` as a process. ``name`` tells the files of a second daemon in
    the same working directory apart (config, log, socket); ``journal`` puts the journal
    elsewhere (default ``workdir/journal.sqlite``)."""

    workdir: Path
    sim: Sim
    merge_window_s: float = 1.0
    link_fault_after_s: float = 2.0
    watchdog_ms: int = 1000
    min_shelf_life_days: int = 30
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    name: str = "dispenserd"
    journal: Path | None = None
    audit_mismatch: str = "stop"
    audit_key: Path | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / ("api.sock" if self.name == "dispenserd" else f"{self.name}.sock")

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def journal_path(self) -> Path:
        return self.journal or self.workdir / "journal.sqlite"

    def write_config(self) -> Path:
        tokens = "\n".join(f'[[api.tokens]]\nrole = "{role}"\nhash = "{hash_token(tok)}"\n'
                           f'label = "{role}-test"\n' for role, tok in TOKENS.items())
        text = f"""
[journal]
path = "{self.journal_path}"
{f'audit_key = "{self.audit_key}"' if self.audit_key else ""}

[api]
socket = "{self.socket}"
{tokens}

[robot]
transport = "tcp"
host = "127.0.0.1"
port = {self.sim.port}
timeout_s = 0.5
watchdog_ms = {self.watchdog_ms}
outputs = 4
retry_backoff_s = 0.1
link_fault_after_s = {self.link_fault_after_s}

[printer]
url = "{self.sim.printer_link}"
timeout_s = 0.5

[formulary]
path = "{FORMULARY}"

[stock]
sides = 2
levels = 25
columns = 200
slot_capacity = 10
low_stock_packs = 1

[policy]
merge_window_s = {self.merge_window_s}
min_shelf_life_days = {self.min_shelf_life_days}
audit_mismatch = "{self.audit_mismatch}"

[log]
level = "info"
format = "json"
"""
        path = self.workdir / f"{self.name}.toml"
        path.write_text(text)
        return path

    def start(self) -> None:
        config = self.write_config()
        env = {**os.environ, **self.env}
        env.pop("NOTIFY_SOCKET", None)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([str(BIN / "dispenserd"), "--config", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.workdir)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dispenserd exited at start:\n" + self.log_tail())
            if self.socket.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.socket))
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("dispenserd did not start:\n" + self.log_tail())

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Start it expecting it to stop by itself (a start-up problem): exit status and
        everything it wrote."""
        config = self.write_config()
        env = {**os.environ, **self.env}
        env.pop("NOTIFY_SOCKET", None)
        ran = subprocess.run([str(BIN / "dispenserd"), "--config", str(config)],
                             capture_output=True, text=True, env=env, cwd=self.workdir,
                             timeout=timeout)
        return ran.returncode, ran.stdout + ran.stderr

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    async def client(self, role: str | None = "staff") -> ApiClient:
        return await ApiClient.connect(str(self.socket),
                                       token=TOKENS[role] if role else None)

    async def wait_ready(self, client: ApiClient, timeout: float = 30.0) -> None:
        async def ready() -> bool:
            st = await client.call("machine.status")
            return bool(st["state"] == "ready")
        await wait_for(ready, timeout, what="machine ready")


async def load_packs(sim: Sim, client: ApiClient, packs: list[dict[str, str]]) -> list[Any]:
    """Put the packs at the input point and load each through stock.load (wait=True)."""
    await sim.call("sim.put_input", {"packs": packs})
    return [await client.call("stock.load", {"scan": scan(p), "wait": True}, timeout=60)
            for p in packs]


async def all_shipments(client: ApiClient) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after"] = after
        page = await client.call("shipment.list", params)
        out += page["items"]
        after = page["next"]
        if not after:
            return out


def released_totes(ledger: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in ledger["totes"] if t["packs"]]


async def check_totes_match_journal(client: ApiClient, sim: Sim,
                                    by_serial: bool = True) -> dict[str, list[Any]]:
    """Every completed shipment's packs are exactly one released tote's packs, pack by
    pack, and no tote holds anything the journal does not record.

    ``by_serial=False`` compares drug, batch and expiry only: after packs vanished from a
    slot the robot cannot tell which serials it picked (the journal assumes the oldest)."""
    def key(p: dict[str, Any]) -> tuple[str, ...]:
        k = pack_key(p)
        return k if by_serial else k[:3]

    def content(packs: list[dict[str, Any]]) -> tuple[tuple[str, ...], ...]:
        return tuple(sorted(key(p) for p in packs))

    ledger = await sim.ledger()
    totes: dict[tuple[tuple[str, ...], ...], int] = {}
    for t in released_totes(ledger):
        c = content(t["packs"])
        totes[c] = totes.get(c, 0) + 1
    by_shipment: dict[str, list[Any]] = {}
    for sh in await all_shipments(client):
        if sh["state"] != "completed" or sh["picked"] == 0:
            continue
        full = await client.call("shipment.get", {"shipment_id": sh["shipment_id"]})
        c = content(full["packs"])
        assert totes.get(c, 0) > 0, (f"{sh['shipment_id']}: no released tote holds exactly "
                                     f"{list(c)}")
        totes[c] -= 1
        by_shipment[sh["shipment_id"]] = [pack_key(p) for p in full["packs"]]
    assert not any(totes.values()), "a released tote holds packs no completed shipment records"
    serials = [p["serial"] for t in released_totes(ledger) for p in t["packs"]]
    assert len(serials) == len(set(serials)), "a pack was dispensed twice"
    journal = [p[3] for v in by_shipment.values() for p in v]
    assert len(journal) == len(set(journal)), "the journal dispensed a pack twice"
    return by_shipment


async def check_stock_matches_slots(client: ApiClient, sim: Sim,
                                    blocked: frozenset[int] = frozenset()) -> None:
    """Packs the journal has in stock are exactly the packs in the robot's slots.

    ``blocked`` slots (a short pick found them emptier than recorded; a person has to
    count them) are left out."""
    ledger = await sim.ledger()
    in_slots = {(int(s), pack_key(p)) for s, packs in ledger["slots"].items() for p in packs
                if int(s) not in blocked}
    journal: set[tuple[int, tuple[str, str, str, str]]] = set()
    for state in ("in_stock", "quarantined"):
        after = None
        while True:
            params: dict[str, Any] = {"state": state, "limit": 1000}
            if after:
                params["after"] = after
            page = await client.call("stock.list", params)
            for p in page["items"]:
                if (p["slot"] is not None and p["shipment_id"] is None
                        and p["slot"] not in blocked):
                    journal.add((p["slot"], pack_key(p)))
            after = page["next"]
            if not after:
                break
    assert journal == in_slots, (f"journal only: {sorted(journal - in_slots)[:5]}, "
                                 f"robot only: {sorted(in_slots - journal)[:5]}")
