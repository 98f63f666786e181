"""``dispenser-sim`` as a process, and a client of its JSON-RPC control socket
(docs/simulator.md): the physical truth of a test or campaign (``ledger``) and the hands
of a person at the machine (``put_input``, ``inject``, ``clear``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BIN", "Sim"]

BIN = Path(sys.executable).parent


class Sim:
    """One simulated machine (robot on Modbus TCP, printer on a pty, control socket) in
    its own process, its files in ``workdir``. ``state``: keep the machine in a state file
    across restarts (a power cycle)."""

    def __init__(self, workdir: Path, *, instant: bool = True, speed: float = 1.0,
                 outputs: int = 4, state: bool = False, port: int = 0) -> None:
        self.workdir = Path(workdir)
        self.instant = instant
        self.speed = speed
        self.outputs = outputs
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = port  # the Modbus port; known once started (it listens on a free one)
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._conn_loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._ids = 0

    @property
    def control(self) -> Path:
        return self.workdir / "sim-control.sock"

    @property
    def printer_link(self) -> Path:
        return self.workdir / "printer"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dispenser-sim.log"

    @property
    def state_path(self) -> Path:
        return self.workdir / "sim-state.json"

    # ------------------------------------------------------------------ process
    def start(self) -> None:
        """Start it and wait until it says ready (the Modbus port is read from its
        output: it listens on a free one)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [str(BIN / "dispenser-sim"), "--tcp", "127.0.0.1:0",
                "--printer-link", str(self.printer_link), "--control", str(self.control),
                "--outputs", str(self.outputs)]
        args += ["--instant"] if self.instant else ["--speed", str(self.speed)]
        if self.state:
            args += ["--state", str(self.state_path)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"dispenser-sim exited at start; see {self.log_path}")
            m = re.search(r"modbus-tcp \S+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if line.strip().endswith("ready"):
                # Nothing reads stdout from now on: the simulator prints nothing more there.
                return
        raise RuntimeError("dispenser-sim did not become ready")

    def stop(self) -> None:
        """SIGTERM (it saves its state file, if it has one) and wait."""
        self._conn = None
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    # ------------------------------------------------------------------ control socket
    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One control call on a kept connection (made again when it broke, or when
        called from another event loop)."""
        loop = asyncio.get_running_loop()
        if self._conn_loop is not loop:
            self._conn, self._conn_loop, self._lock = None, loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = await asyncio.open_unix_connection(
                            str(self.control), limit=256 * 1024 * 1024)
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
        """Close the control connection (the process goes on)."""
        if self._conn is not None:
            _, writer = self._conn
            self._conn = None
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                await writer.wait_closed()

    async def ledger(self) -> dict[str, Any]:
        """Where every pack physically is (slots, input, outputs, totes, dropped ...)."""
        result: dict[str, Any] = await self.call("sim.ledger")
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("sim.status")
        return result

    async def put_input(self, packs: list[dict[str, str]]) -> int:
        """Put packs at the input point, as staff do; how many lie there now."""
        result = await self.call("sim.put_input", {"packs": packs})
        return int(result["input_count"])

    async def take_input(self, count: int | None = 1) -> list[dict[str, Any]]:
        """A person takes the first ``count`` packs (None: all) off the input point."""
        result = await self.call("sim.take_input", {"count": count})
        return list(result["packs"])

    async def replace_board(self) -> dict[str, Any]:
        """The robot's controller board is replaced (packs stay, protocol memory empty)."""
        result: dict[str, Any] = await self.call("sim.replace_board")
        return result

    async def inject(self, fault: str, **params: Any) -> Any:
        return await self.call("sim.inject", {"fault": fault, **params})

    async def clear(self, fault: str | None = None) -> list[str]:
        result = await self.call("sim.clear", {"fault": fault} if fault else None)
        return list(result["cleared"])
