"""``dispenserd --config`` as a process, with a configuration written for a test: tokens
for every role, the robot and printer of a ``Sim``, small timeouts."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispenser.api.auth import hash_token
from dispenser.api.client import ApiClient
from dispenser.testing.data import FORMULARY
from dispenser.testing.sim import BIN, Sim
from dispenser.testing.waiting import wait_for

__all__ = ["ROLES", "TOKENS", "Daemon", "DaemonOptions"]

ROLES = ("order_system", "staff", "technician")
# Tokens of the test configuration only; the configuration holds their hashes.
TOKENS = {role: f"test-{role}-token" for role in ROLES}

# The simulated machine's storage (docs/robot-protocol.md §4).
SIM_GEOMETRY = {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10}


@dataclass
class DaemonOptions:
    """What the test configuration sets (the rest are the daemon's defaults)."""

    merge_window_s: float = 1.0
    link_fault_after_s: float = 2.0
    watchdog_ms: int = 1000
    timeout_s: float = 0.5
    # A busy host can take longer than 0.5 s to answer over a pty.
    printer_timeout_s: float = 2.0
    retry_backoff_s: float = 0.1
    min_shelf_life_days: int = 30
    low_stock_packs: int = 1
    audit_mismatch: str = "stop"
    log_level: str = "info"
    # More config text, TOML, appended as it is (tables the options do not cover).
    extra_config: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # Run it under cProfile, switched by ``Daemon.profile_start``/``profile_dump``
    # (``dispenser.testing.profiled``); the statistics go to this file.
    profile: Path | None = None


class Daemon:
    """One ``dispenserd`` process against ``sim``. ``name`` tells the files of a second
    daemon in the same working directory apart (config, log, socket); ``journal`` puts
    the journal elsewhere (default ``workdir/journal.sqlite``). Option fields
    (``DaemonOptions``) may be given as keywords: ``Daemon(workdir, sim,
    merge_window_s=0.5)``."""

    def __init__(self, workdir: Path, sim: Sim, *, name: str = "dispenserd",
                 journal: Path | None = None, audit_key: Path | None = None,
                 options: DaemonOptions | None = None, **knobs: Any) -> None:
        self.workdir = Path(workdir)
        self.sim = sim
        self.name = name
        self.journal = journal
        self.audit_key = audit_key
        self.options = dataclasses.replace(options or DaemonOptions(), **knobs)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __getattr__(self, name: str) -> Any:
        # The options read as the daemon's own attributes (``daemon.watchdog_ms``).
        if name != "options" and name in DaemonOptions.__dataclass_fields__:
            return getattr(self.options, name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # ... and set likewise: the next start's configuration has the new value.
        if name in DaemonOptions.__dataclass_fields__:
            setattr(self.options, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def socket(self) -> Path:
        return self.workdir / ("api.sock" if self.name == "dispenserd" else f"{self.name}.sock")

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.toml"

    @property
    def journal_path(self) -> Path:
        return self.journal or self.workdir / "journal.sqlite"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------------ configuration
    def write_config(self) -> Path:
        o = self.options
        tokens = "\n".join(f'[[api.tokens]]\nrole = "{role}"\nhash = "{hash_token(tok)}"\n'
                           f'label = "{role}-test"\n' for role, tok in TOKENS.items())
        key = f'audit_key = "{self.audit_key}"' if self.audit_key else ""
        g = SIM_GEOMETRY
        self.config_path.write_text(f"""\
[journal]
path = "{self.journal_path}"
{key}

[api]
socket = "{self.socket}"
{tokens}

[robot]
transport = "tcp"
host = "127.0.0.1"
port = {self.sim.port}
timeout_s = {o.timeout_s}
watchdog_ms = {o.watchdog_ms}
outputs = {self.sim.outputs}
retry_backoff_s = {o.retry_backoff_s}
link_fault_after_s = {o.link_fault_after_s}

[printer]
url = "{self.sim.printer_link}"
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
audit_mismatch = "{o.audit_mismatch}"

[log]
level = "{o.log_level}"
format = "json"
{o.extra_config}
""")
        return self.config_path

    def _environ(self) -> dict[str, str]:
        env = {**os.environ, **self.options.env}
        env.pop("NOTIFY_SOCKET", None)
        if self.options.profile is not None:
            env["DISPENSERD_PROFILE"] = str(self.options.profile)
        return env

    def _command(self) -> list[str]:
        if self.options.profile is not None:
            return [str(BIN / "python"), "-m", "dispenser.testing.profiled"]
        return [str(BIN / "dispenserd")]

    def profile_start(self) -> None:
        """Start profiling (``DaemonOptions.profile``): what was collected is dropped."""
        assert self.options.profile is not None and self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    def profile_dump(self, timeout: float = 30.0) -> Path:
        """Stop profiling and wait for the statistics file."""
        path = self.options.profile
        assert path is not None and self.proc is not None
        path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > 0:
                time.sleep(0.2)  # written in one go, but let it finish
                return path
            time.sleep(0.05)
        raise RuntimeError("dispenserd wrote no profile")

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) of the event loop's thread (``main``) and of all
        other threads together (``others``: the printer's exchanges, SQLite checkpoints)."""
        out = {"main": 0.0, "others": 0.0}
        if self.pid is None:
            return out
        ticks = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            key = "main" if task.name == str(self.pid) else "others"
            out[key] += (int(fields[11]) + int(fields[12])) / ticks
        return out
        ticks = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        return out

    # ------------------------------------------------------------------ process
    def start(self, timeout: float = 30.0) -> float:
        """Start it; return the seconds until its API answered ``system.ping``."""
        config = self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        t0 = time.monotonic()
        self.proc = subprocess.Popen([*self._command(), "--config", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     env=self._environ(), cwd=self.workdir)
        log.close()
        self.starts += 1
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dispenserd exited at start ({self.proc.returncode}):\n"
                                   + self.log_tail())
            if self.socket.exists() and self._pings():
                return time.monotonic() - t0
            time.sleep(0.01)
        raise RuntimeError("dispenserd did not answer in time:\n" + self.log_tail())

    def _pings(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2.0)
                s.connect(str(self.socket))
                s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"system.ping"}\n')
                reply = s.makefile("rb").readline()
            return bool(json.loads(reply).get("result", {}).get("pong"))
        except (OSError, ValueError):
            return False

    def run_to_exit(self, timeout: float = 30.0) -> tuple[int, str]:
        """Start it expecting it to stop by itself (a start-up problem): exit status and
        everything it wrote."""
        config = self.write_config()
        ran = subprocess.run([str(BIN / "dispenserd"), "--config", str(config)],
                             capture_output=True, text=True, env=self._environ(),
                             cwd=self.workdir, timeout=timeout)
        return ran.returncode, ran.stdout + ran.stderr

    def kill(self) -> None:
        """SIGKILL: no shutdown code of the daemon runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the clean stop; the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return int(self.proc.returncode)

    # ------------------------------------------------------------------ logs and figures
    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def errors(self, limit: int = 5) -> list[str]:
        """The last error lines of its log (why it stopped, say)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        errors = [ln[:400] for ln in text.splitlines() if '"level": "error"' in ln
                  and "transaction_id" not in ln]
        return errors[-limit:]

    def cpu_seconds(self) -> float | None:
        """User and system CPU time of the process so far."""
        if self.pid is None:
            return None
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_kib(self) -> tuple[int, int] | None:
        """(VmRSS, VmHWM) in KiB: now and the peak."""
        if self.pid is None:
            return None
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))

    # ------------------------------------------------------------------ API
    async def client(self, role: str | None = "staff") -> ApiClient:
        """A connection logged in as ``role`` (None: no login)."""
        return await ApiClient.connect(str(self.socket), token=TOKENS[role] if role else None)

    async def wait_ready(self, client: ApiClient, timeout: float = 60.0) -> None:
        """Until ``machine.status`` says ``ready``."""
        async def ready() -> bool:
            st = await client.call("machine.status")
            return bool(st["state"] == "ready")
        await wait_for(ready, timeout, interval=0.02, what="machine ready")
