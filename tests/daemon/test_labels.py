"""Shipping label and packing slip: what they carry, that user text cannot break the ZPL,
and that an independent renderer draws them and a decoder reads the shipment barcode."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import zplkit
import zxingcpp

from dispenser.core.billing import BillingLine
from dispenser.core.formulary import Drug
from dispenser.core.states import PackState, ShipmentState
from dispenser.core.views import ManualLine, PackView, ShipmentView
from dispenser.daemon.labels import packing_slip, selftest_label, shipping_label

DRUG = Drug("06900000010006", "metformin", "500 mg", "tablet", 30, Decimal("12.00"),
            Decimal("0.80"), False, False)
PEN = Drug("06900000270028", "insulin glargine", "100 U/mL 3 mL", "prefilled pen", 1,
           Decimal("180.00"), Decimal("0.80"), True, False)


def _pack(pid: int, serial: str, gtin: str = DRUG.drug_code) -> PackView:
    return PackView(pid, gtin, "B2311", date(2027, 6, 30), serial, PackState.PICKED, 5203,
                    "SH-00000042", "ORD-1")


def _view(fridge: bool, name: str = "Zhang Wei") -> ShipmentView:
    manual = [ManualLine("ORD-2/" + PEN.drug_code, PEN.drug_code, PEN.label, 1,
                         [_pack(9, "PEN1", PEN.drug_code)], True)] if fridge else []
    billing = [BillingLine("ORD-1", DRUG.drug_code, DRUG.label, 2, Decimal("12.00"),
                           Decimal("24.00"), Decimal("19.20"), Decimal("4.80"))]
    return ShipmentView(
        shipment_id="SH-00000042", state=ShipmentState.LABELLING, order_ids=["ORD-1", "ORD-2"],
        patient_id="P-1", patient_name=name, patient_phone="+86 22 5550000",
        address="12 Heping Road, Heping District, Tianjin 300041",
        window_start=datetime(2026, 11, 29, 9, tzinfo=UTC),
        window_end=datetime(2026, 11, 29, 12, tzinfo=UTC), priority="normal",
        robot_picks=[], manual_picks=manual, picked=[_pack(1, "S1"), _pack(2, "S2")],
        owed=[], short=[], billing=billing, total=Decimal("24.00"), covered=Decimal("19.20"),
        self_pay=Decimal("4.80"), fridge=fridge, holds=[],
        created_at=datetime(2026, 11, 28, 4, tzinfo=UTC))


def _render(zpl: bytes, height: int) -> list[tuple[str, bytes]]:
    doc = zplkit.render(zpl, zplkit.Options(width=812, height=height, dpi=203))
    raster = doc.labels[0].rasterize()
    image = memoryview(raster.pixels).cast("B", (raster.height, raster.width))
    return [(b.format.name, b.bytes) for b in zxingcpp.read_barcodes(image)]


def test_shipping_label_carries_barcode_patient_window_count() -> None:
    zpl = shipping_label(_view(fridge=False))
    assert zpl.startswith(b"^XA") and zpl.endswith(b"^XZ")
    text = zpl.decode()
    for part in ("Zhang Wei", "12 Heping Road", "2026-11-29 09:00-12:00", "Items: 2",
                 "Orders: 2"):
        assert part in text
    assert "COLD CHAIN" not in text
    assert ("Code128", b"SH-00000042") in _render(zpl, 1218)


def test_fridge_items_get_the_cold_chain_mark() -> None:
    zpl = shipping_label(_view(fridge=True)).decode()
    assert "COLD CHAIN 2-8 C" in zpl
    assert "Items: 3" in zpl


def test_user_text_cannot_inject_zpl() -> None:
    zpl = shipping_label(_view(fridge=False, name="^XZ^XA~JR evil_name")).decode()
    assert "^XZ^XA" not in zpl and "~JR" not in zpl
    assert zpl.count("^XA") == 1 and zpl.count("^XZ") == 1


def test_packing_slip_lists_every_pack_settlement_and_manual_lines() -> None:
    drugs = {DRUG.drug_code: DRUG, PEN.drug_code: PEN}
    zpl = packing_slip(_view(fridge=True), drugs)
    text = zpl.decode()
    for part in ("PACKING SLIP  SH-00000042", "ORD-1, ORD-2", "2 x metformin tablet x30 500 mg",
                 "batch B2311  exp 2027-06-30", "serial S1", "serial S2",
                 "insulin glargine", "FRIDGE", "24.00", "19.20", "4.80",
                 "Total 24.00   covered 19.20   self-pay 4.80"):
        assert part in text, part
    height = int(text.split("^LL")[1].split("^")[0])
    assert ("Code128", b"SH-00000042") in _render(zpl, height)


def test_selftest_label_renders() -> None:
    assert ("Code128", b"SELFTEST") in _render(selftest_label(), 400)
