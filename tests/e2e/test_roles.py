"""Every method is refused to a role that may not call it, and to a caller without a role.

A refused mutating call of a caller with a role is audited (one row each); a call refused
to a caller without a role is only counted (docs/api.md, Limits)."""

from __future__ import annotations

import pytest

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.testing import Daemon

ALL = {"order_system", "staff", "technician"}
STAFF = {"staff", "technician"}
TECH = {"technician"}

# docs/api.md, Methods: the roles each method admits.
METHODS = {
    "order.submit": ALL, "order.submit_batch": ALL, "order.cancel": ALL, "order.get": ALL,
    "order.list": ALL, "shipment.get": ALL, "shipment.list": ALL, "task.get": ALL,
    "task.list": ALL, "machine.status": ALL,
    "events.subscribe": ALL, "events.unsubscribe": ALL,
    "order.release": STAFF, "order.reject": STAFF, "shipment.confirm_manual": STAFF,
    "stock.list": STAFF, "stock.load": STAFF, "stock.quarantine": STAFF,
    "stock.discrepancies": STAFF, "machine.pause": STAFF, "machine.resume": STAFF,
    "fault.list": STAFF, "fault.ack": STAFF, "label.reprint": STAFF,
    "machine.maintenance": TECH, "robot.adopt": TECH, "diag.registers": TECH, "diag.selftest": TECH,
    "diag.printer": TECH, "diag.stats": TECH, "audit.verify": TECH,
}
MUTATING = {"order.submit", "order.submit_batch", "order.cancel", "order.release",
            "order.reject", "shipment.confirm_manual", "stock.load", "stock.quarantine",
            "machine.pause", "machine.resume", "machine.maintenance", "fault.ack",
            "label.reprint", "diag.selftest", "robot.adopt"}


async def test_every_method_refused_to_roles_that_may_not_call_it(daemon: Daemon) -> None:
    daemon.start()
    clients = {role: await daemon.client(role) for role in ALL}
    anonymous = await daemon.client(None)
    try:
        staff = clients["staff"]
        await daemon.wait_ready(staff)
        before = await staff.call("machine.status")
        records = (await clients["technician"].call("audit.verify"))["records"]
        for method, allowed in METHODS.items():
            for role in sorted(ALL - allowed):
                with pytest.raises(ApiError) as err:
                    await clients[role].call(method, {})
                assert err.value.code == ErrorCode.FORBIDDEN, (method, role, err.value)
            with pytest.raises(ApiError) as err:
                await anonymous.call(method, {})
            assert err.value.code == ErrorCode.UNAUTHENTICATED, (method, err.value)
        # Public methods answer without a role.
        assert (await anonymous.call("system.ping"))["pong"] is True
        info = await anonymous.call("system.info")
        assert info["outputs"] == 4
        # Nothing changed; every refused mutating call of a role is in the audit trail,
        # and the calls without a role are counted instead, one per method.
        after = await staff.call("machine.status")
        assert after["state"] == before["state"] == "ready"
        verify = await clients["technician"].call("audit.verify")
        assert verify["ok"] is True
        assert verify["records"] - records == sum(
            len(ALL - allowed) for m, allowed in METHODS.items() if m in MUTATING)
        stats = await clients["technician"].call("diag.stats")
        assert stats["api"]["refused_without_role"] == {
            m: {"unauthenticated": 1} for m in METHODS}
    finally:
        for c in [*clients.values(), anonymous]:
            await c.close()
