"""Loading: a scanned pack is checked, given a slot, stored by the robot (or refused).

A pack is accepted only with a known drug, an expiry and a batch, enough shelf life
(``min_shelf_life_days``), a batch not quarantined and a serial neither in the machine
nor dispensed before. It is ``loading`` from the moment it has a slot until the robot
confirms it stored (``in_stock``, and shipments waiting for the drug are served) or
could not (``refused``, the slot place given back).
"""

from __future__ import annotations

from datetime import date

from dispenser.core.allocation import Allocator
from dispenser.core.books import Books
from dispenser.core.errors import InvalidState, LoadRefused
from dispenser.core.formulary import Drug, Formulary
from dispenser.core.gs1 import ScanData, parse_scan
from dispenser.core.packs import PackBook
from dispenser.core.policy import Policy
from dispenser.core.states import PackState
from dispenser.core.stock import NoFreeSlot, Pack
from dispenser.core.views import SYSTEM, Actor, PackScan, PackView

__all__ = ["Loading", "identify"]


def identify(packs: PackBook, formulary: Formulary, scan: str, today: date, *,
             loading: bool, min_shelf_life_days: int = 0) -> tuple[ScanData, Drug]:
    """The checks every scanned pack passes, for loading (``loading``) and for a manual
    pick: a known drug, an expiry and a batch, not expired (for loading: at least
    ``min_shelf_life_days`` left), a batch not quarantined, a serial neither in the machine
    nor dispensed. Raises ``LoadRefused`` with what to do with the pack."""
    aside = "; set the pack aside" if loading else "; take another pack"
    d = parse_scan(scan)
    drug = formulary.get(d.gtin)
    if drug is None:
        raise LoadRefused("unknown_gtin", f"GTIN {d.gtin} is not in the formulary{aside}")
    if d.expiry is None:
        raise LoadRefused("no_expiry", "the scan has no expiry date (17)" + (
            "; load the pack by hand with its expiry or set it aside" if loading else aside))
    if not d.batch:
        raise LoadRefused("no_batch", "the scan has no batch number (10)" + aside)
    if d.expiry < today:
        raise LoadRefused("expired", f"the pack expired on {d.expiry.isoformat()}"
                          + ("; do not load it" if loading else aside))
    days_left = (d.expiry - today).days
    if loading and days_left < min_shelf_life_days:
        raise LoadRefused("short_shelf_life", f"only {days_left} days of shelf life left; "
                          f"the minimum is {min_shelf_life_days}")
    if (d.gtin, d.batch) in packs.quarantined:
        raise LoadRefused("quarantined", f"batch {d.batch} is quarantined"
                          + ("; do not load it" if loading else aside))
    if d.serial is not None:
        if (d.gtin, d.serial) in packs.serials:
            raise LoadRefused("serial_in_stock", f"serial {d.serial} is already in the "
                              "machine or a tote: this scan is a duplicate or the pack is "
                              "a copy")
        gone = packs.serial_gone(d.gtin, d.serial)
        if gone is PackState.DISPENSED:
            raise LoadRefused("serial_dispensed", f"serial {d.serial} was already "
                              "dispensed; quarantine the pack and report it")
        if gone is PackState.DISPOSED:
            raise LoadRefused("serial_disposed", f"serial {d.serial} left the machine for "
                              "destruction (expiry sweep); put it back with the packs to "
                              "destroy and report it")
    return d, drug


class Loading:
    def __init__(self, books: Books, formulary: Formulary, policy: Policy, packs: PackBook,
                 allocator: Allocator) -> None:
        self.books = books
        self.formulary = formulary
        self.policy = policy
        self.packs = packs
        self.allocator = allocator

    def check_scan(self, scan: str) -> PackScan:
        """Would this pack be accepted? Raises ``LoadRefused`` with the reason."""
        d, drug = identify(self.packs, self.formulary, scan, self.books.today(),
                           loading=True, min_shelf_life_days=self.policy.min_shelf_life_days)
        assert d.expiry is not None and d.batch is not None  # checked by identify
        return PackScan(d.gtin, d.expiry, d.batch, d.serial, drug.label, drug.robot)

    def begin_load(self, scan: str, actor: Actor) -> PackView:
        """Accept a scanned pack for loading and give it a slot (state ``loading``)."""
        ps = self.check_scan(scan)
        if not ps.robot:
            raise LoadRefused("not_for_robot", f"{ps.name} is a fridge or manual item; it "
                              "is not stored in the robot")
        stock = self.packs.stock
        try:
            slot = stock.choose_slot(ps.drug_code, ps.batch, ps.expiry)
        except NoFreeSlot:
            raise LoadRefused("no_free_slot", "the robot has no free slot; dispense or "
                              "remove stock first") from None
        stock.slots[slot].incoming += 1
        p = Pack(self.packs.new_id(), ps.drug_code, ps.batch, ps.expiry, ps.serial,
                 PackState.LOADING, slot)
        self.packs.insert(p, actor, "pack.loading")
        return self.packs.view(p.pack_id)

    def _loading_pack(self, pack_id: int) -> Pack:
        p = self.packs.live.get(pack_id)
        if p is None or p.state is not PackState.LOADING or p.slot is None:
            raise InvalidState(f"pack {pack_id} is not being loaded")
        return p

    def confirm_stored(self, pack_id: int, actor: Actor = SYSTEM) -> PackView:
        """The robot confirmed the pack is in its slot; held shipments may now go."""
        p = self._loading_pack(pack_id)
        assert p.slot is not None
        packs = self.packs
        p.store_seq = packs.next_store_seq
        packs.next_store_seq += 1
        packs.stock.place(p.slot, p.drug_code, p.batch, p.expiry, p.pack_id, incoming=True)
        packs.fire(p, "store", actor)
        if (p.drug_code, p.batch) in packs.quarantined or packs.stock.slots[p.slot].blocked:
            packs.block_slot(p.slot, actor, "stored into a quarantined batch or slot")
        else:
            self.allocator.retry_waiting([p.drug_code])
        return packs.view(p.pack_id)

    def refuse_stored(self, pack_id: int, reason: str, actor: Actor = SYSTEM) -> PackView:
        """The robot could not store the pack; its slot place is given back."""
        p = self._loading_pack(pack_id)
        assert p.slot is not None
        self.packs.stock.cancel_incoming(p.slot)
        self.packs.fire(p, "refuse", actor, reason=reason)
        return self.packs.view(p.pack_id)
