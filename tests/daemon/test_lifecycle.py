"""Property tests: random trigger sequences against the real machines and an oracle table."""

from __future__ import annotations

import enum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispenser.core.lifecycles import (
    ORDER_LIFECYCLE,
    PACK_LIFECYCLE,
    SHIPMENT_LIFECYCLE,
    IllegalTransition,
    Lifecycle,
)
from dispenser.core.states import (
    ORDER_FINAL,
    SHIPMENT_FINAL,
    OrderState,
    PackState,
    ShipmentState,
)
from dispenser.daemon.controller import (
    CONTROLLER_TABLE,
    ControllerMachine,
    ControllerState,
    InvalidTransition,
)

# The oracle is written out by hand (not derived from the tables) so a typo in a table row
# shows up as a disagreement.
C = ControllerState
CONTROLLER_ORACLE: dict[tuple[ControllerState, str], ControllerState] = {
    (C.STARTUP, "start"): C.HOMING,
    (C.HOMING, "homed"): C.READY,
    (C.READY, "pause"): C.PAUSED,
    (C.PAUSED, "resume"): C.READY,
    (C.MAINTENANCE, "resume"): C.READY,
    (C.READY, "maintenance"): C.MAINTENANCE,
    (C.PAUSED, "maintenance"): C.MAINTENANCE,
    (C.MAINTENANCE, "leave_maintenance"): C.READY,
    **{(s, "fault"): C.FAULT for s in (C.STARTUP, C.HOMING, C.READY, C.PAUSED,
                                       C.MAINTENANCE, C.FAULT)},
    **{(s, "estop"): C.ESTOP for s in (C.STARTUP, C.HOMING, C.READY, C.PAUSED,
                                       C.MAINTENANCE, C.FAULT, C.ESTOP)},
    (C.FAULT, "ack"): C.HOMING,
    (C.ESTOP, "ack"): C.HOMING,
    **{(s, "stop"): C.STOPPING for s in C},
}

Ord = OrderState
ORDER_ORACLE: dict[tuple[OrderState, str], OrderState] = {
    (Ord.RECEIVED, "queue"): Ord.QUEUED, (Ord.HELD, "queue"): Ord.QUEUED,
    (Ord.RECEIVED, "hold"): Ord.HELD, (Ord.QUEUED, "hold"): Ord.HELD,
    (Ord.HELD, "hold"): Ord.HELD,
    (Ord.HELD, "release"): Ord.RECEIVED,
    (Ord.QUEUED, "start_picking"): Ord.PICKING,
    (Ord.PICKING, "start_labelling"): Ord.LABELLING,
    (Ord.LABELLING, "complete"): Ord.COMPLETED,
    (Ord.RECEIVED, "cancel"): Ord.CANCELLED, (Ord.HELD, "cancel"): Ord.CANCELLED,
    (Ord.QUEUED, "cancel"): Ord.CANCELLED,
    (Ord.RECEIVED, "reject"): Ord.REJECTED, (Ord.HELD, "reject"): Ord.REJECTED,
    **{(s, "fail"): Ord.FAILED for s in (Ord.RECEIVED, Ord.HELD, Ord.QUEUED, Ord.PICKING,
                                       Ord.LABELLING)},
}

H = ShipmentState
SHIPMENT_ORACLE: dict[tuple[ShipmentState, str], ShipmentState] = {
    (H.FORMING, "queue"): H.QUEUED, (H.HELD, "queue"): H.QUEUED,
    (H.FORMING, "hold"): H.HELD, (H.QUEUED, "hold"): H.HELD, (H.HELD, "hold"): H.HELD,
    (H.QUEUED, "start_picking"): H.PICKING,
    (H.PICKING, "start_labelling"): H.LABELLING,
    (H.LABELLING, "complete"): H.COMPLETED,
    (H.FORMING, "cancel"): H.CANCELLED, (H.HELD, "cancel"): H.CANCELLED,
    (H.QUEUED, "cancel"): H.CANCELLED,
    **{(s, "fail"): H.FAILED for s in (H.FORMING, H.HELD, H.QUEUED, H.PICKING,
                                       H.LABELLING)},
}

P = PackState
PACK_ORACLE: dict[tuple[PackState, str], PackState] = {
    (P.LOADING, "store"): P.IN_STOCK, (P.LOADING, "refuse"): P.REFUSED,
    (P.IN_STOCK, "pick"): P.PICKED, (P.PICKED, "dispense"): P.DISPENSED,
    (P.PICKED, "dispose"): P.DISPOSED,
    (P.IN_STOCK, "quarantine"): P.QUARANTINED, (P.PICKED, "quarantine"): P.QUARANTINED,
    (P.IN_STOCK, "miss"): P.MISSING, (P.PICKED, "miss"): P.MISSING,
    (P.IN_STOCK, "drop"): P.DROPPED, (P.PICKED, "drop"): P.DROPPED,
}

