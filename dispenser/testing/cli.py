"""Running the real ``dispenserctl`` against a running machine, as a user does: in a
clean environment, or on a pseudo-terminal of a given size."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import tempfile
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispenser.testing import TOKENS, Daemon, Sim

CTL = Path(sys.executable).parent / "dispenserctl"


@dataclass
class Ran:
    code: int
    out: str
    err: str


@dataclass
class Machine:
    """The running pair, and ``ctl`` to run dispenserctl against it."""

    sim: Sim
    daemon: Daemon

    def ctl(self, *args: str, role: str | None = "staff", stdin: str | None = None,
            env: dict[str, str] | None = None) -> Ran:
        environ = {"DISPENSER_SOCKET": str(self.daemon.socket)}
        if role is not None:
            environ["DISPENSER_TOKEN"] = TOKENS[role]
        return self.run_ctl(*args, stdin=stdin, env={**environ, **(env or {})})

    @staticmethod
    def run_ctl(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Ran:
        """dispenserctl as a user runs it, in a clean environment (no terminal: no colour)."""
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith("DISPENSER_") and k != "COLUMNS"}
        environ.update(env or {})
        done = subprocess.run([str(CTL), *args], input=stdin, capture_output=True, text=True,
                              env=environ, timeout=60)
        return Ran(done.returncode, done.stdout, done.stderr)

    def ctl_tty(self, *args: str, columns: int, lines: int, role: str | None = "staff") -> Ran:
        """dispenserctl as a person sees it in a terminal of ``columns`` x ``lines``."""
        environ = {"DISPENSER_SOCKET": str(self.daemon.socket)}
        if role is not None:
            environ["DISPENSER_TOKEN"] = TOKENS[role]
        return run_in_terminal(*args, columns=columns, lines=lines, env=environ)

    def sim_call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return asyncio.run(self.sim.call(method, params))


_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(*args: str, columns: int, lines: int, env: dict[str, str]) -> Ran:
    """dispenserctl with its stdout on a real pseudo-terminal of the given size (as an
    xterm: colours are sent, and stripped here); ``out`` has the text as the terminal shows
    it, lines ending in ``\n``."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("DISPENSER_") and k not in ("COLUMNS", "LINES")}
    environ.update({"TERM": "xterm-256color", **env})
    environ.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(CTL), *args], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=err, env=environ)
        os.close(slave)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        code = proc.wait(60)
        err.seek(0)
        stderr = err.read().decode()
    out = _CSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    return Ran(code, out, stderr)


