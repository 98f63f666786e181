"""The daemon's WWKS2 backend against the in-process simulator, called directly: an
OutputRequest Id stays the task's while it is kept (task_retention_days), then it may be
used again; outputs are refused while the machine is not ready; the outcome of a task
finished while nobody listened waits for its subscriber."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from dispenser.config import parse_config
from dispenser.daemon.app import Daemon
from dispenser.daemon.demo import scan_of
from dispenser.testing import FORMULARY, drugs
from dispenser.testing.inprocess import STAFF, close, run_cycles
from dispenser.wwks2.backend import OutputCriterion, OutputTask, TaskKey
from firmware_sim import Simulator

CODE = drugs()["robot"][55]["drug_code"]


def _daemon(tmp_path: Path, sim: Simulator, now: list[datetime]) -> Daemon:
    config = parse_config({
        "journal": {"path": str(tmp_path / "journal.sqlite")},
        "api": {"socket": str(tmp_path / "api.sock")},
        "robot": {"port": sim.tcp_port, "timeout_s": 0.5, "watchdog_ms": 60000},
        "printer": {"url": sim.printer_device, "timeout_s": 0.5},
        "formulary": {"path": str(FORMULARY)},
        "stock": {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10},
        "wwks2": {"enabled": True, "port": 0},
    })
    return Daemon(config, clock=lambda: now[0])


async def test_request_ids_are_kept_for_the_retention_then_free(tmp_path: Path,
                                                                sim: Simulator) -> None:
    now = [datetime.now(UTC)]
    daemon = _daemon(tmp_path, sim, now)
    backend = daemon.wwks2_backend
    assert backend is not None
    packs = [{"gtin": CODE, "batch": "R1", "expiry": (date.today() + timedelta(days=300))
              .isoformat(), "serial": f"RT{i}"} for i in range(3)]
    sim.put_input(packs)
    loads = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await run_cycles(daemon, lambda: all(f.done() for f in loads))
    key = TaskKey(100, "5")
    task = OutputTask(key=key, actor="wwks2:100@127.0.0.1", priority="Normal",
                      destination=1, output_point=1,
                      criteria=(OutputCriterion(quantity=1, article_id=CODE),),
                      fingerprint="first")
    daemon.machine.fire("pause")
    assert (await backend.create_output(task)).status == "Rejected"  # not ready
    daemon.machine.fire("resume")
    assert (await backend.create_output(task)).status == "Queued"
    assert (await backend.create_output(task)).status == "Queued"  # the same task

    async def status() -> str:
        return (await backend.output_info(key, False)).status
    await run_cycles(daemon, lambda: daemon.dispensary.find_task(
        "wwks2_output", "100/5").state.value == "completed")  # type: ignore[union-attr]
    assert await status() == "Completed"
    # Nobody listened: the outcome waits for subscriber 100 (and only for it).
    pending = await backend.pending_outcomes(100)
    assert [(o.key, o.status, len(o.packs)) for o in pending] == [(key, "Completed", 1)]
    assert await backend.pending_outcomes(101) == []
    await backend.outcomes_delivered([key])
    assert await backend.pending_outcomes(100) == []

    other = replace(task, fingerprint="second")
    decision = await backend.create_output(other)
    assert decision.status == "Rejected" and "in use" in decision.text
    now[0] += timedelta(days=8)  # past task_retention_days (7)
    assert (await backend.create_output(other)).status == "Queued"
    tasks = daemon.dispensary.list_tasks()
    assert [t.fingerprint for t in tasks] == ["first", "second"]
    await close(daemon)
