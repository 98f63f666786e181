"""Pack scans and every reason a pack is refused for loading."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispenser.core import Dispensary
from dispenser.core.errors import LoadRefused
from dispenser.core.gs1 import GS, _biip_scan, _pack_scan, parse_scan
from dispenser.core.states import PackState
from dispenser.testing.core import (
    LOADER,
    PHARMACIST,
    Factory,
    FakeClock,
    dispense_one,
    fridge_drugs,
    load,
    robot_drugs,
    scan,
)

GTIN = "09501101020917"


@pytest.mark.parametrize("text", [
    f"]d201{GTIN}17271231" + f"10ABC{GS}21XYZ",
    f"01{GTIN}17271231" + f"10ABC{GS}21XYZ",
    f"{GS}01{GTIN}17271231" + f"10ABC{GS}21XYZ",
    f"01{GTIN}21XYZ{GS}10ABC{GS}17271231",
    f"]d201{GTIN}10ABC{GS}17271231" + "21XYZ",
])
def test_scan_variants(text: str) -> None:
    d = parse_scan(text)
    assert (d.gtin, d.expiry, d.batch, d.serial) == (GTIN, date(2027, 12, 31), "ABC", "XYZ")


def test_day_00_is_end_of_month() -> None:
    assert parse_scan(f"01{GTIN}17280200" + f"10B{GS}21S").expiry == date(2028, 2, 29)
    assert parse_scan(f"01{GTIN}17270400" + f"10B{GS}21S").expiry == date(2027, 4, 30)


def test_missing_fields_come_back_empty() -> None:
    d = parse_scan(f"01{GTIN}21SER")
    assert d.expiry is None and d.batch is None and d.serial == "SER"


@pytest.mark.parametrize("text", ["", "hello", f"01{GTIN[:-1]}8" + "17271231", "]d2"])
def test_unreadable(text: str) -> None:
    with pytest.raises(LoadRefused) as info:
        parse_scan(text)
    assert info.value.reason_code == "unreadable"


def reason(d: Dispensary, text: str) -> str:
    with pytest.raises(LoadRefused) as info:
        d.begin_load(text, LOADER)
    assert info.value.message
    return info.value.reason_code


def test_every_load_refusal_reason(make: Factory, clock: FakeClock) -> None:
    d = make()
    drug = robot_drugs()[0]
    g = drug.drug_code
    assert reason(d, "garbage") == "unreadable"
    assert reason(d, scan("09501101020917")) == "unknown_gtin"
    assert reason(d, f"01{g}10B1{GS}21S1") == "no_expiry"
    assert reason(d, f"01{g}17281231" + "21S1") == "no_batch"
    assert reason(d, scan(drug, expiry="261122")) == "expired"
    short = (clock().date() + timedelta(days=10)).strftime("%y%m%d")
    assert reason(d, scan(drug, expiry=short)) == "short_shelf_life"
    d.begin_load(scan(drug, serial="DUP1"), LOADER)
    assert reason(d, scan(drug, serial="DUP1")) == "serial_in_stock"
    assert reason(d, scan(fridge_drugs()[0])) == "not_for_robot"
    d.quarantine_batch(g, "BAD", PHARMACIST, "recall")
    assert reason(d, scan(drug, batch="BAD")) == "quarantined"


def test_serial_dispensed_is_refused(make: Factory) -> None:
    d = make()
    drug = robot_drugs()[0]
    serial = dispense_one(d, drug)
    assert reason(d, scan(drug, serial=serial)) == "serial_dispensed"


def test_check_scan_accepts_good_pack(disp: Dispensary) -> None:
    ps = disp.check_scan(scan(robot_drugs()[0], expiry="281200"))
    assert ps.expiry == date(2028, 12, 31) and ps.robot


def test_loading_lifecycle_and_slot_choice(make: Factory) -> None:
    d = make()
    a, b = robot_drugs()[0], robot_drugs()[1]
    p1 = d.begin_load(scan(a, batch="L1"), LOADER)
    assert p1.state is PackState.LOADING and p1.slot == 0  # nearest x=0
    p2 = d.begin_load(scan(a, batch="L1"), LOADER)
    assert p2.slot == p1.slot  # same drug+batch shares the slot
    p3 = d.begin_load(scan(b), LOADER)
    assert p3.slot != p1.slot
    assert d.geometry.position(p3.slot)[0] == 0.0  # still at x = 0 (another level/side)
    d.confirm_stored(p1.pack_id)
    refused = d.refuse_stored(p2.pack_id, "gripper could not place")
    assert refused.state is PackState.REFUSED
    assert [p.pack_id for p in d.list_stock()] == [p1.pack_id]
    # a refused pack may be scanned again
    again = d.begin_load(scan(a, batch="L1", serial=p2.serial), LOADER)
    assert again.state is PackState.LOADING


def test_slot_holds_capacity_then_next_slot(make: Factory) -> None:
    from dispenser.core.stock import SlotGeometry
    d = make(geometry=SlotGeometry(1, 2, 3, 2))
    ids = load(d, robot_drugs()[0], 3)
    slots = [d.get_pack(i).slot for i in ids]
    assert slots[0] == slots[1] != slots[2]


def test_full_robot_refuses_with_no_free_slot(make: Factory) -> None:
    from dispenser.core.stock import SlotGeometry
    d = make(geometry=SlotGeometry(1, 1, 1, 1))
    load(d, robot_drugs()[0], 1)
    assert reason(d, scan(robot_drugs()[0])) == "no_free_slot"


# ---------------------------------------------------------------- the plain-scan fast path
_GTINS = ["04150123456782", "09501101020917", "04150123456783", "00012345600012"]
_AI_VALUES = {
    "01": st.sampled_from([*_GTINS, "0415012345678", "041501234567821"]),
    "17": st.sampled_from(["280131", "280100", "991231", "000229", "240229", "231301",
                           "28013", "2801311"]),
    "10": st.one_of(st.text(alphabet="AB09-./x", min_size=1, max_size=20),
                    st.text(alphabet="AB09-./x#é ", min_size=0, max_size=22)),
    "21": st.one_of(st.text(alphabet="SN19-./z", min_size=1, max_size=20),
                    st.text(alphabet="SN19-./z%", min_size=0, max_size=22)),
    "11": st.sampled_from(["240101"]),
}


@st.composite
def scans(draw: st.DrawFn) -> str:
    # Mostly what a pack carries, in any order; sometimes an AI missing, twice or another.
    ais = ["01", "17", *draw(st.lists(st.sampled_from(["10", "21"]), max_size=2, unique=True))]
    if draw(st.integers(0, 4)) == 0:
        ais = draw(st.lists(st.sampled_from(sorted(_AI_VALUES)), min_size=1, max_size=5))
    ais = draw(st.permutations(ais))
    out = draw(st.sampled_from(["]d2", "", "]C1", GS]))
    for ai in ais:
        out += ai + draw(_AI_VALUES[ai])
        if draw(st.booleans()):
            out += GS
    return out


@settings(max_examples=600, deadline=None)
@given(scans())
def test_plain_scan_path_reads_what_biip_reads(text: str) -> None:
    """The fast path takes a scan only when biip reads the very same data from it."""
    quick = _pack_scan(text)
    if quick is None:
        return
    assert quick == _biip_scan(text)


def test_plain_scan_path_takes_the_usual_pack_scan() -> None:
    text = "]d20104150123456782172801001012-AB" + GS + "21SN.0001"
    quick = _pack_scan(text)
    assert quick is not None
    assert quick == _biip_scan(text)
    assert (quick.batch, quick.serial, quick.expiry.isoformat() if quick.expiry else None) == (
        "12-AB", "SN.0001", "2028-01-31")
