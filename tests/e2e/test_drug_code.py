"""The drug identifier is ``drug_code`` in what the API answers and takes; ``gtin``, its
old name, is still taken by ``stock.quarantine`` (until 0.3.0, docs/api.md "Old names"),
and a call giving both with different values is refused."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.testing import Daemon, Sim, drugs, list_all, load_packs, pack

EXPIRY = date.today() + timedelta(days=300)


async def test_stock_answers_and_quarantine_take_drug_code(daemon: Daemon, sim: Sim) -> None:
    robot = drugs()["robot"]
    code, other = robot[0]["drug_code"], robot[1]["drug_code"]
    daemon.start()
    staff = await daemon.client("staff")
    try:
        await daemon.wait_ready(staff)
        stock = [pack(code, batch, EXPIRY, f"DC-{batch}-{i}")
                 for batch in ("NEW", "OLD", "BOTH", "DIFF") for i in range(2)]
        loaded = await load_packs(sim, staff, stock)
        assert [(p["drug_code"], p["state"]) for p in loaded] == [(code, "in_stock")] * 8
        assert not any("gtin" in p for p in loaded)

        listed = await list_all(staff, "stock.list", {"drug_code": code}, "pack_id")
        assert len(listed) == 8
        assert all(p["drug_code"] == code and "gtin" not in p for p in listed), listed
        assert await list_all(staff, "stock.list", {"drug_code": other}, "pack_id") == []

        async def quarantine(params: dict[str, str]) -> object:
            return await staff.call("stock.quarantine", {**params, "reason": "recall R-9"})

        assert await quarantine({"drug_code": code, "batch": "NEW"}) == {"quarantined": 2}
        assert await quarantine({"gtin": code, "batch": "OLD"}) == {"quarantined": 2}
        assert await quarantine({"drug_code": code, "gtin": code, "batch": "BOTH"}) == {
            "quarantined": 2}
        with pytest.raises(ApiError) as refused:
            await quarantine({"drug_code": code, "gtin": other, "batch": "DIFF"})
        assert refused.value.code == ErrorCode.INVALID_PARAMS
        assert "drug_code and gtin differ" in refused.value.message, refused.value.message

        held = await list_all(staff, "stock.list", {"drug_code": code, "state": "quarantined"},
                              "pack_id")
        assert sorted({p["batch"] for p in held}) == ["BOTH", "NEW", "OLD"]
        left = await list_all(staff, "stock.list", {"drug_code": code}, "pack_id")
        assert [p["batch"] for p in left] == ["DIFF", "DIFF"]
    finally:
        await staff.close()
