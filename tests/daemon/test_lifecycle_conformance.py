"""The core's recorded state changes stay inside the lifecycle tables.

A working day in miniature (merges, a hold released, a hold rejected, a cancel, a recall
that leaves a shipment short, picking to the end) is run through the real daemon against
the in-process simulator; every state change of a shipment in the audit trail must be a
row of ``SHIPMENT_TABLE`` and every change of an order one of ``ORDER_TABLE``."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from dispenser.core.lifecycles import ORDER_LIFECYCLE, PACK_LIFECYCLE, SHIPMENT_LIFECYCLE
from dispenser.daemon.app import Daemon
from dispenser.daemon.demo import scan_of
from dispenser.testing import drugs, order
from dispenser.testing.inprocess import OSYS, STAFF, close, config_for, run_cycles
from firmware_sim import Simulator


def _lifecycle(subject: str) -> Any:
    if subject.startswith("SH-"):
        return SHIPMENT_LIFECYCLE
    if subject.startswith("pack:"):
        return PACK_LIFECYCLE
    return ORDER_LIFECYCLE


async def test_recorded_changes_follow_the_tables(tmp_path: Path, sim: Simulator) -> None:
    daemon = Daemon(config_for(tmp_path, sim))
    d = daemon.dispensary
    a, b, c = (r["drug_code"] for r in drugs()["robot"][70:73])
    exp = (date.today() + timedelta(days=200)).isoformat()
    packs = [{"gtin": a, "batch": "A1", "expiry": exp, "serial": f"LA{i}"} for i in range(4)]
    packs += [{"gtin": b, "batch": "B1", "expiry": exp, "serial": f"LB{i}"} for i in range(3)]
    packs += [{"gtin": c, "batch": "C1", "expiry": exp, "serial": f"LC{i}"} for i in range(2)]
    sim.put_input(packs)
    loads = [daemon.scheduler.request_load(scan_of(p), STAFF, wait=True) for p in packs]
    await run_cycles(daemon, lambda: all(f.done() for f in loads))
    daemon.machine.fire("pause")  # let the orders pile up first
    d.submit(order("L1", "PL1", [(a, 1)]), OSYS)
    d.submit(order("L2", "PL1", [(b, 1)]), OSYS)                    # merges with L1
    d.submit(order("L3", "PL3", [(a, 1)], diagnoses=("I10",)), OSYS)  # held
    d.submit(order("L4", "PL4", [(b, 1)], diagnoses=("I10",)), OSYS)  # held
    d.submit(order("L5", "PL5", [(c, 1)]), OSYS)
    d.submit(order("L6", "PL6", [(c, 2)]), OSYS)                    # short after the recall
    d.release("L3", STAFF, "checked")
    d.reject("L4", STAFF, "not eligible")
    d.cancel("L5", OSYS, "patient request")
    d.form_shipments()
    d.quarantine_batch(c, "C1", STAFF, "recall")
    daemon.machine.fire("resume")
    await run_cycles(daemon, lambda: all(
        d.get_order(o).state.value in ("completed", "held", "rejected", "cancelled")
        for o in ("L1", "L2", "L3", "L4", "L5", "L6")))
    states = {o: d.get_order(o).state.value for o in ("L1", "L2", "L3", "L4", "L5", "L6")}
    assert states == {"L1": "completed", "L2": "completed", "L3": "completed",
                      "L4": "rejected", "L5": "cancelled", "L6": "held"}
    seen: dict[str, int] = {}
    for subject, before, after in daemon.journal.query(
            "SELECT subject, before, after FROM audit WHERE before IS NOT NULL"):
        b_state = json.loads(before).get("state")
        a = json.loads(after) if after else {}
        if not b_state or "state" not in a:
            continue
        lc = _lifecycle(subject)
        # Every recorded change names its trigger, and the table holds it.
        state = type(next(iter(lc.created)))
        assert lc.next_state(state(b_state), a["trigger"]).value == a["state"], (
            subject, b_state, a)
        seen[lc.what] = seen.get(lc.what, 0) + 1
    assert seen["order"] >= 8 and seen["shipment"] >= 8 and seen["pack"] >= 9, seen
    await close(daemon)
