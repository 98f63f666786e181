"""The whole machine on one host: ``dispenser-sim`` and ``dispenserd`` as separate processes.

::

    async with Stack(Path(tmp), instant=True) as stack:      # starts both, waits for ready
        orders = await stack.client("order_system")          # ApiClient per role
        staff = await stack.client("staff")
        await stack.sim.put_input([pack, ...])                # the simulator's control socket
        await stack.sim.inject("jam", after_picks=0)
        stack.kill_daemon(); await stack.start_daemon()       # SIGKILL and restart
        report = await stack.check_invariant()                # raises InvariantViolation

Everything goes through the processes' public interfaces: the daemon's socket API and the
simulator's JSON-RPC control socket. The working directory holds the generated config,
the journal, the simulator's state file and both processes' logs (kept for a post-mortem).

The **invariant** (``check_invariant``) compares the journal, as the API reports it, with the
simulator's ledger, which is the physical truth, pack by pack:

- every order is in a final state (completed, cancelled, rejected, failed), if asked;
- every pack the journal knows is where the journal says: ``in_stock``/``quarantined`` in
  that slot, ``picked`` in the tote at its shipment's output, ``dispensed`` in a released
  tote, ``dropped`` in the ledger's ``dropped``, ``missing`` out of storage (``jammed``,
  ``removed``, ``dropped``), ``loading``/``refused`` at the input point or out of storage
  (``taken_off`` the input point by a person);
- no pack is in two places and no serial was dispensed twice;
- every released tote holds packs of one shipment only, and exactly that shipment's packs;
- the packs in the slots are exactly the journal's stock (nothing in storage unknown to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispenser.api.auth import hash_token
from dispenser.api.client import ApiClient

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
FORMULARY = ROOT / "config" / "formulary.csv"
GS = "\x1d"

ROLES = ("order_system", "staff", "technician")
# Tokens of the temporary config only; the config holds their hashes.
TOKENS = {role: f"stack-{role}-token" for role in ROLES}

ORDER_FINAL = frozenset({"completed", "cancelled", "rejected", "failed"})
SHIPMENT_FINAL = frozenset({"completed", "cancelled", "failed"})

# The simulated machine's storage (docs/robot-protocol.md §4).
SIM_GEOMETRY = {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10}

__all__ = [
    "FORMULARY",
    "ORDER_FINAL",
    "ROLES",
    "TOKENS",
    "DaemonOptions",
    "InvariantReport",
    "InvariantViolation",
    "SimControl",
    "Stack",
    "pack_key",
    "report_campaign",
    "say",
    "scan",
    "wait_for",
]


def say(text: str) -> None:
    """One line of a benchmark's or campaign's progress, shown at once."""
    print(text, flush=True)


def report_campaign(name: str, seed: int, fig: dict[str, Any], json_path: str | None,
                    hidden: tuple[str, ...] = ()) -> int:
    """Print a campaign's figures (less ``hidden`` keys), write them all to ``json_path``
    if given, say whether the invariant held, and return the exit status (0 held, 1 not)."""
    say(json.dumps({k: v for k, v in fig.items() if k not in hidden}, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(fig, indent=1))
    ok = bool(fig["invariant"]["ok"])
    say(f"{name} campaign seed={seed}: invariant {'HOLDS' if ok else 'VIOLATED'}")
    return 0 if ok else 1


def scan(p: dict[str, str]) -> str:
    """The GS1 DataMatrix scan of a simulator pack, as a hand scanner sends it."""
    y, m, d = p["expiry"].split("-")
    return f"]d201{p['gtin']}17{y[2:]}{m}{d}10{p['batch']}{GS}21{p['serial']}"


def pack_key(p: dict[str, Any]) -> tuple[str, str, str, str]:
    return (p["gtin"], p["batch"], p["expiry"], p["serial"])


def formulary_rows() -> list[dict[str, str]]:
    with open(FORMULARY, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 30.0,
                   interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something true; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


# --------------------------------------------------------------------------- simulator
class SimControl:
    """A client of ``dispenser-sim``'s control socket (one connection, one call at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._ids = 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = await asyncio.open_unix_connection(
                            str(self.path), limit=256 * 1024 * 1024)
                    reader, writer = self._conn
                    self._ids += 1
                    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._ids, "method": method}
                    if params is not None:
                        msg["params"] = params
                    writer.write(json.dumps(msg).encode() + b"\n")
                    await writer.drain()
                    line = await reader.readline()
                    if not line:
                        raise ConnectionError("simulator closed the control connection")
                    break
                except (ConnectionError, OSError):
                    await self.close()
                    if attempt == 2:
                        raise
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"sim {method}: {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        if self._conn is not None:
            _, writer = self._conn
            self._conn = None
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("sim.ledger")
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("sim.status")
        return result

    async def put_input(self, packs: list[dict[str, str]]) -> int:
        result = await self.call("sim.put_input", {"packs": packs})
        return int(result["input_count"])

    async def take_input(self, count: int = 1) -> list[dict[str, Any]]:
        """A person takes the first ``count`` packs off the input point."""
        result = await self.call("sim.take_input", {"count": count})
        return list(result["taken"])

    async def replace_board(self) -> dict[str, Any]:
        """The robot's controller board is replaced (packs stay, protocol memory empty)."""
        result: dict[str, Any] = await self.call("sim.replace_board")
        return result

    async def inject(self, fault: str, **params: Any) -> Any:
        return await self.call("sim.inject", {"fault": fault, **params})

    async def clear(self, fault: str | None = None) -> list[str]:
        result = await self.call("sim.clear", {"fault": fault} if fault else None)
        return list(result["cleared"])


