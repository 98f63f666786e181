"""The whole machine on one host: ``dispenser-sim`` and ``dispenserd`` as separate
processes sharing a working directory.

::

    async with Stack(Path(tmp), instant=True) as stack:      # starts both, waits for ready
        orders = await stack.client("order_system")          # ApiClient per role
        await stack.sim.put_input([pack, ...])                # the simulator's control socket
        await stack.sim.inject("jam", after_picks=0)
        stack.kill_daemon(); await stack.start_daemon()       # SIGKILL and restart
        report = await stack.check_invariant()                # raises InvariantViolation

Everything goes through the processes' public interfaces: the daemon's socket API and the
simulator's JSON-RPC control socket. The working directory holds the generated config,
the journal, the simulator's state file and both processes' logs (kept for a post-mortem).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from dispenser.api.client import ApiClient
from dispenser.testing.daemon import TOKENS, Daemon, DaemonOptions
from dispenser.testing.invariant import InvariantReport, check_invariant
from dispenser.testing.sim import Sim
from dispenser.testing.waiting import wait_for

__all__ = ["Stack"]


class Stack:
    """A ``Sim`` and a ``Daemon`` (``sim`` and ``daemon``) with their API clients."""

    def __init__(self, workdir: Path, *, instant: bool = True, speed: float = 1.0,
                 outputs: int = 4, daemon: DaemonOptions | None = None,
                 sim_state: bool = True) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sim = Sim(self.workdir, instant=instant, speed=speed, outputs=outputs,
                       state=sim_state)
        self.options = daemon or DaemonOptions()
        self.daemon = Daemon(self.workdir, self.sim, options=self.options)
        self._clients: list[ApiClient] = []

    # paths and figures
    @property
    def journal_path(self) -> Path:
        return self.daemon.journal_path

    @property
    def daemon_log(self) -> Path:
        return self.daemon.log_path

    @property
    def daemon_starts(self) -> int:
        return self.daemon.starts

    # lifecycle
    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, ready_timeout: float = 60.0) -> None:
        """Start the simulator, then the daemon; return when the machine is ready."""
        self.sim.start()
        await self.start_daemon()
        await self.wait_ready(timeout=ready_timeout)

    async def stop(self) -> None:
        await self.close_clients()
        await self.sim.close()
        self.daemon.stop()
        self.sim.stop()

    async def start_daemon(self, timeout: float = 30.0) -> float:
        """Start ``dispenserd`` (off the event loop: other tasks of a campaign go on);
        the seconds until its API answered."""
        return await asyncio.to_thread(self.daemon.start, timeout)

    def kill_daemon(self) -> None:
        self.daemon.kill()

    def stop_daemon(self) -> int:
        return self.daemon.stop()

    async def restart_sim(self, *, instant: bool, speed: float = 1.0) -> None:
        """Power-cycle the robot at another speed: daemon stopped, simulator stopped (it
        saves its state file), started again from it, daemon started; returns when ready.
        Loading stock instantly and then dispensing at realistic speed uses this."""
        await self.close_clients()
        await self.sim.close()
        self.daemon.stop()
        self.sim.stop()
        self.sim.instant, self.sim.speed = instant, speed
        self.sim.start()
        await self.start_daemon()
        await self.wait_ready()

    # clients
    async def client(self, role: str | None = "staff", *, keep: bool = True) -> ApiClient:
        """A logged-in API connection; kept ones are closed by :meth:`stop`."""
        c = await ApiClient.connect(str(self.daemon.socket),
                                    token=TOKENS[role] if role else None)
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
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        c = await self.client("staff", keep=False)
        try:
            async def ready() -> bool:
                st = await c.call("machine.status")
                return bool(st["state"] == "ready")
            await wait_for(ready, timeout, interval=0.02, what="machine ready")
        finally:
            await c.close()
        return loop.time() - t0

    async def check_invariant(self, *, require_final: bool = True,
                              raise_on_problem: bool = True) -> InvariantReport:
        """The ledger invariant (``dispenser.testing.invariant``)."""
        c = await self.client("staff", keep=False)
        try:
            return await check_invariant(c, self.sim, require_final=require_final,
                                         raise_on_problem=raise_on_problem)
        finally:
            await c.close()
