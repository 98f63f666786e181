"""The pharmacist's desk (issue 10): ingredient identity, dispensing records of other
channels, prescription provenance and the patient's record, against the real core."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dispenser.core import Dispensary
from dispenser.core.errors import Conflict, InvalidOrder
from dispenser.core.formulary import Formulary, FormularyError
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState
from dispenser.testing.core import (
    API,
    HOSPITAL,
    INSTITUTIONS,
    PHARMACIST,
    Factory,
    FakeClock,
    load,
    make_order,
    prescription,
    rx_order,
)

ACARBOSE_CRANE = "06900000010006"  # acarbose 50 mg, Beijing Double-Crane
ACARBOSE_SERVIER = "06900000010143"  # acarbose 50 mg, Servier
def codes(view: Any) -> list[str]:
    return [h.code for h in view.holds]


def first(formulary: Formulary, name: str, robot: bool = True) -> str:
    return next(d.drug_code for d in formulary.values()
                if d.name == name and (d.robot or not robot))


def record(rid: str, patient: str = "P000123", drug_code: str | None = ACARBOSE_CRANE,
           atc: str | None = None, on: str = "2026-11-20", days: int = 30,
           source: dict[str, str] | None = None, quantity: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"record_id": rid, "source": source or HOSPITAL,
                           "patient_id": patient, "dispensed_on": on, "quantity": quantity,
                           "days_supply": days}
    if drug_code is not None:
        out["drug_code"] = drug_code
    if atc is not None:
        out["atc"] = atc
    return out


def dispense(d: Dispensary, code: str, patient: str = "P000123") -> None:
    """Load a pack, order it urgent, pick, label and complete."""
    load(d, code, 1)
    o = d.submit(make_order([(code, 1)], patient=patient, priority="urgent"), API)
    assert o.state is OrderState.RECEIVED, o.holds
    (sh,) = [s for s in d.form_shipments() if o.order_id in s.order_ids]
    d.start_picking(sh.shipment_id)
    for pick in sh.robot_picks:
        d.record_pick(sh.shipment_id, pick.slot, pick.count)
    d.start_labelling(sh.shipment_id)
    d.complete_shipment(sh.shipment_id)


# ---------------------------------------------------------------- the formulary


def test_every_drug_has_an_atc_code_and_ingredients(formulary: Formulary) -> None:
    for d in formulary.values():
        assert d.atc and d.ingredients, d
    combo = next(d for d in formulary.values() if d.name == "sitagliptin/metformin")
    assert (combo.atc, combo.ingredients) == ("A10BD07", ("metformin", "sitagliptin"))
    xr = next(d for d in formulary.values() if d.name == "metformin extended-release")
    assert (xr.atc, xr.ingredients) == ("A10BA02", ("metformin",))
    epalrestat = next(d for d in formulary.values() if d.name == "epalrestat")
    assert epalrestat.atc == "A10XA-L01"  # no WHO code: a local one
    assert formulary[ACARBOSE_CRANE].atc == formulary[ACARBOSE_SERVIER].atc == "A10BF01"


ROW = {"drug_code": "09501101020917", "name": "x", "strength": "1 mg", "form": "tablet",
       "pack_size": "10", "price": "1.00", "reimbursement_rate": "0.5", "fridge": "false",
       "atc": "A10BA02", "ingredients": "metformin"}


@pytest.mark.parametrize(("change", "message"), [
    ({"atc": ""}, r"line 3: atc '' is not a valid ATC code"),
    ({"atc": "A10B"}, r"line 3: atc 'A10B' is not a valid ATC code"),
    ({"atc": "a10ba02"}, r"line 3: atc 'a10ba02'"),
    ({"ingredients": " "}, r"line 3: ingredients is empty"),
    ({"ingredients": "Metformin"}, r"line 3: ingredient 'Metformin' is not an INN"),
    ({"ingredients": "sitagliptin;"}, r"line 3: ingredient '' is not an INN"),
])
def test_loader_refuses_a_row_without_valid_atc_or_ingredient(change: dict[str, str],
                                                              message: str) -> None:
    good = dict(ROW, drug_code="06900000010006")
    with pytest.raises(FormularyError, match=message):
        Formulary.from_rows([good, {**ROW, **change}])


def test_loader_refuses_a_row_missing_the_columns() -> None:
    row = {k: v for k, v in ROW.items() if k not in ("atc", "ingredients")}
    with pytest.raises(FormularyError, match=r"line 2: missing column\(s\) atc, ingredients"):
        Formulary.from_rows([row])


# ---------------------------------------------------------------- duplicates by ingredient


def test_another_makers_acarbose_the_next_day_is_held(make: Factory, clock: FakeClock,
                                                      formulary: Formulary) -> None:
    """The issue's reproduction: held now, with both products and the source named."""
    d = make()
    dispense(d, ACARBOSE_CRANE)
    today = clock.now.date()
    clock.advance(24 * 3600)
    v = d.submit(make_order([(ACARBOSE_SERVIER, 1)]), API)
    assert codes(v) == ["duplicate_dispensing"]
    until = (today + timedelta(days=30)).isoformat()
    assert v.holds[0].detail == (
        f"acarbose 50 mg (Servier) overlaps acarbose dispensed {today.isoformat()} by this "
        f"pharmacy (Beijing Double-Crane), supply until {until}")
    cause = dict(v.holds[0].cause)
    assert cause["kind"] == "dispensed" and cause["drug_code"] == ACARBOSE_CRANE
    assert cause["supply_until"] == until and cause["source"] == "this pharmacy"


