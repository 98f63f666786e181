"""Every method is refused to a role that may not call it, and to a caller without a role."""

from __future__ import annotations

import pytest

from dispenser.api.protocol import ApiError, ErrorCode
from tests.e2e.harness import Daemon

ALL = {"order_system", "staff", "technician"}
STAFF = {"staff", "technician"}
TECH = {"technician"}

# docs/api.md, Methods: the roles each method admits.
METHODS = {
    "order.submit": ALL, "order.submit_batch": ALL, "order.cancel": ALL, "order.get": ALL,
    "order.list": ALL, "shipment.get": ALL, "shipment.list": ALL, "machine.status": ALL,
    "events.subscribe": ALL,
    "order.release": STAFF, "order.reject": STAFF, "shipment.confirm_manual": STAFF,
    "stock.list": STAFF, "stock.load": STAFF, "stock.quarantine": STAFF,
    "stock.discrepancies": STAFF, "machine.pause": STAFF, "machine.resume": STAFF,
    "fault.list": STAFF, "fault.ack": STAFF, "label.reprint": STAFF,
    "machine.maintenance": TECH, "diag.registers": TECH, "diag.selftest": TECH,
    "diag.printer": TECH, "diag.stats": TECH, "audit.verify": TECH,
}


async def test_every_method_refused_to_roles_that_may_not_call_it(daemon: Daemon) -> None:
    daemon.start()
    clients = {role: await daemon.client(role) for role in ALL}
    anonymous = await daemon.client(None)
    try:
        staff = clients["staff"]
        await daemon.wait_ready(staff)
        before = await staff.call("machine.status")
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
        # Nothing changed, and every refused mutating call is in the audit trail.
        after = await staff.call("machine.status")
        assert after["state"] == before["state"] == "ready"
        verify = await clients["technician"].call("audit.verify")
        assert verify["ok"] is True
        assert verify["records"] >= sum(
            1 for m in ("order.submit", "order.cancel", "order.release", "stock.load",
                        "machine.pause", "fault.ack", "diag.selftest")
            for _ in range(2))
    finally:
        for c in [*clients.values(), anonymous]:
            await c.close()