# --------------------------------------------------------------------------- stack
@dataclass
class DaemonOptions:
    """What the temporary configuration sets (the rest are the daemon's defaults)."""

    merge_window_s: float = 1.0
    link_fault_after_s: float = 2.0
    watchdog_ms: int = 1000
    timeout_s: float = 0.5
    # The daemon's default: a busy host can take longer than 0.5 s to answer over a pty.
    printer_timeout_s: float = 2.0
    retry_backoff_s: float = 0.1
    min_shelf_life_days: int = 30
    low_stock_packs: int = 2
    log_level: str = "info"
    env: dict[str, str] = field(default_factory=dict)


class InvariantViolation(AssertionError):
    """The journal and the physical ledger disagree; ``report.problems`` says where."""

    def __init__(self, report: InvariantReport) -> None:
        self.report = report
        shown = "\n  ".join(report.problems[:30])
        more = len(report.problems) - 30
        super().__init__(f"{len(report.problems)} invariant problem(s):\n  {shown}"
                         + (f"\n  ... and {more} more" if more > 0 else ""))


@dataclass
class InvariantReport:
    problems: list[str] = field(default_factory=list)
    orders: Counter[str] = field(default_factory=Counter)
    shipments: Counter[str] = field(default_factory=Counter)
    packs: Counter[str] = field(default_factory=Counter)
    released_totes: int = 0
    packs_dispensed: int = 0
    # Consequences of packs vanishing unseen (sim.inject slot_short / slot_empty), which the
    # controller cannot know until it picks the slot empty or counts it: "substituted" (the
    # robot picked the next pack of the same batch, the journal names the vanished one),
    # "vanished_in_stock" / "vanished_quarantined" (the journal still has it in the slot).
    known: Counter[str] = field(default_factory=Counter)
    # Printed labels per kind: shipments with two or more copies (a reprint after a crash
    # between printing and journaling it is allowed: printing is at least once).
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": len(self.problems), "orders": dict(self.orders),
                "shipments": dict(self.shipments), "packs": dict(self.packs),
                "released_totes": self.released_totes,
                "packs_dispensed": self.packs_dispensed, "labels": self.labels,
                "known_consequences_of_vanished_packs": dict(self.known)}