def test_a_combination_overlaps_each_of_its_ingredients(disp: Dispensary,
                                                        formulary: Formulary) -> None:
    metformin = first(formulary, "metformin")
    combo = first(formulary, "sitagliptin/metformin")
    sitagliptin = first(formulary, "sitagliptin")
    disp.submit(make_order([(metformin, 1)]), API)
    v = disp.submit(make_order([(combo, 1)]), API)
    assert codes(v) == ["duplicate_dispensing"]
    assert "overlaps metformin on order" in v.holds[0].detail
    other = disp.submit(make_order([(sitagliptin, 1)], patient="P2"), API)
    v = disp.submit(make_order([(combo, 1)], patient="P2"), API)
    assert codes(v) == ["duplicate_dispensing"]
    assert dict(v.holds[0].cause)["ref"] == other.order_id
    # Different ingredients are no duplicate.
    assert disp.submit(make_order([(first(formulary, "acarbose"), 1)], patient="P2"),
                       API).holds == []


def test_an_imported_record_counts_like_our_own_dispense(disp: Dispensary) -> None:
    out = disp.import_records([record("H-1", on="2026-11-20")], API)
    assert [o.status for o in out] == ["imported"]
    v = disp.submit(make_order([(ACARBOSE_SERVIER, 1)]), API)
    assert codes(v) == ["duplicate_dispensing"]
    assert v.holds[0].detail == (
        "acarbose 50 mg (Servier) overlaps acarbose dispensed 2026-11-20 by Tianjin Medical "
        "University General Hospital (Beijing Double-Crane), supply until 2026-12-20")
    cause = dict(v.holds[0].cause)
    assert (cause["kind"], cause["source"], cause["ref"]) == ("record", "TMUGH", "H-1")


def test_a_record_by_atc_code_alone(disp: Dispensary) -> None:
    disp.import_records([record("H-2", drug_code=None, atc="A10BF01")], API)
    v = disp.submit(make_order([(ACARBOSE_SERVIER, 1)]), API)
    assert "(ATC A10BF01), supply until 2026-12-20" in v.holds[0].detail


def test_a_record_whose_supply_ends_within_the_grace_does_not_hold(disp: Dispensary) -> None:
    # 2026-10-31 + 30 days = 2026-11-30: within today (11-23) + 7 days of refill grace.
    disp.import_records([record("H-3", on="2026-10-31")], API)
    assert disp.submit(make_order([(ACARBOSE_SERVIER, 1)]), API).holds == []
    disp.import_records([record("H-4", on="2026-11-01")], API)  # until 12-01: held
    v = disp.submit(make_order([(ACARBOSE_SERVIER, 1)], patient="P000123"), API)
    assert codes(v) == ["duplicate_dispensing"]


