"""The supply index (``dispenser.core.supply_index``) lets the duplicate check skip the
journal only where the journal has nothing to say: with and without it, the checks of any
order give the same answer, whatever records, dispenses, open orders, rollbacks and days
came before; and it skips the journal for a patient without a current supply."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispenser.core.checks import run_checks
from dispenser.core.history import patient_history
from dispenser.core.orders import parse_order
from dispenser.core.policy import Policy
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    HOSPITAL,
    Factory,
    FakeClock,
    make_order,
)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _first(ingredients: tuple[str, ...]) -> str:
    return next(d.drug_code for d in DEMO_FORMULARY.values() if d.ingredients == ingredients)


CODES = [_first(("acarbose",)), _first(("metformin",)), _first(("amlodipine",)),
         _first(("metformin", "sitagliptin"))]


def _record(rid: str, code: str, patient: str, on: str, days: int) -> dict[str, Any]:
    return {"record_id": rid, "source": HOSPITAL, "patient_id": patient, "dispensed_on": on,
            "drug_code": code, "quantity": 1, "days_supply": days}


def _answers(d: Any, raw: dict[str, Any]) -> tuple[list[dict[str, object]], ...]:
    """The checks' results with the index and without it (the journal alone)."""
    order = parse_order(raw)
    now = d.books.now()
    out = []
    for index in (d.supplies, None):
        results = run_checks(order, d.policy, now.date(),
                             lambda o, i=index: patient_history(d.journal, d.orders, o, i),
                             drugs=DEMO_FORMULARY, now=now)
        out.append([r.as_dict() for r in results])
    return tuple(out)


@SETTINGS
@given(data=st.data())
def test_with_and_without_the_index_the_checks_agree(make_dispensary: Factory,
                                                     data: st.DataObject) -> None:
    clock = FakeClock()
    d = make_dispensary(Policy(quantity_limit="off", prescription_provenance="off"),
                        clock=clock)
    for n in range(data.draw(st.integers(min_value=0, max_value=8), label="events")):
        kind = data.draw(st.sampled_from(["record", "record", "order", "rolled back", "day"]))
        patient = data.draw(st.sampled_from(["P1", "P2"]))
        code = data.draw(st.sampled_from(CODES))
        if kind == "day":
            clock.advance(86400 * data.draw(st.integers(min_value=1, max_value=40)))
        elif kind == "order":
            d.submit(make_order([(code, 1)], patient=patient, rx=f"RX-{n % 2}",
                                order_id=f"SO-{n}"), API)
        else:
            # Often on the edge: a supply that ends on the last day of the refill grace
            # (no duplicate), or the day after (a duplicate).
            days = data.draw(st.sampled_from([7, 30, 90]))
            back = data.draw(st.one_of(st.integers(0, 60),
                                       st.sampled_from([days - 8, days - 7, days - 6])))
            on = clock.now.date() - timedelta(days=max(back, 0))
            rec = _record(f"R-{n}", code, patient, on.isoformat(), days)
            if kind == "record":
                d.import_records([rec], API)
            else:
                with pytest.raises(ZeroDivisionError), d.journal.transaction():
                    d.import_records([rec], API)
                    1 / 0  # noqa: B018 (the call fails after it wrote: all rolled back)
    items = data.draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=3, unique=True))
    probe = make_order([(c, 1) for c in items], patient=data.draw(st.sampled_from(["P1", "P2"])),
                       rx="RX-1", order_id="PROBE")
    with_index, journal_only = _answers(d, probe)
    assert with_index == journal_only


def test_a_patient_without_a_current_supply_needs_no_journal_read(make: Factory,
                                                                  clock: FakeClock) -> None:
    d = make()
    today = clock.now.date()
    d.import_records([_record("R-1", CODES[0], "P1", today.isoformat(), 30),
                      _record("R-2", CODES[1], "P2", (today - timedelta(days=40)).isoformat(),
                              30)], API)
    acarbose, metformin = ["acarbose"], ["metformin"]
    assert d.supplies.may_overlap("P1", acarbose, today)
    assert not d.supplies.may_overlap("P1", metformin, today)  # another ingredient
    assert not d.supplies.may_overlap("P2", metformin, today)  # ran out 10 days ago
    assert not d.supplies.may_overlap("P3", acarbose, today)  # nothing at all
    # Built again from the journal, it knows the same.
    d.journal.close()
    again = make()
    assert again.supplies.may_overlap("P1", acarbose, today)
    assert not again.supplies.may_overlap("P2", metformin, today)
    # 31 days on, the supply has run out and is dropped from memory.
    clock.advance(86400 * 31)
    again.supplies.forget_ended(clock.now.date())
    assert len(again.supplies) == 0
    assert not again.supplies.may_overlap("P1", acarbose, clock.now.date())


def test_ended_supplies_are_dropped_a_slice_at_a_time(make: Factory, clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import dispenser.core.supply_index as supply_index

    d = make()
    today = clock.now.date()
    d.import_records([_record(f"R-{n}", CODES[0], f"P{n}", today.isoformat(), 10 + n)
                      for n in range(5)], API)  # P0 runs out in 10 days, P4 in 14
    monkeypatch.setattr(supply_index, "SWEEP", 2)
    later = today + timedelta(days=12)  # P0, P1, P2 have run out
    sizes = []
    for _ in range(4):
        d.supplies.forget_ended(later)
        sizes.append(len(d.supplies))
        # Whatever is not dropped yet, the answers are right meanwhile.
        assert [d.supplies.may_overlap(f"P{n}", ["acarbose"], later) for n in range(5)] == [
            False, False, False, True, True]
    assert sizes[0] > sizes[-1] == 2  # two calls of two patients, and one of one


_NAMES = iter(range(10**9))


@SETTINGS
@given(data=st.data())
def test_while_it_is_built_the_checks_agree_with_the_journal(
        make: Factory, clock: FakeClock, data: st.DataObject,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dispenser.core.supply_index as supply_index

    monkeypatch.setattr(supply_index, "WARM", 1)  # one row per step
    policy = Policy(quantity_limit="off", prescription_provenance="off")
    name = f"warm-{next(_NAMES)}.db"
    today = clock.now.date()

    def record(n: int) -> dict[str, Any]:
        days = data.draw(st.sampled_from([7, 30, 90]))
        back = data.draw(st.sampled_from([0, 20, days - 8, days - 7, days - 6, 100]))
        on = today - timedelta(days=max(back, 0))
        return _record(f"R-{n}", data.draw(st.sampled_from(CODES)),
                       data.draw(st.sampled_from(["P1", "P2"])), on.isoformat(), days)

    d = make(policy, name=name)
    d.import_records([record(n) for n in range(data.draw(st.integers(0, 5)))], API)
    d.journal.close()
    d = make(policy, name=name, warm_indexes=False)
    probes = [make_order([(c, 1)], patient=p, rx="RX-1", order_id=f"PROBE-{p}-{i}")
              for p in ("P1", "P2") for i, c in enumerate(CODES)]
    for n in range(data.draw(st.integers(min_value=1, max_value=8), label="steps")):
        if data.draw(st.booleans(), label="warm or import"):
            d.warm_indexes()
        else:
            d.import_records([record(100 + n)], API)
        for probe in probes:
            with_index, journal_only = _answers(d, probe)
            assert with_index == journal_only
    while not d.warm_indexes():
        pass
    assert d.supplies.ready
    for probe in probes:
        with_index, journal_only = _answers(d, probe)
        assert with_index == journal_only
