"""Subprocess for the crash test: writes orders and loads packs in a loop, printing each
id only after the call that stored it has returned (committed)."""

from __future__ import annotations

import sys
from pathlib import Path

from dispenser.core import Dispensary
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.journal import Journal
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    LOADER,
    FakeClock,
    make_order,
    robot_drugs,
    scan,
)


def main(path: str, start: int) -> None:
    d = Dispensary(Journal(Path(path)), DEMO_FORMULARY, Policy(), SlotGeometry(2, 10, 50, 10),
                   FakeClock())
    drugs = robot_drugs()
    i = start
    while True:
        drug = drugs[i % len(drugs)]
        p = d.begin_load(scan(drug, serial=f"K{i:08d}"), LOADER)
        d.confirm_stored(p.pack_id)
        print(f"pack {p.pack_id}", flush=True)
        o = d.submit(make_order([(drug.drug_code, 1)], order_id=f"SO-KILL-{i:06d}",
                                patient=f"P{i}"), API)
        print(f"order {o.order_id}", flush=True)
        if i % 5 == 0:
            d.clock.advance(400)  # type: ignore[attr-defined]
            for sh in d.form_shipments():
                print(f"shipment {sh.shipment_id}", flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