def test_another_patients_record_does_not_count(disp: Dispensary) -> None:
    disp.import_records([record("H-5", patient="P999")], API)
    assert disp.submit(make_order([(ACARBOSE_SERVIER, 1)]), API).holds == []


# ---------------------------------------------------------------- records.import


def test_import_answers_each_record(disp: Dispensary) -> None:
    batch = [record("R-1"), record("R-2", drug_code="06900000010007"),
             record("R-3", on="2026-12-01"), {"record_id": "R-4"}, "not a record",
             record("R-5", drug_code=None), record("R-6", atc="C09CA03"),
             {**record("R-7"), "colour": "red"}, record("R-8", quantity=0)]
    out = disp.import_records(batch, API)
    assert [o.status for o in out] == ["imported", "refused", "refused", "refused",
                                       "refused", "refused", "refused", "refused", "refused"]
    paths = [[e.path for e in o.errors] for o in out]
    assert paths[1] == ["drug_code"]  # check digit
    assert paths[2] == ["dispensed_on"]
    assert set(paths[3]) == {"source", "patient_id", "dispensed_on", "quantity",
                             "days_supply"}
    assert paths[4] == ["(record)"]
    assert paths[5] == ["drug_code"] and "or atc" in out[5].errors[0].message
    assert paths[6] == ["atc"] and "does not match drug_code" in out[6].errors[0].message
    assert paths[7] == ["colour"] and paths[8] == ["quantity"]
    assert out[3].record_id == "R-4"
    assert disp.journal.query("SELECT record_id FROM dispensing_records") == [("R-1",)]


def test_import_is_idempotent_and_refuses_a_changed_record(disp: Dispensary) -> None:
    assert disp.import_records([record("R-1")], API)[0].status == "imported"
    assert disp.import_records([record("R-1")], API)[0].status == "unchanged"
    out = disp.import_records([record("R-1", days=60), record("R-2")], API)
    assert [o.status for o in out] == ["conflict", "imported"]
    assert "already imported with different content" in (out[0].message or "")
    # The same id of another source is another record.
    other = {"code": "CLAIMS", "name": "Tianjin medical insurance claims"}
    assert disp.import_records([record("R-1", source=other)], API)[0].status == "imported"
    # Twice in one batch: the second is unchanged (or a conflict).
    out = disp.import_records([record("R-9"), record("R-9"), record("R-9", days=10)], API)
    assert [o.status for o in out] == ["imported", "unchanged", "conflict"]
    assert disp.journal.query_one("SELECT count(*) FROM dispensing_records")[0] == 4
    # One audit row per batch, also when nothing changed.
    assert disp.journal.query_one(
        "SELECT count(*) FROM audit WHERE action = 'records.imported'")[0] == 5


# ---------------------------------------------------------------- provenance


def provenance_disp(make: Factory, **policy: Any) -> Dispensary:
    return make(Policy(**policy), institutions=INSTITUTIONS)


def test_provenance_is_off_on_a_new_install(disp: Dispensary) -> None:
    v = disp.submit(make_order([(ACARBOSE_CRANE, 1)], rx="RX-NOT-REGISTERED"), API)
    assert v.holds == [] and v.state is OrderState.RECEIVED


def test_provenance_holds_once_a_prescription_is_registered(disp: Dispensary) -> None:
    assert disp.register_prescriptions(
        [prescription("RX-1", [{"atc": "A10BF01", "quantity": 3, "days_supply": 90}])],
        API) == [{"id": "RX-1", "status": "registered"}]
    v = disp.submit(rx_order("RX-2", [(ACARBOSE_CRANE, 1)], patient="P2"), API)
    assert codes(v) == ["prescription_unregistered"]
    # No institution configured: none is designated.
    order = rx_order("RX-1", [(ACARBOSE_CRANE, 1)])
    order["prescription"]["institution"] = "TMUGH"
    v = disp.submit(order, API)
    assert codes(v) == ["institution_not_designated"]
    assert "no institution is configured" in v.holds[0].detail


