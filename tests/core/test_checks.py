"""Safety checks: each hold reason, each policy action, release and reject."""

from __future__ import annotations

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import InvalidState
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState
from dispenser.testing.core import (
    API,
    PHARMACIST,
    Factory,
    FakeClock,
    dispense_one,
    make_order,
    robot_drugs,
)


def codes(view: object) -> list[str]:
    return [h.code for h in view.holds]  # type: ignore[attr-defined]


def test_not_eligible_is_held_by_default(disp: Dispensary) -> None:
    v = disp.submit(make_order(diagnoses=["I10"]), API)
    assert v.state is OrderState.HELD and codes(v) == ["not_eligible"]
    assert v.shipment_id is None


def test_programme_diagnosis_prefixes(disp: Dispensary) -> None:
    for dx in (["E10.9"], ["E14"], ["I10", "E13.2"]):
        assert disp.submit(make_order(diagnoses=dx, patient=dx[-1]), API).holds == []


def test_prescription_older_than_90_days_is_held(disp: Dispensary) -> None:
    assert disp.submit(make_order(issued_on="2026-08-25"), API).holds == []  # 90 days
    v = disp.submit(make_order(issued_on="2026-08-24", patient="P2"), API)
    assert codes(v) == ["prescription_expired"]
    v = disp.submit(make_order(issued_on="2026-12-01", patient="P3"), API)
    assert codes(v) == ["prescription_expired"]  # issued in the future


def test_quantity_limits(disp: Dispensary) -> None:
    code = robot_drugs()[0].drug_code
    assert codes(disp.submit(make_order([(code, 13)]), API)) == ["quantity_limit"]
    v = disp.submit(make_order([(code, 1)], days_supply=120, patient="P9"), API)
    assert codes(v) == ["quantity_limit"]


def test_duplicate_dispensing_after_dispensed(make: Factory, clock: FakeClock) -> None:
    d = make()
    drug = robot_drugs()[0]
    dispense_one(d, drug)
    patient = d.list_orders()[0].patient_id
    v = d.submit(make_order([(drug.drug_code, 1)], patient=patient), API)
    assert codes(v) == ["duplicate_dispensing"]
    assert v.holds[0].drug_code == drug.drug_code
    clock.advance(24 * 3600 * 24)  # 24 days later: inside the 7-day refill grace
    # (delivered on the day after: a window still ahead, not the first order's)
    v = d.submit(make_order([(drug.drug_code, 1)], patient=patient,
                            window_start="2026-12-18T09:00:00+08:00"), API)
    assert v.holds == []


def test_duplicate_dispensing_of_open_order(disp: Dispensary) -> None:
    code = robot_drugs()[0].drug_code
    disp.submit(make_order([(code, 1)]), API)
    v = disp.submit(make_order([(code, 1)]), API)
    assert "duplicate_dispensing" in codes(v)


def test_duplicate_prescription(make: Factory) -> None:
    d = make(policy=Policy(duplicate_dispensing="off"))
    code = robot_drugs()[0].drug_code
    d.submit(make_order([(code, 1)], rx="RX-1"), API)
    v = d.submit(make_order([(code, 1)], rx="RX-1"), API)
    assert codes(v) == ["duplicate_prescription"]
    other = robot_drugs()[1].drug_code
    assert d.submit(make_order([(other, 1)], rx="RX-1"), API).holds == []


def test_reject_action_refuses_and_stores(make: Factory) -> None:
    d = make(policy=Policy(eligibility="reject"))
    v = d.submit(make_order(diagnoses=["I10"]), API)
    assert v.state is OrderState.REJECTED and codes(v) == ["not_eligible"]
    assert d.get_order(v.order_id).state is OrderState.REJECTED


def test_off_action_skips_check(make: Factory) -> None:
    d = make(policy=Policy(eligibility="off", prescription_age="off"))
    v = d.submit(make_order(diagnoses=["I10"], issued_on="2020-01-01"), API)
    assert v.state is OrderState.RECEIVED


def test_every_check_decision_is_audited(disp: Dispensary) -> None:
    v = disp.submit(make_order(diagnoses=["I10"]), API)
    row = disp.journal.query_one("SELECT actor, role, action, after FROM audit WHERE subject=?",
                                 (v.order_id,))
    assert row[:3] == ("shop", "api", "order.received")
    assert '"check":"not_eligible"' in row[3] and '"passed":false' in row[3]
    assert "王建国" not in row[3] and "13800000000" not in row[3]


def test_release_and_reject(disp: Dispensary) -> None:
    a = disp.submit(make_order(diagnoses=["I10"]), API)
    b = disp.submit(make_order(diagnoses=["I10"], patient="P2"), API)
    released = disp.release(a.order_id, PHARMACIST, "E11 confirmed by phone with clinic")
    assert released.state is OrderState.RECEIVED and released.shipment_id
    rejected = disp.reject(b.order_id, PHARMACIST, "not in programme")
    assert rejected.state is OrderState.REJECTED
    with pytest.raises(InvalidState):
        disp.release(b.order_id, PHARMACIST, "again")
    with pytest.raises(InvalidState):
        disp.reject(a.order_id, PHARMACIST, "not held")
    actions = [r[0] for r in disp.journal.query(
        "SELECT action FROM audit WHERE actor='li.pharm' ORDER BY id")]
    assert actions == ["order.released", "order.rejected"]
    reason = disp.journal.query_one("SELECT after FROM audit WHERE action='order.released'")[0]
    assert "confirmed by phone" in reason


def window(start: str, hours: int = 3) -> dict[str, object]:
    """An order whose delivery window starts at ``start`` (ISO, +08:00) and lasts ``hours``."""
    return make_order(window_start=start, patient=f"PW{start[11:13]}{hours}")


def test_delivery_window_already_over_is_held(disp: Dispensary) -> None:
    # The clock reads 2026-11-23 09:00 +08:00.
    over = window("2026-11-23T05:00:00+08:00")  # ended 08:00
    v = disp.submit(over, API)
    assert v.state is OrderState.HELD and codes(v) == ["delivery_window_passed"]
    assert v.shipment_id is None
    assert "2026-11-23T08:00:00+08:00" in v.holds[0].detail
    ends_now = disp.submit(window("2026-11-23T06:00:00+08:00"), API)
    assert codes(ends_now) == ["delivery_window_passed"]
    running = disp.submit(window("2026-11-23T07:00:00+08:00"), API)  # until 10:00
    assert running.holds == [] and running.state is OrderState.RECEIVED
    # A pharmacist who arranges another delivery releases it.
    released = disp.release(v.order_id, PHARMACIST, "courier booked for tomorrow")
    assert released.state is OrderState.RECEIVED


@pytest.mark.parametrize(("action", "state"), [("reject", OrderState.REJECTED),
                                               ("off", OrderState.RECEIVED)])
def test_delivery_window_policy(make: Factory, action: str, state: OrderState) -> None:
    d = make(policy=Policy(delivery_window=action))  # type: ignore[arg-type]
    v = d.submit(window("2026-11-22T09:00:00+08:00"), API)
    assert v.state is state
    assert codes(v) == ([] if action == "off" else ["delivery_window_passed"])
