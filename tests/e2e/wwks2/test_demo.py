"""The demo with ``--wwks2`` (what ``scripts/demo --wwks2`` runs): pharmacy software on the
same machine connects on 127.0.0.1:6050, sees the demo stock and has a pack dispensed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dispenser.testing import wait_for
from dispenser.testing.ims_client import ImsClient
from dispenser.testing.wwks2 import criteria, output, packs_of, status_of

DISPENSERD = Path(sys.executable).parent / "dispenserd"
ROOT = Path(__file__).resolve().parents[3]
PORT = 6050


def _port_free() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", PORT))
        except OSError:
            return False
    return True


async def test_demo_serves_wwks2_on_6050(tmp_path: Path) -> None:
    if not _port_free():
        if os.environ.get("CI") == "true":
            raise AssertionError(f"port {PORT} is in use; the demo test needs it")
        pytest.skip(f"port {PORT} is in use by another process; the demo listens there")
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    # As scripts/demo runs it: the repository's config/ beside a var/ of its own.
    (tmp_path / "config").symlink_to(ROOT / "config")
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115 - handed to the child
    demo = subprocess.Popen([str(DISPENSERD), "--simulate", "--wwks2", "--instant",
                             "--demo-orders", "2"], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    log.close()
    ims: ImsClient | None = None
    try:
        async def connected() -> ImsClient | None:
            try:
                return await ImsClient.connect(PORT)
            except OSError:
                return None
        ims = await wait_for(connected, 30, what="the demo listening on 6050")
        hello = await ims.hello()
        assert hello.lead.find("Subscriber").get("Type") == "Robot"  # type: ignore[union-attr]

        async def stocked() -> list[tuple[str, str]]:
            assert ims is not None
            stock = await ims.request("StockInfoRequest", IncludePacks="False")
            return [(a.get("Id") or "", a.get("Quantity") or "0")
                    for a in stock.lead.iter("Article")]
        articles = await wait_for(stocked, 60, interval=0.5, what="demo stock loaded")
        article = articles[0][0]
        assert status_of(await output(ims, "1001", criteria(article, 1))) == "Queued"
        done = await ims.expect("OutputMessage", "1001", timeout=60)
        assert status_of(done) == "Completed"
        assert [p["article"] for p in packs_of(done)] == [article]
    finally:
        if ims is not None:
            await ims.close()
        demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(45)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
        await asyncio.sleep(0)
    assert code == 0, (tmp_path / "demo.log").read_text()[-3000:]
