"""Loading asks the pharmacy software (``input_mode = "wwks2"``) and the article master
maps its article ids (``article_mapping = "article_master"``), against real dispenserd
and dispenser-sim processes: InputRequest for each scanned pack, Allowed -> stored ->
InputMessage Completed with the pack's id; Rejected, RejectedNoPickingIndicator (asked
again), AllowedForFridge, no answer; ArticleMasterSet replacing the list, kept across a
restart, its fridge flag respected."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import pytest

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError
from dispenser.testing import Sim, drugs, pack, scan
from dispenser.testing.ims_client import E, Received
from dispenser.testing.wwks2 import (
    Wwks2Daemon,
    criteria,
    output,
    packs_of,
    status_of,
)

TODAY = date.today()
A, B = (r["drug_code"] for r in drugs()["robot"][40:42])
EXP = TODAY + timedelta(days=300)


def answer(request: Received, handling: str, article: str | None = None,
           text: str | None = None, **article_attrs: Any) -> Any:
    offered = request.lead.find("Article/Pack")
    assert offered is not None
    return E("InputResponse", E("Article", E("Pack", E("Handling", Input=handling, Text=text),
                                             Index="0", ScanCode=offered.get("ScanCode")),
                                Id=article, **article_attrs),
             Id=request.id, Source=100, Destination=999)


async def load(staff: ApiClient, p: dict[str, str]) -> asyncio.Task[Any]:
    return asyncio.create_task(staff.call("stock.load", {"scan": scan(p), "wait": True},
                                          timeout=60))


async def refused(task: asyncio.Task[Any]) -> str:
    with pytest.raises(ApiError) as err:
        await task
    assert err.value.data is not None
    return str(err.value.data["reason"])


async def test_loading_asks_the_pharmacy_software(daemon: Wwks2Daemon,
                                                  sim: Sim) -> None:
    daemon.wwks2 = ('input_mode = "wwks2"\ninput_timeout_s = 2\n'
                    'article_mapping = "article_master"')
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    ims = await daemon.ims(100)
    try:
        hello = ims.frames[0].lead.find("Subscriber")
        assert hello is not None
        assert "Input" in [c.get("Name") for c in hello.findall("Capability")]
        # The article master: MET-500 is drug A (by its EAN-13), INS-1 drug B but kept
        # in the fridge by the pharmacy; a list with an id twice is refused whole.
        twice = await ims.request("ArticleMasterSetRequest", E("Article", Id="X"),
                                  E("Article", Id="X"))
        assert twice.lead.find("SetResult").get("Value") == "Rejected"  # type: ignore[union-attr]
        master = await ims.request(
            "ArticleMasterSetRequest",
            E("Article", E("ProductCode", Code=A[1:]), Id="MET-500", Name="Metformin 500",
              DosageForm="Tablet", PackagingUnit="60", RequiresFridge="False"),
            E("Article", E("ProductCode", Code=B), Id="INS-1", Name="Insulin",
              RequiresFridge="True"))
        assert master.lead.find("SetResult").get("Value") == "Accepted"  # type: ignore[union-attr]

        # Allowed: asked before storing, stored, InputMessage Completed with the pack id.
        p1 = pack(A, "LA", EXP, "IN1")
        await sim.call("sim.put_input", {"packs": [p1]})
        loading = await load(staff, p1)
        request = await ims.expect("InputRequest", timeout=10)
        offered = request.lead.find("Article/Pack")
        assert offered is not None and offered.get("SerialNumber") == "IN1"
        assert offered.get("ScanCode") == scan(p1).removeprefix("]d2").replace("\x1d",
                                                                               "\\x1D")
        assert offered.get("BatchNumber") == "LA" and offered.get("ExpiryDate") == str(EXP)
        assert not loading.done()  # nothing stored before the answer
        await ims.send(answer(request, "Allowed", "MET-500"))
        stored = await loading
        assert stored["state"] == "in_stock"
        message = await ims.expect("InputMessage", request.id)
        got = message.lead.find("Article")
        assert got is not None and got.get("Id") == "MET-500"
        assert got.find("Pack").get("Id") == str(stored["pack_id"])  # type: ignore[union-attr]
        assert got.find("Pack/Handling").get("Input") == "Completed"  # type: ignore[union-attr]

        # Packs scanned one after the other are asked about one at a time, in that order
        # (they lie at the input point in that order).
        p3, p4 = pack(A, "LA", EXP, "IN3"), pack(A, "LA", EXP, "IN4")
        await sim.call("sim.put_input", {"packs": [p3, p4]})
        other = await daemon.client("staff")  # a second desk, so the calls overlap
        third = await load(staff, p3)
        await asyncio.sleep(0.1)
        fourth = await load(other, p4)
        asked = await ims.expect("InputRequest")
        await asyncio.sleep(0.3)
        assert not ims.inbox("InputRequest")  # the second waits for the first's answer
        assert asked.lead.find("Article/Pack").get("SerialNumber") == "IN3"  # type: ignore[union-attr]
        await ims.send(answer(asked, "Allowed", "MET-500"))
        asked = await ims.expect("InputRequest")
        assert asked.lead.find("Article/Pack").get("SerialNumber") == "IN4"  # type: ignore[union-attr]
        await ims.send(answer(asked, "Allowed", "MET-500"))
        assert [(await third)["state"], (await fourth)["state"]] == ["in_stock"] * 2
        await other.close()

        # RejectedNoPickingIndicator: asked again, same Id, with SetPickingIndicator.
        p2 = pack(A, "LA", EXP, "IN2")
        await sim.call("sim.put_input", {"packs": [p2]})
        loading = await load(staff, p2)
        first = await ims.expect("InputRequest")
        await ims.send(answer(first, "RejectedNoPickingIndicator"))
        second = await ims.expect("InputRequest", first.id)
        assert second.lead.get("SetPickingIndicator") == "True"
        await ims.send(answer(second, "Allowed", "MET-500"))
        assert (await loading)["state"] == "in_stock"
        assert (await ims.expect("InputMessage", first.id)).lead.find(
            "Article/Pack").get("Id") != "0"  # type: ignore[union-attr]

        # Refusals: the pack is never put at the input point, and each is told why.
        for handling, reason in (("Rejected", "ims_refused"),
                                 ("AllowedForFridge", "not_for_robot")):
            loading = await load(staff, pack(A, "LA", EXP, f"R{handling}"))
            request = await ims.expect("InputRequest")
            await ims.send(answer(request, handling, "MET-500", text="not ours"))
            assert await refused(loading) == reason
            aborted = await ims.expect("InputMessage", request.id)
            handled = aborted.lead.find("Article/Pack")
            assert handled is not None and handled.get("Id") == "0"
            assert handled.find("Handling").get("Input") == "Aborted"  # type: ignore[union-attr]
        loading = await load(staff, pack(A, "LA", EXP, "RQUIET"))
        silent = await ims.expect("InputRequest")
        assert await refused(loading) == "ims_no_answer"  # after input_timeout_s
        assert (await ims.expect("InputMessage", silent.id)).lead.find(
            "Article/Pack/Handling").get("Input") == "Aborted"  # type: ignore[union-attr]
        # A fridge article of the master is refused without asking.
        asked = len(ims.inbox("InputRequest"))
        assert await refused(await load(staff, pack(B, "LB", EXP, "FR1"))) == "not_for_robot"
        assert len(ims.inbox("InputRequest")) == asked

        # Stock and outputs speak the master's article ids; a fridge article is refused.
        stock = await ims.request("StockInfoRequest", IncludeArticleDetails="True")
        (article,) = stock.lead.iter("Article")
        assert (article.get("Id"), article.get("Name"), article.get("Quantity")) == (
            "MET-500", "Metformin 500", "4")
        assert status_of(await output(ims, "800", criteria("INS-1", 1))) == "Rejected"
        assert status_of(await output(ims, "801", criteria("MET-500", 1))) == "Queued"
        done = await ims.expect("OutputMessage", "801", timeout=30)
        assert [p["article"] for p in packs_of(done)] == ["MET-500"]
        await ims.close()

        # The master is in the journal: a restart keeps it.
        await staff.close()
        assert daemon.stop() == 0
        daemon.start()
        staff = await daemon.client("staff")
        await daemon.wait_ready(staff)
        ims = await daemon.ims(100)
        stock = await ims.request("StockInfoRequest")
        assert [a.get("Id") for a in stock.lead.iter("Article")] == ["MET-500"]
        # An empty ArticleMasterSet clears it: the drug is reported under its own code.
        cleared = await ims.request("ArticleMasterSetRequest")
        assert cleared.lead.find("SetResult").get("Value") == "Accepted"  # type: ignore[union-attr]
        stock = await ims.request("StockInfoRequest")
        assert [a.get("Id") for a in stock.lead.iter("Article")] == [A]
    finally:
        await ims.close()
        await staff.close()