class Stack:
    """``dispenser-sim`` and ``dispenserd`` in their own processes, sharing ``workdir``."""

    def __init__(self, workdir: Path, *, instant: bool = True, speed: float = 1.0,
                 outputs: int = 4, daemon: DaemonOptions | None = None,
                 sim_state: bool = True) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.instant = instant
        self.speed = speed
        self.outputs = outputs
        self.options = daemon or DaemonOptions()
        self.sim_state = sim_state
        self.sim_proc: subprocess.Popen[bytes] | None = None
        self.daemon_proc: subprocess.Popen[bytes] | None = None
        self.sim_port = 0
        self.sim = SimControl(self.control_path)
        self.daemon_starts = 0
        self._clients: list[ApiClient] = []

    # paths
    @property
    def control_path(self) -> Path:
        return self.workdir / "sim-control.sock"

    @property
    def printer_link(self) -> Path:
        return self.workdir / "printer"

    @property
    def api_socket(self) -> Path:
        return self.workdir / "api.sock"

    @property
    def journal_path(self) -> Path:
        return self.workdir / "journal.sqlite"

    @property
    def config_path(self) -> Path:
        return self.workdir / "dispenserd.toml"

    @property
    def daemon_log(self) -> Path:
        return self.workdir / "dispenserd.log"

    @property
    def sim_log(self) -> Path:
        return self.workdir / "dispenser-sim.log"

    # lifecycle
    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, ready_timeout: float = 60.0) -> None:
        """Start the simulator, then the daemon; return when the machine is ready."""
        self.start_sim()
        await self.start_daemon()
        await self.wait_ready(timeout=ready_timeout)

    async def stop(self) -> None:
        await self.close_clients()
        await self.sim.close()
        self.stop_daemon()
        self.stop_sim()

    def start_sim(self) -> None:
        args = [str(BIN / "dispenser-sim"), "--tcp", "127.0.0.1:0",
                "--printer-link", str(self.printer_link), "--control", str(self.control_path),
                "--outputs", str(self.outputs)]
        args += ["--instant"] if self.instant else ["--speed", str(self.speed)]
        if self.sim_state:
            args += ["--state", str(self.workdir / "sim-state.json")]
        log = open(self.sim_log, "ab")  # noqa: SIM115 - handed to the child
        self.sim_proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        log.close()
        assert self.sim_proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.sim_proc.stdout.readline().decode()
            if not line:
                raise RuntimeError("dispenser-sim exited at start; see " + str(self.sim_log))
            m = re.search(r"modbus-tcp \S+:(\d+)", line)
            if m:
                self.sim_port = int(m.group(1))
            if line.strip().endswith("ready"):
                # Nothing reads stdout from now on: the simulator prints nothing more there.
                return
        raise RuntimeError("dispenser-sim did not become ready")

    def stop_sim(self) -> None:
        _terminate(self.sim_proc, 15)

    async def restart_sim(self, *, instant: bool, speed: float = 1.0) -> None:
        """Power-cycle the robot at another speed: daemon stopped, simulator stopped (it
        saves its state file), started again from it, daemon started; returns when ready.
        Loading stock instantly and then dispensing at realistic speed uses this."""
        await self.close_clients()
        await self.sim.close()
        self.stop_daemon()
        self.stop_sim()
        self.instant, self.speed = instant, speed
        self.start_sim()
        await self.start_daemon()
        await self.wait_ready()

    def write_config(self) -> Path:
        o = self.options
        tokens = "\n".join(f'[[api.tokens]]\nrole = "{role}"\nhash = "{hash_token(tok)}"\n'
                           f'label = "stack-{role}"\n' for role, tok in TOKENS.items())
        g = SIM_GEOMETRY
        self.config_path.write_text(f"""\
[journal]
path = "{self.journal_path}"

[api]
socket = "{self.api_socket}"
{tokens}

[robot]
transport = "tcp"
host = "127.0.0.1"
port = {self.sim_port}
timeout_s = {o.timeout_s}
watchdog_ms = {o.watchdog_ms}
outputs = {self.outputs}
retry_backoff_s = {o.retry_backoff_s}
link_fault_after_s = {o.link_fault_after_s}

[printer]
url = "{self.printer_link}"
timeout_s = {o.printer_timeout_s}

[formulary]
path = "{FORMULARY}"

[stock]
sides = {g['sides']}
levels = {g['levels']}
columns = {g['columns']}
slot_capacity = {g['slot_capacity']}
low_stock_packs = {o.low_stock_packs}

[policy]
merge_window_s = {o.merge_window_s}
min_shelf_life_days = {o.min_shelf_life_days}

[log]
level = "{o.log_level}"
format = "json"
""")
        return self.config_path

    async def start_daemon(self, timeout: float = 30.0) -> float:
        """Start ``dispenserd``; return the seconds until its API answered ``system.ping``."""
        self.write_config()
        env = {**os.environ, **self.options.env}
        env.pop("NOTIFY_SOCKET", None)
        log = open(self.daemon_log, "ab")  # noqa: SIM115 - handed to the child
        t0 = time.monotonic()
        self.daemon_proc = subprocess.Popen(
            [str(BIN / "dispenserd"), "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        log.close()
        self.daemon_starts += 1
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.daemon_proc.poll() is not None:
                raise RuntimeError(f"dispenserd exited at start ({self.daemon_proc.returncode}):"
                                   f"\n{self.daemon_log_tail()}")
            if self.api_socket.exists():
                try:
                    client = await ApiClient.connect(str(self.api_socket), timeout=1.0)
                except (OSError, TimeoutError):
                    pass
                else:
                    try:
                        await client.call("system.ping", timeout=2.0)
                        return time.monotonic() - t0
                    except (OSError, ConnectionError, TimeoutError):
                        pass
                    finally:
                        await client.close()
            await asyncio.sleep(0.01)
        raise RuntimeError("dispenserd did not answer in time:\n" + self.daemon_log_tail())

    def kill_daemon(self) -> None:
        """SIGKILL: no shutdown code of the daemon runs."""
        if self.daemon_proc is not None and self.daemon_proc.poll() is None:
            self.daemon_proc.kill()
            self.daemon_proc.wait()

    def stop_daemon(self) -> int | None:
        """SIGTERM and wait for the clean stop; the exit status."""
        return _terminate(self.daemon_proc, 60)

    @property
    def daemon_pid(self) -> int | None:
        return self.daemon_proc.pid if self.daemon_proc is not None else None

    def daemon_alive(self) -> bool:
        return self.daemon_proc is not None and self.daemon_proc.poll() is None

    def daemon_errors(self, limit: int = 5) -> list[str]:
        """The last error lines of the daemon's log (why it stopped, say)."""
        try:
            text = self.daemon_log.read_text(errors="replace")
        except OSError:
            return []
        errors = [ln[:400] for ln in text.splitlines() if '"level": "error"' in ln
                  and "transaction_id" not in ln]
        return errors[-limit:]

    def daemon_log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.daemon_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # clients
    async def client(self, role: str | None = "staff", *, keep: bool = True) -> ApiClient:
        """A logged-in API connection; kept ones are closed by :meth:`stop`."""
        c = await ApiClient.connect(str(self.api_socket), token=TOKENS[role] if role else None)
        if keep:
            self._clients.append(c)
        return c

    async def close_clients(self) -> None:
        clients, self._clients = self._clients, []
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()

    async def machine_state(self) -> str:
        c = await self.client("staff", keep=False)
        try:
            st = await c.call("machine.status")
            return str(st["state"])
        finally:
            await c.close()

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until ``machine.status`` says ``ready``; the seconds it took."""
        t0 = time.monotonic()
        c = await self.client("staff", keep=False)
        try:
            async def ready() -> bool:
                st = await c.call("machine.status")
                return bool(st["state"] == "ready")
            await wait_for(ready, timeout, interval=0.02, what="machine ready")
        finally:
            await c.close()
        return time.monotonic() - t0

    # process figures
    def daemon_cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.daemon_pid)

    def daemon_rss_kib(self) -> tuple[int, int] | None:
        """(VmRSS, VmHWM) of the daemon in KiB: now and the peak."""
        pid = self.daemon_pid
        if pid is None:
            return None
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))

    # the invariant
    async def check_invariant(self, *, require_final: bool = True,
                              raise_on_problem: bool = True) -> InvariantReport:
        """Compare journal and ledger pack by pack (see the module docstring)."""
        c = await self.client("staff", keep=False)
        try:
            report = await _check(c, self.sim, require_final)
        finally:
            await c.close()
        if report.problems and raise_on_problem:
            raise InvariantViolation(report)
        return report


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def list_all(client: ApiClient, method: str, params: dict[str, Any],
                   key: str) -> list[dict[str, Any]]:
    """Every item of a paged list method."""
    out: list[dict[str, Any]] = []
    after: Any = None
    while True:
        p = {**params, "limit": 1000}
        if after is not None:
            p["after"] = after
        page = await client.call(method, p, timeout=120)
        out += page["items"]
        after = page["next"]
        if after is None:
            return out


async def _check(c: ApiClient, sim: SimControl, require_final: bool) -> InvariantReport:
    r = InvariantReport()
    bad = r.problems.append

    orders = await list_all(c, "order.list", {}, "order_id")
    r.orders.update(o["state"] for o in orders)
    if require_final:
        for o in orders:
            if o["state"] not in ORDER_FINAL:
                bad(f"order {o['order_id']} is {o['state']}, not final")
    shipments = await list_all(c, "shipment.list", {}, "shipment_id")
    r.shipments.update(s["state"] for s in shipments)
    if require_final:
        for s in shipments:
            if s["state"] not in SHIPMENT_FINAL:
                bad(f"shipment {s['shipment_id']} is {s['state']}, not final")
    packs = await list_all(c, "stock.list", {"state": None}, "pack_id")
    r.packs.update(p["state"] for p in packs)
    ledger = await sim.ledger()
    robot_gtins = {row["drug_code"] for row in formulary_rows()
                   if row["fridge"] == "false" and row["manual"] == "false"}

    # Where the ledger has each serial (a serial is unique per pack in these campaigns).
    where: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for slot, ps in ledger["slots"].items():
        for p in ps:
            where[p["serial"]].append(("slot", int(slot)))
    for p in ledger["input"]:
        where[p["serial"]].append(("input", None))
    for out, tote in ledger["outputs"].items():
        for p in tote["packs"]:
            where[p["serial"]].append(("output", (int(out), tote["tote"])))
    for t in ledger["totes"]:
        for p in t["packs"]:
            where[p["serial"]].append(("released", t["tote"]))
    for kind in ("dropped", "jammed", "removed", "taken_off"):
        for p in ledger.get(kind, []):
            where[p["serial"]].append((kind, None))
    for serial, places in where.items():
        if len(places) > 1:
            bad(f"pack {serial} is in {len(places)} places at once: {places}")

    by_serial_journal: dict[str, dict[str, Any]] = {}
    tote_of_shipment: dict[str, set[Any]] = defaultdict(set)
    output_of_shipment: dict[str, set[Any]] = defaultdict(set)
    # Packs that vanished unseen (slot_short / slot_empty): the robot picks by position,
    # not by serial, so from then on the journal names the vanished pack where the next one
    # of the same batch went. For those batches compare counts per place, not serials.
    removed = {p["serial"] for p in ledger["removed"]}
    removed_batches = {(p["gtin"], p["batch"]) for p in ledger["removed"]}
    excused: set[str] = set()
    if removed_batches:
        _check_batches_by_count(r, packs, ledger, where, removed_batches, removed)
        excused = {q["serial"] for q in packs if (q["gtin"], q["batch"]) in removed_batches}
        excused |= {p["serial"] for place in _physical_packs(ledger)
                    for p in place if (p["gtin"], p["batch"]) in removed_batches}
    stands_in: dict[str, str] = {}

    for p in packs:
        serial = p["serial"]
        if serial in excused:
            by_serial_journal.setdefault(serial, p)
            continue
        if serial in by_serial_journal:
            prev = by_serial_journal[serial]
            if prev["state"] not in ("refused",) and p["state"] not in ("refused",):
                bad(f"serial {serial} recorded as two live packs: {prev['pack_id']} "
                    f"({prev['state']}) and {p['pack_id']} ({p['state']})")
        if serial not in by_serial_journal or p["state"] not in ("refused", "loading"):
            by_serial_journal[serial] = p
        places = where.get(stands_in.get(serial, serial), [])
        kinds = {k for k, _ in places}
        state = p["state"]
        if p["gtin"] not in robot_gtins and p["slot"] is None:
            # A fridge or manual pack scanned at the packing desk: never in the robot.
            if places:
                bad(f"manual pack {p['pack_id']} ({serial}) is in the robot: {places}")
            r.packs["manual"] += 1
            continue
        if state in ("in_stock", "quarantined"):
            if p["slot"] is None:
                if state == "in_stock":
                    bad(f"pack {p['pack_id']} in_stock without a slot")
            elif ("slot", p["slot"]) not in places:
                bad(f"pack {p['pack_id']} ({serial}) {state} in slot {p['slot']} per journal, "
                    f"ledger has it at {places or 'nowhere'}")
        elif state == "picked":
            if kinds != {"output"}:
                bad(f"pack {p['pack_id']} ({serial}) picked (shipment {p['shipment_id']}) "
                    f"but the ledger has it at {places or 'nowhere'}")
            else:
                output_of_shipment[p["shipment_id"]].add(places[0][1])
        elif state == "dispensed":
            if kinds != {"released"}:
                bad(f"pack {p['pack_id']} ({serial}) dispensed (shipment {p['shipment_id']}) "
                    f"but the ledger has it at {places or 'nowhere'}")
            else:
                tote_of_shipment[p["shipment_id"]].add(places[0][1])
                r.packs_dispensed += 1
        elif state == "dropped":
            if kinds != {"dropped"}:
                bad(f"pack {p['pack_id']} ({serial}) dropped per journal, ledger: {places}")
        elif state == "missing":
            if not kinds or not kinds <= {"jammed", "removed", "dropped"}:
                bad(f"pack {p['pack_id']} ({serial}) missing per journal, ledger: "
                    f"{places or 'nowhere'}")
        elif state in ("loading", "refused"):
            if kinds & {"slot", "output", "released"} and not _stored_again(
                    serial, packs, p):
                bad(f"pack {p['pack_id']} ({serial}) {state} per journal, ledger: {places}")
        else:
            bad(f"pack {p['pack_id']} in unknown state {state}")

    # Nothing in storage, at the outputs or handed on that the journal does not hold there.
    journal_live = by_serial_journal
    for serial, places in where.items():
        if serial in excused:
            continue
        for kind, loc in places:
            jp = journal_live.get(serial)
            if kind == "slot" and (jp is None or jp["state"] not in ("in_stock", "quarantined")
                                   or jp["slot"] != loc):
                bad(f"slot {loc} holds {serial}, journal: {_desc(jp)}")
            elif kind == "output" and (jp is None or jp["state"] != "picked"):
                bad(f"tote at output {loc[0]} holds {serial}, journal: {_desc(jp)}")
            elif kind == "released" and (jp is None or jp["state"] != "dispensed"):
                bad(f"released tote {loc} holds {serial}, journal: {_desc(jp)}")

    # One tote per shipment, one shipment per tote, and the same packs.
    shipment_of_tote: dict[Any, set[str]] = defaultdict(set)
    for sid, totes in tote_of_shipment.items():
        if len(totes) > 1:
            bad(f"shipment {sid}'s packs are in {len(totes)} released totes: {sorted(totes)}")
        for t in totes:
            shipment_of_tote[t].add(sid)
    for sid, outs in output_of_shipment.items():
        for o in outs:
            shipment_of_tote[("output", o)].add(sid)
    for t, sids in shipment_of_tote.items():
        if len(sids) > 1:
            bad(f"tote {t} holds packs of {len(sids)} shipments: {sorted(sids)}")
    r.released_totes = sum(1 for t in ledger["totes"] if t["packs"])

    # A completed shipment with robot items has its packs handed on, and nothing else.
    ship_state = {s["shipment_id"]: s for s in shipments}
    for sid in tote_of_shipment:
        sh = ship_state.get(sid)
        if sh is not None and sh["state"] not in SHIPMENT_FINAL | {"labelling"}:
            bad(f"shipment {sid} is {sh['state']} but its tote was handed on")
    counted = {p["shipment_id"] for p in packs if p["serial"] in excused}
    for s in shipments:
        if (s["state"] == "completed" and s["picked"] and s["shipment_id"] not in tote_of_shipment
                and s["shipment_id"] not in counted):
            bad(f"shipment {s['shipment_id']} completed with {s['picked']} packs picked but "
                "no released tote holds them")

    serials = [p["serial"] for t in ledger["totes"] for p in t["packs"]]
    dup = [s for s, n in Counter(serials).items() if n > 1]
    if dup:
        bad(f"serials handed on twice: {dup[:10]}")

    # Labels: every completed shipment's shipping label and packing slip came out of the
    # printer (not cancelled); copies are counted.
    printed: Counter[tuple[str, str]] = Counter()
    for label in ledger.get("labels", []):
        if not label.get("printed") or label.get("cancelled"):
            continue
        m = _SHIPMENT_ID.search(label["zpl"])
        if m:
            kind = "slip" if "PACKING SLIP" in label["zpl"] else "label"
            printed[(m.group(0), kind)] += 1
    completed = [s["shipment_id"] for s in shipments if s["state"] == "completed"]
    for sid in completed:
        for kind in ("label", "slip"):
            if printed[(sid, kind)] == 0:
                bad(f"shipment {sid} completed but its {kind} never came out of the printer")
    r.labels = {"printed": sum(printed.values()),
                "shipments_with_copies": len({sid for (sid, _), n in printed.items() if n > 1})}
    return r


_SHIPMENT_ID = re.compile(r"SH-[0-9]{8}")


def _physical_packs(ledger: dict[str, Any]) -> list[list[dict[str, Any]]]:
    places = [*ledger["slots"].values(), ledger["input"]]
    places += [t["packs"] for t in ledger["outputs"].values()]
    places += [t["packs"] for t in ledger["totes"]]
    return places


def _check_batches_by_count(r: InvariantReport, packs: list[dict[str, Any]],
                            ledger: dict[str, Any], where: dict[str, list[tuple[str, Any]]],
                            batches: set[tuple[str, str]], removed: set[str]) -> None:
    """For batches that lost packs unseen: per slot, the journal holds at least what is
    physically there and at most that plus what vanished; per shipment, the tote holds as
    many packs of the batch as the journal gave it; in total nothing extra went out."""
    bad = r.problems.append
    # The tote of each shipment, from its packs of other batches.
    tote_of: dict[str, Any] = {}
    for p in packs:
        if (p["gtin"], p["batch"]) in batches or p["shipment_id"] is None:
            continue
        for kind, loc in where.get(p["serial"], []):
            if kind in ("released", "output"):
                tote_of[p["shipment_id"]] = (kind, loc)
    for gtin, batch in sorted(batches):
        mine = [p for p in packs if p["gtin"] == gtin and p["batch"] == batch]
        vanished = sum(1 for p in ledger["removed"]
                       if p["gtin"] == gtin and p["batch"] == batch)
        j_slot = Counter(p["slot"] for p in mine if p["state"] in ("in_stock", "quarantined"))
        phys_slot = Counter({int(s): sum(1 for p in ps if (p["gtin"], p["batch"]) == (gtin, batch))
                             for s, ps in ledger["slots"].items()})
        for slot in set(j_slot) | {s for s, n in phys_slot.items() if n}:
            j, ph = j_slot.get(slot, 0), phys_slot.get(slot, 0)
            if ph > j or j - ph > vanished:
                bad(f"batch {gtin}/{batch}: slot {slot} holds {ph} packs, journal {j} "
                    f"({vanished} vanished unseen)")
            elif j > ph:
                r.known["vanished_still_in_journal_stock"] += j - ph
        j_ship = Counter(p["shipment_id"] for p in mine if p["state"] in ("dispensed", "picked"))
        phys_tote: Counter[Any] = Counter()
        for kind, key in (("released", "totes"), ("output", "outputs")):
            places = (ledger[key] if kind == "released" else
                      [{"tote": (int(o), t["tote"]), "packs": t["packs"]}
                       for o, t in ledger[key].items()])
            for t in places:
                n = sum(1 for p in t["packs"] if (p["gtin"], p["batch"]) == (gtin, batch))
                if n:
                    phys_tote[(kind, t["tote"])] += n
        unmapped = 0
        for sid, n in j_ship.items():
            tote = tote_of.get(sid)
            if tote is None:
                unmapped += n
            elif phys_tote.get(tote, 0) != n:
                bad(f"batch {gtin}/{batch}: shipment {sid} got {n} per journal, its tote "
                    f"{tote} holds {phys_tote.get(tote, 0)}")
        known_totes = {tote_of[s] for s in j_ship if s in tote_of}
        others = sum(n for t, n in phys_tote.items() if t not in known_totes)
        if others != unmapped:
            bad(f"batch {gtin}/{batch}: {others} packs in totes of shipments the journal "
                f"does not give this batch to (expected {unmapped})")
        if any(p["serial"] in removed and p["state"] in ("dispensed", "picked") for p in mine):
            r.known["journal_names_vanished_pack_as_sent"] += sum(
                1 for p in mine if p["serial"] in removed and p["state"] in ("dispensed",
                                                                               "picked"))


def _stored_again(serial: str, packs: list[dict[str, Any]], p: dict[str, Any]) -> bool:
    """A refused scan of a serial that another (later) pack record holds in storage."""
    return any(q["serial"] == serial and q["pack_id"] != p["pack_id"]
               and q["state"] not in ("loading", "refused") for q in packs)


def _desc(p: dict[str, Any] | None) -> str:
    if p is None:
        return "unknown pack"
    return f"pack {p['pack_id']} {p['state']} slot={p['slot']} shipment={p['shipment_id']}"


async def _recheck(workdir: Path) -> int:
    """Start both processes again on a kept working directory and check the invariant."""
    stack = Stack(workdir)
    try:
        await stack.start()
        report = await stack.check_invariant(raise_on_problem=False)
    finally:
        await stack.stop()
    print(json.dumps(report.summary(), indent=1))
    for p in report.problems[:50]:
        print("  " + p)
    return 0 if report.ok else 1


if __name__ == "__main__":
    # python bench/stack.py --check DIR: the invariant of a kept campaign directory.
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(asyncio.run(_recheck(Path(sys.argv[2]))))
    print("usage: stack.py --check DIR", file=sys.stderr)
    sys.exit(2)