def test_provenance_holds_once_institutions_are_configured(make: Factory) -> None:
    d = provenance_disp(make)
    v = d.submit(rx_order("RX-9", [(ACARBOSE_CRANE, 1)]), API)
    assert codes(v) == ["prescription_unregistered"]
    assert dict(v.holds[0].cause) == {"prescription_id": "RX-9"}
    off = make(Policy(prescription_provenance="off"), name="off.db",
               institutions=INSTITUTIONS)
    assert off.submit(rx_order("RX-9", [(ACARBOSE_CRANE, 1)]), API).holds == []


def test_a_registered_prescription_passes_and_fills(make: Factory) -> None:
    d = provenance_disp(make)
    d.register_prescriptions([prescription(
        "RX-1", [{"drug_code": ACARBOSE_CRANE, "quantity": 3, "days_supply": 90}])], API)
    v = d.submit(rx_order("RX-1", [(ACARBOSE_SERVIER, 1)]), API)  # same ingredient
    assert v.holds == [] and v.state is OrderState.RECEIVED
    assert d.journal.query("SELECT filled FROM prescription_items") == [(1,)]


def test_mismatches_name_the_field(make: Factory, formulary: Formulary) -> None:
    d = provenance_disp(make, duplicate_dispensing="off")
    d.register_prescriptions([prescription(
        "RX-1", [{"atc": "A10BF01", "quantity": 20, "days_supply": 90}])], API)
    cases: list[tuple[dict[str, Any], str]] = [
        (rx_order("RX-1", [(ACARBOSE_CRANE, 1)], patient="P777"), "patient.id"),
        (rx_order("RX-1", [(ACARBOSE_CRANE, 1)], issued_on="2026-11-02"),
         "prescription.issued_on"),
        (rx_order("RX-1", [(ACARBOSE_CRANE, 1)], diagnoses=["E11.9", "E78"]),
         "prescription.diagnoses"),
        (rx_order("RX-1", [(first(formulary, "metformin"), 1)]), "items.0.drug_code"),
    ]
    other_clinic = rx_order("RX-1", [(ACARBOSE_CRANE, 1)])
    other_clinic["prescription"]["institution"] = "Some Clinic"
    cases.append((other_clinic, "prescription.institution"))
    other_doctor = rx_order("RX-1", [(ACARBOSE_CRANE, 1)])
    other_doctor["prescription"]["prescriber"] = "Dr. Wang"
    cases.append((other_doctor, "prescription.prescriber"))
    for order, path in cases:
        v = d.submit(order, API)
        assert codes(v) == ["prescription_mismatch"], (path, v.holds)
        assert v.holds[0].detail.startswith(f"{path}: "), v.holds[0].detail
        assert dict(v.holds[0].cause)["field"] == path
    # The institution's code is as good as its configured name.
    by_code = rx_order("RX-1", [(ACARBOSE_CRANE, 1)])
    by_code["prescription"]["institution"] = "tmugh"
    assert d.submit(by_code, API).holds == []


def test_a_clinic_that_is_not_designated(make: Factory) -> None:
    d = provenance_disp(make)
    d.register_prescriptions([prescription(
        "RX-C", [{"atc": "A10BF01", "quantity": 1, "days_supply": 30}],
        institution="CLINIC-7")], API)
    order = rx_order("RX-C", [(ACARBOSE_CRANE, 1)])
    order["prescription"]["institution"] = "CLINIC-7"
    v = d.submit(order, API)
    assert codes(v) == ["institution_not_designated"]
    assert "issued by CLINIC-7, not a designated institution" in v.holds[0].detail


