"""dispenserd as systemd runs it: a socket handed over by socket activation, READY once the
API answers, STATUS on machine-state changes, WATCHDOG from the working loop, STOPPING on
SIGTERM; events for subscribers; no patient data in the log."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from dispenser.api.client import ApiClient
from dispenser.testing import BIN, TOKENS, Daemon, Sim, drugs, load_packs, order, pack, wait_for

# Runs dispenserd with the given listening socket as fd 3 and LISTEN_PID = its own pid
# (exec keeps the pid), as systemd does.
LAUNCHER = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.argv[2], sys.argv[2:])
"""


def _notifications(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_socket_activation_notify_watchdog_events(workdir: Path, sim: Sim) -> None:
    daemon = Daemon(workdir, sim)
    config = daemon.write_config()
    notify_path = workdir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    api_path = workdir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(api_path))
    listener.listen(16)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    log = open(daemon.log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(listener.fileno()), str(BIN / "dispenserd"),
         "--config", str(config)],
        pass_fds=(listener.fileno(),), env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    listener.close()
    try:
        got: list[str] = []
        deadline = time.monotonic() + 20
        while not any("READY=1" in n for n in got) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            got += _notifications(notify)
        assert any("READY=1" in n for n in got), daemon.log_tail()
        assert not daemon.socket.exists(), "bound the configured socket despite activation"
        staff = await ApiClient.connect(str(api_path), token=TOKENS["staff"])
        events: list[dict[str, object]] = []

        async def collect() -> None:
            async for e in staff.subscribe(["order", "shipment", "machine"]):
                events.append(e)
        listener_task = asyncio.create_task(collect())
        watcher = await ApiClient.connect(str(api_path), token=TOKENS["staff"])
        await daemon.wait_ready(watcher)
        code = drugs()["robot"][30]["drug_code"]
        await load_packs(sim, watcher, [pack(code, "N1", date.today() + timedelta(days=90),
                                             "N1-1")])
        await watcher.call("order.submit", {"order": order("N1", "PN1", [(code, 1)])})

        async def completed() -> bool:
            return any(e.get("topic") == "shipment" and e.get("state") == "completed"
                       for e in events)
        await wait_for(completed, 20, what="shipment completed event")
        assert any(e.get("topic") == "order" and e.get("order_id") == "N1" for e in events)
        text = repr(events)
        assert "Test Patient" not in text and "Test Street" not in text
        got += _notifications(notify)
        assert any(n.startswith("STATUS=") for n in got)
        await asyncio.sleep(0.5)
        got += _notifications(notify)
        assert sum("WATCHDOG=1" in n for n in got) >= 2
        listener_task.cancel()
        await staff.close()
        await watcher.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        got += _notifications(notify)
        assert any("STOPPING=1" in n for n in got)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    logged = daemon.log_path.read_text()
    assert "dispenserd stopped" in logged
    for secret in ("Test Patient", "Test Street", "5550000"):
        assert secret not in logged, f"patient data in the log: {secret}"