CONTROLLER_TRIGGERS = sorted({t for _, t in CONTROLLER_ORACLE} | {"bogus"})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(CONTROLLER_TRIGGERS), max_size=40))
def test_controller_follows_oracle(triggers: list[str]) -> None:
    machine = ControllerMachine()
    seen: list[tuple[ControllerState, ControllerState, str]] = []
    machine.add_listener(lambda a, b, t: seen.append((a, b, t)))
    expected = C.STARTUP
    changes = 0
    for trig in triggers:
        want = CONTROLLER_ORACLE.get((expected, trig))
        assert machine.may(trig) is (want is not None)
        if want is None:
            with pytest.raises(InvalidTransition):
                machine.fire(trig)
        else:
            assert machine.fire(trig) is want
            assert seen[-1] == (expected, want, trig)
            changes += 1
            expected = want
        assert machine.state is expected
    assert len(seen) == changes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(CONTROLLER_TRIGGERS), max_size=40))
def test_fault_is_latched_until_ack(triggers: list[str]) -> None:
    """Once in fault or estop, only ack (or stop) leaves; nothing else reaches ready."""
    machine = ControllerMachine()
    for trig in triggers:
        before = machine.state
        if machine.may(trig):
            machine.fire(trig)
        if before in (C.FAULT, C.ESTOP) and trig not in ("ack", "stop"):
            assert machine.state in (C.FAULT, C.ESTOP)


def _validator_case(lc: Lifecycle[Any], oracle: dict[tuple[Any, str], Any],
                    states: type[enum.Enum], triggers: list[str]) -> None:
    state = next(iter(states))
    for trig in triggers:
        want = oracle.get((state, trig))
        assert lc.allows(state, trig) is (want is not None)
        if want is None:
            with pytest.raises(IllegalTransition):
                lc.next_state(state, trig)
        else:
            assert lc.next_state(state, trig) is want
            state = want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*ORDER_LIFECYCLE.triggers, "bogus"]), max_size=30))
def test_order_lifecycle_follows_oracle(triggers: list[str]) -> None:
    _validator_case(ORDER_LIFECYCLE, ORDER_ORACLE, OrderState, triggers)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*SHIPMENT_LIFECYCLE.triggers, "bogus"]), max_size=30))
def test_shipment_lifecycle_follows_oracle(triggers: list[str]) -> None:
    _validator_case(SHIPMENT_LIFECYCLE, SHIPMENT_ORACLE, ShipmentState, triggers)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*PACK_LIFECYCLE.triggers, "bogus"]), max_size=30))
def test_pack_lifecycle_follows_oracle(triggers: list[str]) -> None:
    _validator_case(PACK_LIFECYCLE, PACK_ORACLE, PackState, triggers)


@pytest.mark.parametrize("lc,oracle", [(ORDER_LIFECYCLE, ORDER_ORACLE),
                                       (SHIPMENT_LIFECYCLE, SHIPMENT_ORACLE),
                                       (PACK_LIFECYCLE, PACK_ORACLE)])
def test_every_pair_is_the_oracles(lc: Lifecycle[Any], oracle: dict[tuple[Any, str], Any]
                                   ) -> None:
    """Every (state, trigger) pair of every state, not just the reachable ones."""
    states = {s for s, _ in oracle} | set(oracle.values())
    for s in states:
        for t in lc.triggers:
            assert lc.allows(s, t) is ((s, t) in oracle)


def test_final_states_have_no_way_out() -> None:
    for s in ORDER_FINAL:
        assert ORDER_LIFECYCLE.allowed(s) == []
    for h in SHIPMENT_FINAL:
        assert SHIPMENT_LIFECYCLE.allowed(h) == []
    for p in (PackState.DISPENSED, PackState.REFUSED, PackState.MISSING, PackState.DROPPED):
        assert PACK_LIFECYCLE.allowed(p) == []
    assert ControllerMachine().may("stop")


def test_every_state_is_reachable() -> None:
    reach = {C.STARTUP}
    frontier = [C.STARTUP]
    while frontier:
        s = frontier.pop()
        for row in CONTROLLER_TABLE:
            if s in row.sources and row.dest not in reach:
                reach.add(row.dest)
                frontier.append(row.dest)
    assert reach == set(C)


def test_listener_error_does_not_undo_the_change() -> None:
    errors: list[BaseException] = []
    machine = ControllerMachine(on_listener_error=errors.append)

    def boom(*_: object) -> None:
        raise RuntimeError("listener failed")

    machine.add_listener(boom)
    assert machine.fire("start") is C.HOMING
    assert machine.state is C.HOMING
    assert len(errors) == 1