def test_a_90_day_prescription_in_three_30_day_orders(make: Factory, clock: FakeClock) -> None:
    d = provenance_disp(make)
    d.register_prescriptions([prescription(
        "RX-90", [{"atc": "A10BF01", "quantity": 3, "days_supply": 90}],
        issued_on="2026-11-20")], API)

    def order() -> dict[str, Any]:
        # Delivered from the day after each order (a window already over is held).
        return rx_order("RX-90", [(ACARBOSE_CRANE, 1)], issued_on="2026-11-20",
                        window_start=(clock() + timedelta(days=1)).isoformat())

    orders = []
    for month in range(3):
        v = d.submit(order(), API)
        assert v.holds == [], (month, v.holds)  # no duplicate_prescription either
        orders.append(v.order_id)
        clock.advance(24 * 3600 * 25)  # the next one inside the 7-day refill grace
    v = d.submit(order(), API)
    assert codes(v) == ["prescription_exhausted"]
    assert "has 0 of 3 packs of acarbose left (3 filled); ordered 1" in v.holds[0].detail
    cause = dict(v.holds[0].cause)
    assert (cause["prescribed"], cause["filled"], cause["left"]) == (3, 3, 0)
    # A cancelled order gives its fill back; so does a rejected one.
    d.cancel(orders[2], PHARMACIST, "patient changed the delivery")
    assert d.journal.query("SELECT filled FROM prescription_items") == [(2,)]
    d.reject(v.order_id, PHARMACIST, "exhausted")  # held without a fill: nothing changes
    assert d.journal.query("SELECT filled FROM prescription_items") == [(2,)]
    again = d.submit(order(), API)
    assert again.holds == []
    assert d.journal.query("SELECT filled FROM prescription_items") == [(3,)]
    audit = d.journal.query("SELECT after FROM audit WHERE action = 'order.cancelled'")
    assert "prescription_fills_given_back" in audit[0][0]


def test_registration_is_idempotent_and_refuses_bad_prescriptions(disp: Dispensary) -> None:
    rx = prescription("RX-1", [{"atc": "A10BF01", "quantity": 3, "days_supply": 90}])
    assert disp.register_prescriptions([rx, rx], API) == [
        {"id": "RX-1", "status": "registered"}, {"id": "RX-1", "status": "unchanged"}]
    changed = dict(rx, issued_on="2026-11-02")
    bad = prescription("RX-2", [{"quantity": 1, "days_supply": 30},
                                {"drug_code": ACARBOSE_CRANE, "atc": "C09CA03",
                                 "quantity": 1, "days_supply": 30}], diagnoses=["diabetes"])
    out = disp.register_prescriptions(
        [changed, bad, prescription("RX-3", [{"atc": "A10BA02", "quantity": 2,
                                              "days_supply": 60}])], API)
    assert isinstance(out[0], Conflict)
    assert isinstance(out[1], InvalidOrder)
    assert [e.path for e in out[1].errors] == ["diagnoses.0"]
    out = disp.register_prescriptions([dict(bad, diagnoses=["E11"])], API)
    assert isinstance(out[0], InvalidOrder)
    assert [e.path for e in out[0].errors] == ["items.0.drug_code", "items.1.atc"]
    assert disp.journal.query("SELECT prescription_id FROM prescriptions ORDER BY seq") == [
        ("RX-1",), ("RX-3",)]


def test_fills_survive_a_restart_and_a_rolled_back_call(make: Factory) -> None:
    d = provenance_disp(make)
    d.register_prescriptions([prescription(
        "RX-1", [{"atc": "A10BF01", "quantity": 2, "days_supply": 60}])], API)
    d.submit(rx_order("RX-1", [(ACARBOSE_CRANE, 2)]), API)
    d.journal.close()
    again = make(Policy(), name="journal.db", institutions=INSTITUTIONS)
    assert again.prescriptions.any_registered
    v = again.submit(rx_order("RX-1", [(ACARBOSE_CRANE, 1)], patient="P000123"), API)
    assert "prescription_exhausted" in codes(v)


# ---------------------------------------------------------------- the patient's record


