"""The shipping label and the packing slip of a shipment, as ZPL.

Both are built from a ``ShipmentView`` with the printer driver's ``Label`` builder, which
escapes every piece of user text. Label stock: 4 x 6 inch at 203 dpi (812 x 1218 dots); the
packing slip is as long as its lines need (continuous stock).

Shipping label: Code 128 of the shipment id, patient name, delivery address and window,
item count, and a cold-chain mark when the tote holds fridge items (which are added at the
packing desk). A label or slip printed again because the first one may have come out
before a crash is marked ``COPY`` (boxed, top right; first line of the slip): the packer
discards it when the first one is there.

Packing slip: every pack (drug, strength, quantity, batch, expiry, serial), the manual
pick lines, the settlement per line (price, covered, self-pay) and the order ids.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from dispenser.core.formulary import Drug
from dispenser.core.views import ShipmentView
from drivers.printer.zpl import Label

__all__ = ["COPY", "packing_slip", "selftest_label", "shipping_label"]

WIDTH = 812
HEIGHT = 1218
MARGIN = 30
LINE = 34


def _when(start: datetime, end: datetime) -> str:
    if start.date() == end.date():
        return f"{start:%Y-%m-%d} {start:%H:%M}-{end:%H:%M}"
    return f"{start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M}"


def item_count(view: ShipmentView) -> int:
    robot = sum(p.count for p in view.robot_picks) + len(view.picked)
    manual = sum(m.quantity for m in view.manual_picks)
    # robot_picks are what is still reserved; picked is what is already in the tote.
    return robot + manual


COPY = "COPY"


def _copy_mark(label: Label) -> None:
    label.box(WIDTH - MARGIN - 200, MARGIN, 200, 70, thickness=6)
    label.text(WIDTH - MARGIN - 170, MARGIN + 12, COPY, height=50)


def shipping_label(view: ShipmentView, copy: bool = False) -> bytes:
    label = Label(WIDTH, HEIGHT)
    y = MARGIN
    label.text(MARGIN, y, "SHIPMENT", height=30)
    if copy:
        _copy_mark(label)
    y += 40
    label.code128(MARGIN + 20, y, view.shipment_id, height=140, module_width=3)
    y += 200
    label.hline(MARGIN, y, WIDTH - 2 * MARGIN, thickness=3)
    y += 20
    label.text(MARGIN, y, view.patient_name, height=48)
    y += 60
    if view.patient_phone:
        label.text(MARGIN, y, view.patient_phone, height=32)
        y += 44
    for line in textwrap.wrap(view.address, 40)[:6]:
        label.text(MARGIN, y, line, height=34)
        y += 42
    y += 10
    label.text(MARGIN, y, "Deliver: " + _when(view.window_start, view.window_end), height=32)
    y += 50
    label.text(MARGIN, y, f"Items: {item_count(view)}", height=40)
    label.text(WIDTH // 2, y, f"Orders: {len(view.order_ids)}", height=40)
    y += 60
    if view.fridge:
        label.box(MARGIN, y, WIDTH - 2 * MARGIN, 130, thickness=8)
        label.text(MARGIN + 30, y + 20, "COLD CHAIN 2-8 C", height=60)
        label.text(MARGIN + 30, y + 85, "keep refrigerated - fridge items inside", height=30)
        y += 150
    label.hline(MARGIN, HEIGHT - 110, WIDTH - 2 * MARGIN, thickness=3)
    label.text(MARGIN, HEIGHT - 90, f"Priority: {view.priority}", height=30)
    return label.build()


def _drug_text(drugs: Mapping[str, Drug], code: str) -> tuple[str, str]:
    drug = drugs.get(code)
    if drug is None:
        return code, ""
    return f"{drug.name} {drug.form} x{drug.pack_size}", drug.strength


def packing_slip(view: ShipmentView, drugs: Mapping[str, Drug], copy: bool = False) -> bytes:
    lines: list[tuple[str, int]] = []  # (text, height)
    if copy:
        lines.append((f"{COPY} - may duplicate a slip printed before; keep one", 32))
    lines.append((f"PACKING SLIP  {view.shipment_id}", 40))
    lines.append(("Orders: " + ", ".join(view.order_ids), 28))
    lines.append(("", 12))
    lines.append(("Packs in this tote:", 32))
    by_batch = Counter((p.drug_code, p.batch, p.expiry) for p in view.picked)
    for (drug_code, batch, expiry), n in sorted(by_batch.items()):
        name, strength = _drug_text(drugs, drug_code)
        lines.append((f"{n} x {name} {strength}", 28))
        lines.append((f"    batch {batch}  exp {expiry:%Y-%m-%d}  GTIN {drug_code}", 24))
    for p in view.picked:
        if p.serial:
            lines.append((f"    serial {p.serial} ({p.batch})", 20))
    if view.manual_picks:
        lines.append(("", 12))
        lines.append(("Manual picks (add at the packing desk, scan each):", 32))
        for m in view.manual_picks:
            name, strength = _drug_text(drugs, m.drug_code)
            mark = " FRIDGE" if m.fridge else ""
            lines.append((f"[ ] {m.quantity} x {name} {strength}{mark}  "
                          f"({len(m.confirmed)} scanned)", 28))
            for p in m.confirmed:
                lines.append((f"    batch {p.batch}  exp {p.expiry:%Y-%m-%d}", 24))
    if view.owed or view.short:
        lines.append(("", 12))
        lines.append(("Not in this shipment (to follow):", 32))
        for o in [*view.owed, *view.short]:
            name, strength = _drug_text(drugs, o.drug_code)
            lines.append((f"{o.count} x {name} {strength}", 28))
    lines.append(("", 12))
    lines.append(("Settlement                    amount  covered  self-pay", 28))
    for b in view.billing:
        lines.append((f"{b.order_id}: {b.quantity} x {b.description}"[:60], 24))
        lines.append((f"    {b.unit_price:>8} ea  {b.amount:>9} {b.covered:>9} "
                      f"{b.self_pay:>9}", 24))
    lines.append((f"Total {view.total}   covered {view.covered}   self-pay {view.self_pay}",
                  32))
    height = MARGIN * 2 + sum(h + 10 for _, h in lines) + 120
    label = Label(WIDTH, max(height, 400))
    y = MARGIN
    for text, h in lines:
        if text:
            label.text(MARGIN, y, text, height=h)
        y += h + 10
    label.code128(MARGIN, y + 10, view.shipment_id, height=80, module_width=2)
    return label.build()


def selftest_label(text: str = "dispenser self-test") -> bytes:
    label = Label(WIDTH, 400)
    label.text(MARGIN, MARGIN, text, height=40)
    label.code128(MARGIN, 120, "SELFTEST", height=100)
    return label.build()
