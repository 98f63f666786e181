"""audit verify exits 5 when the trail was altered behind the daemon's back."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

from dispenser.testing import Daemon, Sim, wait_until
from dispenser.testing.cli import Machine


def test_altered_audit_trail_exits_5() -> None:
    # A machine of its own: this one's journal is deliberately damaged.
    workdir = Path(tempfile.mkdtemp(prefix="dctl", dir="/tmp"))
    sim = Sim(workdir, instant=True)
    sim.start()
    daemon = Daemon(workdir, sim)
    try:
        daemon.start()
        machine = Machine(sim, daemon)
        wait_until(lambda: machine.ctl("pause").code == 0, "a first audited action")
        assert machine.ctl("audit", "verify", role="technician").code == 0

        with sqlite3.connect(workdir / "journal.sqlite", timeout=10) as db:
            db.execute("DROP TRIGGER audit_no_update")  # what only an intruder would do
            db.execute("UPDATE audit SET actor = 'someone-else' WHERE id = "
                       "(SELECT max(id) FROM audit)")
        ran = machine.ctl("audit", "verify", role="technician")
        assert ran.code == 5, ran
        assert "AUDIT TRAIL CHECK FAILED" in ran.out
        as_json = machine.ctl("audit", "verify", "--json", role="technician")
        assert as_json.code == 5 and '"ok":false' in as_json.out
    finally:
        try:
            daemon.stop()
        finally:
            sim.stop()
            shutil.rmtree(workdir, ignore_errors=True)