def test_the_patients_record_and_its_audited_read(make: Factory, clock: FakeClock) -> None:
    d = provenance_disp(make, prescription_provenance="off")
    dispense(d, ACARBOSE_CRANE)
    d.import_records([record("H-1", drug_code=None, atc="A10BA02", on="2026-11-22")], API)
    d.register_prescriptions([prescription(
        "RX-1", [{"atc": "A10BF01", "quantity": 3, "days_supply": 90}])], API)
    clock.advance(3600)
    held = d.submit(rx_order("RX-1", [(ACARBOSE_SERVIER, 1)]), API)
    assert codes(held) == ["duplicate_dispensing"]
    rec = d.patient_record("P000123", PHARMACIST)
    assert [h["source"] for h in rec["history"]] == ["this pharmacy", "TMUGH"]
    assert rec["history"][1]["source_name"] == HOSPITAL["name"]
    assert rec["history"][1]["description"] == "ATC A10BA02"
    assert rec["history_total"] == 2
    supplies = {s["ingredient"]: s for s in rec["supplies"]}
    assert set(supplies) == {"acarbose", "metformin"}
    assert supplies["metformin"]["supply_until"] == "2026-12-22"
    (rx,) = rec["prescriptions"]
    assert rx["designated"] and rx["items"][0]["left"] == 3  # the check is off: no fills
    (o,) = rec["open_orders"]
    assert o["order_id"] == held.order_id
    assert o["hold_reasons"][0]["cause"]["kind"] == "dispensed"
    (row,) = d.journal.query("SELECT actor, role, subject FROM audit "
                             "WHERE action = 'patient.read'")
    assert row == (PHARMACIST.name, PHARMACIST.role, "P000123")


def test_renewals_lists_latest_prescriptions_reaching_their_limit(disp: Dispensary) -> None:
    # Today is 2026-11-23; the limit is 90 days after issue.
    disp.register_prescriptions([
        prescription("RX-A", [{"atc": "A10BF01", "quantity": 1, "days_supply": 30}],
                     patient="PA", issued_on="2026-08-30"),  # limit 11-28: in 5 days
        prescription("RX-B", [{"atc": "A10BF01", "quantity": 1, "days_supply": 30}],
                     patient="PB", issued_on="2026-09-01"),  # limit 11-30: in 7 days
        prescription("RX-B2", [{"atc": "A10BF01", "quantity": 1, "days_supply": 30}],
                     patient="PB", issued_on="2026-11-01"),  # ... renewed already
        prescription("RX-C", [{"atc": "A10BF01", "quantity": 1, "days_supply": 30}],
                     patient="PC", issued_on="2026-09-20"),  # limit 12-19: later
        prescription("RX-D", [{"atc": "A10BF01", "quantity": 1, "days_supply": 30}],
                     patient="PD", issued_on="2026-08-01"),  # past its limit
    ], API)
    due = disp.renewals(14)
    assert [(r["patient_id"], r["limit_on"], r["days_left"]) for r in due] == [
        ("PA", "2026-11-28", 5)]
    assert [r["patient_id"] for r in disp.renewals(30)] == ["PA", "PC"]
    page = disp.renewals(30, limit=1)
    assert [r["patient_id"] for r in disp.renewals(30, after=page[-1]["cursor"])] == ["PC"]


def test_a_failed_shipment_gives_its_orders_fills_back(make: Factory) -> None:
    d = provenance_disp(make)
    d.register_prescriptions([prescription(
        "RX-1", [{"atc": "A10BF01", "quantity": 2, "days_supply": 60}])], API)
    load(d, ACARBOSE_CRANE, 1)
    v = d.submit(rx_order("RX-1", [(ACARBOSE_CRANE, 1)], priority="urgent"), API)
    assert v.holds == []
    assert d.journal.query("SELECT filled FROM prescription_items") == [(1,)]
    (sh,) = d.form_shipments()
    d.fail_shipment(sh.shipment_id, PHARMACIST, "tote dropped")
    assert d.get_order(v.order_id).state is OrderState.FAILED
    assert d.journal.query("SELECT filled FROM prescription_items") == [(0,)]
