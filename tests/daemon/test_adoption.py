"""Settling the commands a replaced robot never confirmed, from the counts of their slots
(``dispenser.daemon.adoption.settle``): the robot did them in seq order, so what it did is
the smallest prefix that explains every count and what lies at the input point."""

from __future__ import annotations

from dispenser.daemon.adoption import settle
from dispenser.daemon.ledger import Intent
from dispenser.daemon.robot import Motion


def pick(seq: int, slot: int, count: int) -> Intent:
    return Intent(seq, Motion.PICK, slot, 1, count, shipment_id="SH-1")


def store(seq: int, slot: int, pack_id: int) -> Intent:
    return Intent(seq, Motion.STORE, slot, 0, 1, pack_id=pack_id)


def hand_on(seq: int) -> Intent:
    return Intent(seq, Motion.HAND_ON, 0, 1, 0, shipment_id="SH-1")


UNKNOWN = [pick(10, 5, 2), pick(11, 6, 1), store(12, 7, 99), hand_on(13), pick(14, 5, 1)]
EXPECTED = {5: 6, 6: 3, 7: 0}


def test_nothing_done() -> None:
    s = settle(UNKNOWN, EXPECTED, {5: 6, 6: 3, 7: 0}, at_input=99)
    assert s.cut == 0 and s.moved == {}


def test_the_picks_and_the_store_done_the_hand_on_sent_again() -> None:
    # Slot 7 has the stored pack, nothing at the input: the first three were done; the
    # hand-on changes no count, so the smallest cut leaves it (and the last pick) undone.
    s = settle(UNKNOWN, EXPECTED, {5: 4, 6: 2, 7: 1}, at_input=None)
    assert s.cut == 3
    assert s.moved == {10: 2, 11: 1, 12: 1}


def test_the_last_pick_done_takes_the_hand_on_with_it() -> None:
    s = settle(UNKNOWN, EXPECTED, {5: 3, 6: 2, 7: 1}, at_input=None)
    assert s.cut == 5 and s.moved[14] == 1


def test_a_pick_from_a_slot_with_fewer_packs_moved_what_was_there() -> None:
    s = settle([pick(1, 5, 3)], {5: 2}, {5: 0}, at_input=None)
    assert s.cut == 1 and s.moved == {1: 2}


def test_the_pack_still_at_the_input_point_means_its_store_was_not_done() -> None:
    # Counts alone would allow the store done (slot 7: 1 vs 0 ...) but here slot 7 was
    # counted 0 and the pack lies at the input point: the store is after the cut.
    s = settle(UNKNOWN, EXPECTED, {5: 4, 6: 2, 7: 0}, at_input=99)
    assert s.cut == 2


def test_counts_no_order_of_events_explains_leave_it_unknown() -> None:
    # A pack more in slot 5 than the journal ever had there, or a store done while its
    # pack still lies at the input point: nothing fits.
    assert settle(UNKNOWN, EXPECTED, {5: 7, 6: 3, 7: 0}, at_input=99).cut is None
    assert settle(UNKNOWN, EXPECTED, {5: 4, 6: 2, 7: 1}, at_input=99).cut is None
