"""Shipping label and packing slip: what they carry, that user text cannot break the ZPL,
and that an independent renderer draws them and a decoder reads the shipment barcode."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import zplkit
import zxingcpp

from dispenser.core.billing import BillingLine
from dispenser.core.formulary import Drug
from dispenser.core.states import PackState, ShipmentState
from dispenser.core.views import ManualLine, PackView, ShipmentView
from dispenser.daemon.labels import packing_slip, selftest_label, shipping_label
from dispenser.testing.inprocess import Crash, close, prepare, restart, run_cycles
from firmware_sim import Simulator

DRUG = Drug("06900000010006", "metformin", "500 mg", "tablet", 30, Decimal("12.00"),
            Decimal("0.80"), False, False)
PEN = Drug("06900000270028", "insulin glargine", "100 U/mL 3 mL", "prefilled pen", 1,
           Decimal("180.00"), Decimal("0.80"), True, False)


def _pack(pid: int, serial: str, drug_code: str = DRUG.drug_code) -> PackView:
    return PackView(pid, drug_code, "B2311", date(2027, 6, 30), serial, PackState.PICKED, 5203,
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


async def test_a_label_that_may_have_printed_before_a_crash_comes_again_marked_copy(
        tmp_path: Path, sim: Simulator) -> None:
    """The daemon dies after the printer took a shipment's label and slip and before that
    was journaled: after the restart they are printed again, marked COPY, and the packer
    can tell the duplicate. Labels whose printing had not begun are not marked."""
    daemon, _ = await prepare(tmp_path, sim)
    crashed: list[str] = []

    def printed_then_crash(shipment_id: str) -> None:
        crashed.append(shipment_id)
        raise Crash

    daemon.desk._on_printed = printed_then_crash
    await run_cycles(daemon, lambda: bool(crashed) and daemon._desk_task.done())  # type: ignore[attr-defined]
    [first] = crashed
    assert isinstance(daemon._desk_task.exception(), Crash)  # type: ignore[attr-defined]
    del daemon._desk_task  # type: ignore[attr-defined]  # died with the daemon
    daemon = await restart(daemon, tmp_path, sim)

    def all_labelled() -> bool:
        views = daemon.dispensary.list_shipments(limit=1000)
        return bool(views) and all(v.state is ShipmentState.COMPLETED for v in views)
    await run_cycles(daemon, all_labelled, limit=3000)
    await close(daemon)

    printed = [lb["zpl"] for lb in sim.ledger()["labels"]
               if lb.get("printed") and not lb.get("cancelled")]
    mine = [z for z in printed if first in z]
    assert len(mine) == 4, mine  # label and slip, twice
    originals, copies = mine[:2], mine[2:]
    assert all("COPY" not in z for z in originals)
    assert all("^FDCOPY" in z for z in copies), copies
    label = next(z for z in copies if "PACKING SLIP" not in z)
    assert ("Code128", first.encode()) in _render(label.encode(), 1218)
    slip = next(z for z in copies if "PACKING SLIP" in z)
    assert slip.index("COPY") < slip.index("PACKING SLIP")
    others = [z for z in printed if first not in z and "SELFTEST" not in z]
    assert others and all("COPY" not in z for z in others)
