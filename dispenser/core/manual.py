"""Manual picks: fridge and other non-robot items that staff put in the tote by hand.

Each such pack is scanned into its shipment (``confirm``): it passes the same checks as a
pack loaded into the robot (except shelf life, which the pharmacist sees on the pack), must
be on the shipment's manual pick list, and is recorded as ``picked`` for that order.
"""

from __future__ import annotations

from dispenser.core.books import Books
from dispenser.core.errors import LoadRefused
from dispenser.core.formulary import Formulary
from dispenser.core.loading import identify
from dispenser.core.packs import PackBook
from dispenser.core.shipments import ShipmentBook
from dispenser.core.states import PackState, ShipmentState
from dispenser.core.stock import Pack
from dispenser.core.views import Actor, PackView

__all__ = ["ManualPicks"]


class ManualPicks:
    def __init__(self, books: Books, formulary: Formulary, packs: PackBook,
                 shipments: ShipmentBook) -> None:
        self.books = books
        self.formulary = formulary
        self.packs = packs
        self.shipments = shipments

    def confirm(self, shipment_id: str, scan: str, actor: Actor) -> PackView:
        """Staff confirm a fridge/manual pack for a shipment by scanning it."""
        sh = self.shipments.live_shipment(shipment_id, ShipmentState.QUEUED,
                                          ShipmentState.PICKING, ShipmentState.LABELLING)
        d, drug = identify(self.packs, self.formulary, scan, self.books.today(),
                           loading=False)
        assert d.expiry is not None and d.batch is not None  # checked by identify
        line = next((ln for ln in sh.lines if not ln.robot and ln.drug_code == d.gtin
                     and not ln.done), None)
        if line is None:
            raise LoadRefused("not_on_pick_list", f"{drug.label} is not (or no longer) on "
                              f"the manual pick list of shipment {shipment_id}")
        p = Pack(self.packs.new_id(), d.gtin, d.batch, d.expiry, d.serial, PackState.PICKED,
                 None, None, sh.shipment_id, line.order_id)
        self.packs.insert(p, actor, "pack.confirmed_manual")
        line.packs.append(p.pack_id)
        self.shipments.save(sh)
        return self.packs.view(p.pack_id)
