"""Property tests of the pharmacist's desk (issue 10), against the real core and journal:

- ingredient overlap is found whatever product carries it;
- an imported record is counted once however often it is sent;
- fills never exceed a prescription's quantity across any sequence of submit, cancel and
  reject (and always equal what the orders still open or done have drawn);
- the check's answer does not depend on the order in which records and orders arrive.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.core.errors import DispenserError
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    HOSPITAL,
    INSTITUTIONS,
    PHARMACIST,
    Factory,
    make_order,
    prescription,
    rx_order,
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# Products by ingredient: every ingredient held by more than one product of the formulary.
BY_INGREDIENT: dict[str, list[str]] = defaultdict(list)
for _d in DEMO_FORMULARY.values():
    for _i in _d.ingredients:
        BY_INGREDIENT[_i].append(_d.drug_code)
SHARED = sorted(i for i, codes in BY_INGREDIENT.items() if len(codes) > 1)


def _record(rid: str, code: str, patient: str = "P1", on: str = "2026-11-20",
            days: int = 30) -> dict[str, Any]:
    return {"record_id": rid, "source": HOSPITAL, "patient_id": patient, "dispensed_on": on,
            "drug_code": code, "quantity": 1, "days_supply": days}


@SETTINGS
@given(ingredient=st.sampled_from(SHARED), data=st.data(),
       via=st.sampled_from(["record", "order"]))
def test_ingredient_overlap_is_found_whatever_product_carries_it(
        make_dispensary: Factory, ingredient: str, data: st.DataObject, via: str) -> None:
    codes = BY_INGREDIENT[ingredient]
    held_by = data.draw(st.sampled_from(codes), label="supply")
    ordered = data.draw(st.sampled_from(codes), label="ordered")
    d = make_dispensary(Policy(quantity_limit="off"))
    if via == "record":
        d.import_records([_record("R-1", held_by)], API)
    else:
        d.submit(make_order([(held_by, 1)], patient="P1"), API)
    v = d.submit(make_order([(ordered, 1)], patient="P1"), API)
    dup = [h for h in v.holds if h.code == "duplicate_dispensing"]
    assert any(dict(h.cause)["ingredient"] == ingredient for h in dup), v.holds
    # ... and never for a patient who has no such supply.
    w = d.submit(make_order([(ordered, 1)], patient="P2"), API)
    assert not [h for h in w.holds if h.code == "duplicate_dispensing"]


@SETTINGS
@given(sends=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=6),
       others=st.integers(min_value=0, max_value=3))
def test_an_imported_record_is_counted_once_however_often_it_is_sent(
        make_dispensary: Factory, sends: list[int], others: int) -> None:
    d = make_dispensary()
    code = BY_INGREDIENT["acarbose"][0]
    rec = _record("R-1", code)
    statuses = []
    for n, copies in enumerate(sends):
        batch = [rec] * copies + [_record(f"O-{n}-{k}", code, patient=f"Q{k}")
                                  for k in range(others)]
        statuses += [o.status for o in d.import_records(batch, API)[:copies]]
    assert statuses[0] == "imported" and set(statuses[1:]) <= {"unchanged"}
    assert d.journal.query_one("SELECT count(*) FROM dispensing_records WHERE patient_id "
                               "= 'P1'")[0] == 1
    record = d.patient_record("P1", PHARMACIST)
    assert record["history_total"] == 1 and len(record["history"]) == 1


OPS = st.lists(st.one_of(
    st.tuples(st.just("submit"), st.integers(min_value=1, max_value=4)),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("reject"), st.integers(min_value=0, max_value=20)),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=20)),
), max_size=25)


@SETTINGS
@given(quantity=st.integers(min_value=1, max_value=8), ops=OPS)
def test_fills_never_exceed_the_prescribed_quantity(make_dispensary: Factory, quantity: int,
                                                    ops: list[tuple[str, int]]) -> None:
    d = make_dispensary(Policy(duplicate_dispensing="off", quantity_limit="off"),
                        institutions=INSTITUTIONS)
    d.register_prescriptions([prescription(
        "RX-1", [{"atc": "A10BF01", "quantity": quantity, "days_supply": 90}])], API)
    code = BY_INGREDIENT["acarbose"][0]
    orders: list[str] = []
    for op, n in ops:
        try:
            if op == "submit":
                orders.append(d.submit(rx_order("RX-1", [(code, n)]), API).order_id)
            elif orders:
                oid = orders[n % len(orders)]
                {"cancel": d.cancel, "reject": d.reject, "release": d.release}[op](
                    oid, PHARMACIST, "property test")
        except DispenserError:
            pass  # wrong state: refused, nothing changed
        (filled,) = d.journal.query_one("SELECT filled FROM prescription_items")
        assert 0 <= filled <= quantity
        drawn = d.journal.query_one(
            "SELECT coalesce(sum(quantity), 0) FROM prescription_fills")[0]
        assert filled == drawn
        # What is drawn belongs to orders that are still going to be dispensed.
        gone = {OrderState.CANCELLED.value, OrderState.REJECTED.value}
        for (oid,) in d.journal.query("SELECT order_id FROM prescription_fills"):
            assert d.get_order(oid).state.value not in gone


@SETTINGS
@given(data=st.data())
def test_the_answer_does_not_depend_on_the_order_of_arrival(make_dispensary: Factory,
                                                            data: st.DataObject) -> None:
    codes = [BY_INGREDIENT[i][0] for i in ("acarbose", "metformin", "amlodipine",
                                             "sitagliptin")]
    events: list[tuple[str, Any]] = []
    for n in range(data.draw(st.integers(min_value=1, max_value=6), label="records")):
        code = data.draw(st.sampled_from(codes))
        patient = data.draw(st.sampled_from(["P1", "P2"]))
        on = data.draw(st.sampled_from(["2026-10-01", "2026-11-01", "2026-11-20"]))
        events.append(("record", _record(f"R-{n}", code, patient, on)))
    for n in range(data.draw(st.integers(min_value=0, max_value=3), label="orders")):
        events.append(("order", make_order([(data.draw(st.sampled_from(codes)), 1)],
                                           patient="P2", order_id=f"OTHER-{n}")))
    events.append(("prescription", prescription(
        "RX-P", [{"atc": "A10BF01", "quantity": 2, "days_supply": 60},
                 {"atc": "A10BA02", "quantity": 2, "days_supply": 60}], patient="P1")))
    shuffled = data.draw(st.permutations(events), label="arrival")
    probe_items = [(c, 1) for c in data.draw(
        st.lists(st.sampled_from(codes), min_size=1, max_size=3, unique=True))]

    def answer(arrival: list[tuple[str, Any]]) -> list[dict[str, object]]:
        d = make_dispensary(institutions=INSTITUTIONS)
        for kind, body in arrival:
            if kind == "record":
                d.import_records([body], API)
            elif kind == "order":
                d.submit(body, API)
            else:
                d.register_prescriptions([body], API)
        probe = rx_order("RX-P", probe_items, patient="P1", order_id="PROBE")
        return [h.as_dict() for h in d.submit(probe, API).holds]

    assert answer(events) == answer(list(shuffled))
