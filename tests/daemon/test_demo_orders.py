"""The demo's orders and packs are drawn from the day and their number, so a restart
recognises what it sent (issue 13): the first orders are the same whatever their number,
a pack's serial always names the same pack, and the LOAD order's drug is not stocked."""

from __future__ import annotations

from datetime import date

from dispenser.core.formulary import Formulary
from dispenser.daemon.demo import demo_orders, demo_packs, waiting_drug, waiting_order
from dispenser.testing import FORMULARY

DAY = date(2026, 12, 3)


def test_the_first_orders_do_not_depend_on_how_many() -> None:
    formulary = Formulary.load(FORMULARY)
    few, many = demo_orders(5, formulary, DAY), demo_orders(60, formulary, DAY)
    assert few == many[:5]
    assert [o["order_id"] for o in few] == [f"DEMO-20261203-{i:04d}" for i in range(1, 6)]
    assert demo_orders(5, formulary, date(2026, 12, 4))[0]["patient"]["id"] != \
        few[0]["patient"]["id"]  # another day, other patients: no duplicate dispensing
    # Some patients order again (their orders merge).
    patients = [o["patient"]["id"] for o in many]
    assert len(set(patients)) < len(patients)


def test_a_serial_always_names_the_same_pack() -> None:
    formulary = Formulary.load(FORMULARY)
    small = demo_packs(demo_orders(40, formulary, DAY), formulary, DAY)
    large = demo_packs(demo_orders(200, formulary, DAY), formulary, DAY)
    by_serial = {p["serial"]: p for p in large}
    assert len(by_serial) == len(large)  # serials are unique
    assert all(by_serial[p["serial"]] == p for p in small)


def test_the_load_order_waits_for_a_drug_the_demo_does_not_stock() -> None:
    formulary = Formulary.load(FORMULARY)
    packs = demo_packs(demo_orders(500, formulary, DAY), formulary, DAY)
    drug = waiting_drug(formulary)
    assert drug.robot and drug.drug_code not in {p["gtin"] for p in packs}
    load = waiting_order(formulary, DAY)
    assert load["order_id"] == "DEMO-20261203-LOAD"
    assert [i["drug_code"] for i in load["items"]] == [drug.drug_code]
