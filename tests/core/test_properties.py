"""Property tests: random sequences of operations against the real core.

After every step: no pack is reserved twice, every shipment holds orders of one patient
and one address, picked packs belong to exactly one shipment line, the pack counts match
the packs; after every merge round FEFO holds among the packs that last the supply, and
when picking starts no reservation is on a pack that aged out since; at the end the audit
chain verifies, a restart rebuilds the same state, and every change of state the audit
trail records is a row of its lifecycle table (and each entity's recorded changes follow
on from each other up to its state now). The expiry sweep takes only near-expiry packs no
one else holds, and they end ``disposed``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dispenser.core import Dispensary
from dispenser.core.errors import DispenserError, InvalidState
from dispenser.core.expiry import earliest_expiry
from dispenser.core.lifecycles import (
    ORDER_LIFECYCLE,
    PACK_LIFECYCLE,
    SHIPMENT_LIFECYCLE,
    TASK_LIFECYCLE,
    Lifecycle,
)
from dispenser.core.policy import Policy
from dispenser.core.states import OrderState, PackState, ShipmentState
from dispenser.core.stock import SlotGeometry, StockIndex
from dispenser.journal import Journal
from dispenser.testing.core import (
    API,
    DEMO_FORMULARY,
    LOADER,
    PHARMACIST,
    FakeClock,
    fridge_drugs,
    make_order,
    robot_drugs,
    scan,
)

DRUGS = [d.drug_code for d in robot_drugs()[:3]]
FRIDGE = fridge_drugs()[0]
# batch -> expiry: a batch has one date. Batch 0 lasts a 30-day supply for the first five
# weeks of the clock (``age`` makes days go by), batch 1 for seven months.
EXPIRY = {0: "270100", 1: "270700", 2: "281200"}
POLICY = Policy(duplicate_dispensing="off", duplicate_prescription="off")


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.journal = Journal(Path(self.tmp.name) / "j.db")
        self.d = Dispensary(self.journal, DEMO_FORMULARY, POLICY, SlotGeometry(1, 3, 10, 4),
                            self.clock)

    def teardown(self) -> None:
        try:
            result = self.d.audit_verify()
            assert result.ok, result
            again = Dispensary(self.journal, DEMO_FORMULARY, POLICY, self.d.geometry, self.clock)
            assert again.orders.live == self.d.orders.live
            assert again.shipments.live == self.d.shipments.live
            assert again.packs.live == self.d.packs.live
            assert again.stock_counts() == self.d.stock_counts()
            assert {n: (s.reserved, s.packs, s.blocked) for n, s in again.stock.slots.items()} \
                == {n: (s.reserved, s.packs, s.blocked) for n, s in self.d.stock.slots.items()}
            self._audit_follows_the_tables()
        finally:
            self.journal.close()
            self.tmp.cleanup()

    # ---------------------------------------------------------------- rules
    @rule(drug=st.integers(0, 2), batch=st.integers(0, 2), n=st.integers(1, 6),
          refuse=st.booleans())
    def load(self, drug: int, batch: int, n: int, refuse: bool) -> None:
        for i in range(n):
            try:
                p = self.d.begin_load(scan(DRUGS[drug], EXPIRY[batch], f"B{batch}"), LOADER)
            except DispenserError:
                return
            if refuse and i == 0:
                self.d.refuse_stored(p.pack_id, "gripper")
            else:
                self.d.confirm_stored(p.pack_id)

    @rule(patient=st.integers(0, 2), address=st.integers(0, 1),
          items=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), min_size=1,
                         max_size=3, unique_by=lambda t: t[0]),
          urgent=st.booleans(), eligible=st.integers(0, 4))
    def submit(self, patient: int, address: int, items: list[tuple[int, int]],
               urgent: bool, eligible: int = 1) -> None:
        codes = [(DRUGS[i] if i < 3 else FRIDGE.drug_code, q) for i, q in items]
        tomorrow = self.clock().date() + timedelta(days=1)  # the clock ages (``age``)
        self.d.submit(make_order(codes, patient=f"P{patient}", address=f"Street {address}",
                                 priority="urgent" if urgent else "normal",
                                 diagnoses=["E11"] if eligible else ["I10"],
                                 window_start=f"{tomorrow}T09:00:00+08:00"), API)

    @rule(patient=st.integers(0, 2), drug=st.integers(0, 2), q=st.integers(1, 2))
    def submit_and_form(self, patient: int, drug: int, q: int) -> None:
        self.submit(patient, 0, [(drug, q)], False)
        self.form(301)

    @rule(wait=st.sampled_from([0, 100, 301]))
    def form(self, wait: int) -> None:
        self.clock.advance(wait)
        before = self._reserved()
        self.d.form_shipments()
        after = self._reserved()
        # Every order of this machine asks for 30 days: the packs that qualify (issue 8).
        earliest = earliest_expiry(POLICY, self.clock().date(), 30)
        for slot_no, n in after.items():
            if n > before.get(slot_no, 0):  # reserved in this round
                s = self.d.stock.slots[slot_no]
                assert s.expiry >= earliest, "a pack that does not last the supply"
                for other in self._slots_of(s.drug_code):
                    if other.available > 0 and other.expiry >= earliest:
                        assert other.expiry >= s.expiry, "FEFO violated"

    @rule(days=st.sampled_from([1, 20, 60, 200]))
    def age(self, days: int) -> None:
        """Days go by: packs age in the machine (reservations made before stay until
        picking starts)."""
        self.clock.advance(days * 86400)

    @rule(pick=st.integers(0, 50))
    def cancel(self, pick: int) -> None:
        live = sorted(self.d.orders.live)
        if live:
            with contextlib.suppress(InvalidState):
                self.d.cancel(live[pick % len(live)], API, "test")

    @rule(pick=st.integers(0, 50))
    def start_picking(self, pick: int) -> None:
        queued = self._shipments(ShipmentState.QUEUED)
        if queued:
            view = self.d.start_picking(queued[pick % len(queued)])
            earliest = earliest_expiry(POLICY, self.clock().date(), 30)
            for p in view.robot_picks:  # checked again today: none aged out
                assert self.d.stock.slots[p.slot].expiry >= earliest, (p, earliest)

    @rule(pick=st.integers(0, 50), short=st.booleans())
    def record_pick(self, pick: int, short: bool) -> None:
        lines = [(sid, slot, count) for sid in self._shipments(ShipmentState.PICKING)
                 for slot, count in self._per_slot(sid).items()]
        if lines:
            sid, slot, count = lines[pick % len(lines)]
            self.d.record_pick(sid, slot, count - 1 if short else count)

    @rule(pick=st.integers(0, 50))
    def finish(self, pick: int) -> None:
        picking = self._shipments(ShipmentState.PICKING)
        if not picking:
            return
        sid = picking[pick % len(picking)]
        view = self.d.get_shipment(sid)
        for slot, count in self._per_slot(sid).items():
            self.d.record_pick(sid, slot, count)
        if self.d.get_shipment(sid).owed:
            return
        self.d.start_labelling(sid)
        fresh = (self.clock().date() + timedelta(days=400)).strftime("%y%m%d")
        for m in view.manual_picks:
            for _ in range(m.quantity - len(m.confirmed)):
                self.d.confirm_manual(sid, scan(m.drug_code, fresh), LOADER)
        self.d.complete_shipment(sid)

    @rule(drug=st.integers(0, 2), batch=st.integers(0, 2), go=st.integers(0, 3))
    def quarantine(self, drug: int, batch: int, go: int) -> None:
        if go:  # rarer than the daily work
            return
        self.d.quarantine_batch(DRUGS[drug], f"B{batch}", PHARMACIST, "recall")

    @rule(pick=st.integers(0, 50), lost=st.sampled_from([PackState.MISSING,
                                                         PackState.DROPPED]))
    def lose(self, pick: int, lost: PackState) -> None:
        packs = sorted(p for p, v in self.d.packs.live.items()
                       if v.state in (PackState.IN_STOCK, PackState.PICKED) and v.slot is not None)
        if packs:
            self.d.record_pack_lost(packs[pick % len(packs)], lost)

    @rule(pick=st.integers(0, 50), delta=st.integers(-1, 1), go=st.integers(0, 2))
    def count_slot(self, pick: int, delta: int, go: int) -> None:
        if go:
            return
        slots = sorted(n for n, s in self.d.stock.slots.items() if not s.blocked)
        if slots:
            n = slots[pick % len(slots)]
            self.d.record_slot_count(n, max(0, len(self.d.stock.slots[n].packs) + delta),
                                     LOADER)

    @rule(pick=st.integers(0, 50), release=st.booleans())
    def decide_hold(self, pick: int, release: bool) -> None:
        held = sorted(o for o, v in self.d.orders.live.items()
                      if v.state is OrderState.HELD and v.shipment_id is None)
        if held:
            oid = held[pick % len(held)]
            if release:
                self.d.release(oid, PHARMACIST, "checked")
            else:
                self.d.reject(oid, PHARMACIST, "refused")

    @rule(go=st.integers(0, 3), short=st.booleans())
    def sweep(self, go: int, short: bool) -> None:
        """The expiry sweep, worked to its end in one step (start, pick, hand on): it
        takes only near-expiry packs no one else holds, and they end ``disposed``."""
        if go:
            return
        line = self.d.packs.near_expiry_before()
        held = {n for n, s in self.d.stock.slots.items() if s.reserved}
        swept = self.d.sweep_stock(1, 5, LOADER)
        for v in swept.packs:
            assert v.expiry < line and v.state is PackState.IN_STOCK, v
            assert v.slot not in held, v
        for t in swept.tasks:
            self.d.start_task(t.task_id)
            for i, (slot, count) in enumerate(self.d.get_task(t.task_id).picks):
                self.d.record_task_pick(t.task_id, slot, count - 1 if short and not i
                                        else count)
            done = self.d.finish_task(t.task_id)
            assert all(p.state is PackState.DISPOSED for p in done.packs), done
        assert self.d.sweep_under_way() is None

    @rule(pick=st.integers(0, 50), go=st.integers(0, 3))
    def fail(self, pick: int, go: int) -> None:
        if go:
            return
        live = sorted(self.d.shipments.live)
        if live:
            self.d.fail_shipment(live[pick % len(live)], PHARMACIST, "test")

    # ---------------------------------------------------------------- invariants
    @invariant()
    def no_pack_reserved_twice(self) -> None:
        reserved = self._reserved()
        for n, s in self.d.stock.slots.items():
            assert s.reserved == reserved.get(n, 0), (n, s.reserved, reserved.get(n))
            if s.blocked:
                assert s.reserved == 0
            else:
                assert s.reserved <= len(s.packs)
                assert all(self.d.packs.live[p].state is PackState.IN_STOCK for p in s.packs)
        owners: dict[int, str] = {}
        for sh in self.d.shipments.live.values():
            for ln in sh.lines:
                for p in ln.packs:
                    assert p not in owners, f"pack {p} in two lines"
                    owners[p] = sh.shipment_id
                    assert self.d.packs.live[p].state is PackState.PICKED
        picked = {p for p, v in self.d.packs.live.items() if v.state is PackState.PICKED}
        assert picked == set(owners)

    @invariant()
    def stock_counts_match_the_packs(self) -> None:
        live = list(self.d.packs.live.values())
        for state in PackState:
            assert self.d.packs.counts[state] == sum(1 for p in live if p.state is state)
        assert self.d.stock.by_expiry == sorted(s.fefo_key() for s in self.d.stock.slots.values())

    @invariant()
    def one_patient_one_address_per_shipment(self) -> None:
        for sh in self.d.shipments.live.values():
            orders = [self.d.orders.live[o] for o in sh.order_ids]
            assert {(o.patient_id, o.address_key) for o in orders} <= {
                (sh.patient_id, sh.address_key)}
            assert all(o.shipment_id == sh.shipment_id for o in orders)

    # ---------------------------------------------------------------- the audit trail
    def _audit_follows_the_tables(self) -> None:
        def lifecycle(subject: str) -> Lifecycle[Any]:
            if subject.startswith("SH-"):
                return SHIPMENT_LIFECYCLE
            if subject.startswith("pack:"):
                return PACK_LIFECYCLE
            if subject.startswith("OT-"):
                return TASK_LIFECYCLE
            return ORDER_LIFECYCLE

        states: dict[str, str] = {}
        for subject, action, before, after in self.journal.query(
                "SELECT subject, action, before, after FROM audit ORDER BY id"):
            a = json.loads(after) if after else {}
            b = json.loads(before) if before else {}
            if "state" not in a:
                continue
            lc = lifecycle(subject)
            kind = type(next(iter(lc.created)))
            if "state" not in b:  # created
                assert kind(a["state"]) in lc.created, (subject, action, a)
            else:
                assert states.get(subject) == b["state"], (subject, action, b)
                assert lc.next_state(kind(b["state"]), a["trigger"]).value == a["state"], (
                    subject, action, b, a)
            states[subject] = a["state"]
        assert not [r for r in self.journal.query(
            "SELECT 1 FROM audit WHERE action = 'lifecycle.refused'")]
        for oid, state in self.journal.query("SELECT order_id, state FROM orders"):
            assert states[oid] == state, oid
        for sid, state in self.journal.query("SELECT shipment_id, state FROM shipments"):
            assert states[sid] == state, sid
        for pid, state in self.journal.query("SELECT pack_id, state FROM packs"):
            assert states[f"pack:{pid}"] == state, pid
        for tid, state in self.journal.query("SELECT task_id, state FROM tasks"):
            assert states[tid] == state, tid

    # ---------------------------------------------------------------- helpers
    def _per_slot(self, sid: str) -> dict[int, int]:
        """What the robot is asked for: packs per slot (record_pick reports per slot)."""
        out: dict[int, int] = {}
        for p in self.d.get_shipment(sid).robot_picks:
            out[p.slot] = out.get(p.slot, 0) + p.count
        return out

    def _reserved(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for sh in self.d.shipments.live.values():
            for ln in sh.lines:
                for slot_no, n in ln.reserved:
                    out[slot_no] = out.get(slot_no, 0) + n
        return out

    def _slots_of(self, drug_code: str) -> list[object]:
        return [self.d.stock.slots[n] for _, n in self.d.stock.by_drug.get(drug_code, [])]

    def _shipments(self, state: ShipmentState) -> list[str]:
        return sorted(s for s, sh in self.d.shipments.live.items() if sh.state is state)


CoreMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestCoreMachine = CoreMachine.TestCase




@settings(max_examples=150, deadline=None)
@given(
    packs=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 3)), min_size=1, max_size=25),
    wants=st.lists(st.integers(1, 6), min_size=1, max_size=8))
def test_allocate_is_fefo_and_never_over_reserves(packs: list[tuple[int, int]],
                                                  wants: list[int]) -> None:
    stock = StockIndex(SlotGeometry(1, 4, 10, 3))
    pid = 0
    for month, n in packs:
        expiry = date(2027, month + 1, 1)
        for _ in range(n):
            slot = stock.choose_slot("G", f"L{month}", expiry)
            pid += 1
            stock.place(slot, "G", f"L{month}", expiry, pid, incoming=False)
    today = date(2027, 3, 1)  # months 0 and 1 have expired
    taken: list[date] = []
    for want in wants:
        picks, short = stock.allocate("G", want, today)
        assert sum(n for _, n in picks) + short == want
        taken += [stock.slots[s].expiry for s, n in picks for _ in range(n)]
    assert all(e >= today for e in taken)
    assert taken == sorted(taken)  # earliest expiry first, across every call
    for s in stock.slots.values():
        assert 0 <= s.reserved <= len(s.packs)
