"""The staff tool against the daemon: dispenserctl loads stock, submits orders, releases a
hold and reads the status, all through the socket API; the ledger agrees."""

from __future__ import annotations

import json
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dispenser.testing import (
    BIN,
    TOKENS,
    Daemon,
    Sim,
    check_invariant,
    drugs,
    order,
    pack,
    scan,
    wait_for,
)

TODAY = date.today()


def ctl(daemon: Daemon, role: str, *args: str, stdin: str | None = None) -> tuple[int, Any]:
    proc = subprocess.run(
        [str(BIN / "dispenserctl"), "--socket", str(daemon.socket), "--token", TOKENS[role],
         "--json", *args], input=stdin, capture_output=True, text=True, timeout=120)
    out = proc.stdout.strip() or proc.stderr.strip()
    return proc.returncode, json.loads(out) if out.startswith("{") else out


async def test_dispenserctl_runs_a_small_day(daemon: Daemon, sim: Sim, workdir: Path) -> None:
    code = drugs()["robot"][60]["drug_code"]
    daemon.start()
    staff = await daemon.client("staff")
    try:
        await daemon.wait_ready(staff)
        packs = [pack(code, "C1", TODAY + timedelta(days=150), f"CLI-{i}") for i in range(4)]
        await sim.call("sim.put_input", {"packs": packs})
        rc, out = ctl(daemon, "staff", "load", "-",
                      stdin="".join(scan(p) + "\n" for p in packs))
        assert rc == 0, out
        orders = [order("T1", "PT1", [(code, 2)]),
                  order("T2", "PT2", [(code, 1)], diagnoses=("I10",))]
        path = workdir / "orders.jsonl"
        path.write_text("".join(json.dumps(o) + "\n" for o in orders))
        rc, out = ctl(daemon, "order_system", "submit", str(path))
        assert rc == 0 and out["accepted"] == 2, out
        rc, out = ctl(daemon, "order_system", "release", "T2", "--reason", "checked")
        assert rc == 1  # order_system may not release
        rc, out = ctl(daemon, "staff", "release", "T2", "--reason", "checked")
        assert rc == 0, out

        async def done() -> bool:
            states = [(await staff.call("order.get", {"order_id": o}))["state"]
                      for o in ("T1", "T2")]
            return states == ["completed", "completed"]
        await wait_for(done, 30, what="T1 and T2 completed")
        rc, status = ctl(daemon, "staff", "status")
        assert rc == 0 and status["state"] == "ready"
        await check_invariant(staff, sim, require_final=False)
    finally:
        await staff.close()
