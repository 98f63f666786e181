"""The prescription index (``dispenser.core.prescription_index``) passes an order only when
the journal's answer would pass it too, with the same fills; it passes the common order
(so the check reads nothing); and it follows the journal through commits and rollbacks."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.core.orders import parse_order
from dispenser.core.policy import Policy
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    INSTITUTIONS,
    PHARMACIST,
    Factory,
    FakeClock,
    prescription,
    rx_order,
)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _first(ingredient: str) -> str:
    return next(d.drug_code for d in DEMO_FORMULARY.values()
                if d.ingredients == (ingredient,))


ACARBOSE, METFORMIN, AMLODIPINE = (_first(i) for i in ("acarbose", "metformin", "amlodipine"))
ITEMS = [{"atc": "A10BF01", "quantity": 3, "days_supply": 90},
         {"atc": "A10BA02", "quantity": 2, "days_supply": 60},
         {"atc": "A10BF01", "quantity": 1, "days_supply": 30}]


def _variant(data: st.DataObject, n: int) -> dict[str, Any]:
    """An order citing RX-1, as issued or with one thing changed."""
    items = data.draw(st.lists(st.tuples(st.sampled_from([ACARBOSE, METFORMIN, AMLODIPINE]),
                                         st.integers(min_value=1, max_value=4)),
                               min_size=1, max_size=3, unique_by=lambda t: t[0]),
                      label="items")
    order = rx_order("RX-1", items, order_id=f"SO-{n}")
    rx = order["prescription"]
    change = data.draw(st.sampled_from(["none", "none", "institution code", "institution case",
                                        "other institution", "prescriber spacing",
                                        "other prescriber", "issued", "diagnosis",
                                        "fewer diagnoses", "patient", "unregistered"]),
                       label="change")
    if change == "institution code":
        rx["institution"] = "TMUGH"
    elif change == "institution case":
        rx["institution"] = rx["institution"].upper()
    elif change == "other institution":
        rx["institution"] = "Tianjin Diabetes Centre"
    elif change == "prescriber spacing":
        rx["prescriber"] = " dr.  LI "
    elif change == "other prescriber":
        rx["prescriber"] = "Dr. Wang"
    elif change == "issued":
        rx["issued_on"] = "2026-11-02"
    elif change == "diagnosis":
        rx["diagnoses"] = ["E11.9", "E11.2"]
    elif change == "fewer diagnoses":
        rx["diagnoses"] = ["I10"]
    elif change == "patient":
        order["patient"]["id"] = "P999"
    elif change == "unregistered":
        rx["id"] = "RX-2"
    return order


@SETTINGS
@given(data=st.data())
def test_the_index_passes_exactly_what_the_journal_passes(make_dispensary: Factory,
                                                          data: st.DataObject) -> None:
    d = make_dispensary(Policy(duplicate_dispensing="off", quantity_limit="off"),
                        institutions=INSTITUTIONS)
    d.register_prescriptions([prescription("RX-1", ITEMS)], API)
    book = d.prescriptions
    for n in range(data.draw(st.integers(min_value=1, max_value=6), label="orders")):
        raw = _variant(data, n)
        order = parse_order(raw)
        journal = book.assess_in_journal(order)
        fast = book.index.passes(order)
        if fast is not None:
            assert journal.holds == [] and journal.fills == fast
        elif not journal.holds:
            # Nothing held: the index must have passed it (else it saves nothing).
            pytest.fail(f"the index sent a passing order to the journal: {raw}")
        # Accept some of them (fills drawn), cancel some (fills given back).
        if data.draw(st.booleans(), label="submit"):
            v = d.submit(raw, API)
            if data.draw(st.booleans(), label="cancel"):
                d.cancel(v.order_id, PHARMACIST, "property test")


def test_a_rolled_back_call_leaves_no_fills_in_memory(make: Factory) -> None:
    d = make(Policy(), institutions=INSTITUTIONS)
    d.register_prescriptions([prescription(
        "RX-1", [{"atc": "A10BF01", "quantity": 2, "days_supply": 60}])], API)
    order = parse_order(rx_order("RX-1", [(ACARBOSE, 2)]))
    assert d.prescriptions.index.passes(order) == [(1, 0, 2)]

    class Boom(Exception):
        pass

    with pytest.raises(Boom), d.journal.transaction():
        d.submit(rx_order("RX-1", [(ACARBOSE, 2)], order_id="SO-GONE"), API)
        assert d.prescriptions.index.passes(order) is None  # all 2 drawn, in the call
        raise Boom
    # The fills went with the call: the order passes again, in memory or by the journal.
    assert d.prescriptions.assess(order).fills == [(1, 0, 2)]
    v = d.submit(rx_order("RX-1", [(ACARBOSE, 2)], order_id="SO-KEPT"), API)
    assert not v.holds
    assert d.prescriptions.assess(order).holds[0].code == "prescription_exhausted"


def test_registered_then_cited_in_one_transaction(make: Factory) -> None:
    d = make(Policy(), institutions=INSTITUTIONS)
    with d.journal.transaction():
        d.register_prescriptions([prescription(
            "RX-1", [{"atc": "A10BF01", "quantity": 2, "days_supply": 60}])], API)
        v = d.submit(rx_order("RX-1", [(ACARBOSE, 1)]), API)
    assert not v.holds
    assert d.journal.query("SELECT filled FROM prescription_items") == [(1,)]


def test_prescriptions_past_the_age_limit_are_not_kept(make: Factory,
                                                       clock: FakeClock) -> None:
    d = make(Policy(), institutions=INSTITUTIONS)
    d.register_prescriptions([prescription("RX-OLD", ITEMS[:1], issued_on="2026-07-01"),
                              prescription("RX-NEW", ITEMS[:1])], API)
    assert len(d.prescriptions.index) == 1  # issued 2026-07-01: 145 days before today
    clock.advance(86400 * 120)
    d.prescriptions.assess(parse_order(rx_order("RX-NEW", [(ACARBOSE, 1)])))
    assert len(d.prescriptions.index) == 0
    d.journal.close()
    again = make(Policy(), institutions=INSTITUTIONS)  # the same journal, opened again
    assert len(again.prescriptions.index) == 0
    clock.advance(-86400 * 120)
    assert len(make(Policy(), institutions=INSTITUTIONS).prescriptions.index) == 1


def test_old_prescriptions_are_dropped_a_slice_at_a_time(make: Factory, clock: FakeClock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import dispenser.core.prescription_index as prescription_index

    d = make(Policy(), institutions=INSTITUTIONS)
    d.register_prescriptions([prescription(f"RX-{n}", ITEMS[:1], issued_on=f"2026-11-0{n + 1}")
                              for n in range(5)], API)
    assert len(d.prescriptions.index) == 5
    monkeypatch.setattr(prescription_index, "SWEEP", 2)
    # 91 days after 2026-11-03: RX-0, RX-1 and RX-2 are past the age limit.
    later = date(2026, 11, 3) + timedelta(days=92)
    sizes = []
    for _ in range(4):
        d.prescriptions.index.forget_older(later)
        sizes.append(len(d.prescriptions.index))
    assert sizes[0] > sizes[-1] == 2
    assert set(d.prescriptions.index._kept) == {"RX-3", "RX-4"}


_NAMES = iter(range(10**9))


@SETTINGS
@given(data=st.data())
def test_while_it_is_built_the_index_passes_only_what_the_journal_passes(
        make: Factory, data: st.DataObject, monkeypatch: pytest.MonkeyPatch) -> None:
    import dispenser.core.prescription_index as prescription_index

    monkeypatch.setattr(prescription_index, "WARM", 1)  # one prescription per step
    policy = Policy(duplicate_dispensing="off", quantity_limit="off")
    name = f"warm-{next(_NAMES)}.db"
    d = make(policy, name=name, institutions=INSTITUTIONS)
    d.register_prescriptions([prescription(f"RX-{k}", ITEMS) for k in range(3)], API)
    for k in range(data.draw(st.integers(min_value=0, max_value=4), label="filled before")):
        d.submit(rx_order(f"RX-{k % 3}", [(ACARBOSE, 1 + k % 2)], order_id=f"PRE-{k}"), API)
    d.journal.close()
    d = make(policy, name=name, institutions=INSTITUTIONS, warm_indexes=False)
    book = d.prescriptions
    probes = [parse_order(rx_order(f"RX-{k}", [(code, q)], order_id=f"PROBE-{k}-{q}"))
              for k in range(3) for code in (ACARBOSE, METFORMIN) for q in (1, 2, 4)]

    def agree(complete: bool) -> None:
        for probe in probes:
            journal = book.assess_in_journal(probe)
            fast = book.index.passes(probe)
            if fast is not None:
                assert journal.holds == [] and journal.fills == fast
            elif complete:
                assert journal.holds, "a passing order was sent to the journal"

    placed: list[str] = []
    for n in range(data.draw(st.integers(min_value=1, max_value=10), label="steps")):
        step = data.draw(st.sampled_from(["warm", "warm", "order", "cancel", "rolled back"]))
        if step == "warm":
            d.warm_indexes()
        elif step == "order":
            k = data.draw(st.integers(min_value=0, max_value=2))
            placed.append(d.submit(rx_order(f"RX-{k}", [(ACARBOSE, 1)], order_id=f"SO-{n}"),
                                   API).order_id)
        elif step == "cancel" and placed:
            d.cancel(placed.pop(), PHARMACIST, "property test")
        elif step == "rolled back":
            with pytest.raises(ZeroDivisionError), d.journal.transaction():
                d.submit(rx_order("RX-0", [(ACARBOSE, 1)], order_id=f"GONE-{n}"), API)
                1 / 0  # noqa: B018 (the call fails after it wrote: all rolled back)
        agree(complete=False)
    while not d.warm_indexes():
        pass
    agree(complete=True)
