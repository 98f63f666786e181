"""The input dialogue (the storage system asks the IMS about a pack being loaded) and the
article master."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import date

from dispenser.testing.ims_client import E, ImsClient
from dispenser.wwks2.backend import InputOutcome, ScannedPack
from dispenser.wwks2.server import Wwks2Server

from .conftest import ClientFactory, ServerFactory
from .memory_backend import MemoryBackend

SCAN = "0104150123456789\x1d10B7\x1d17270331"
PACK = ScannedPack(scan_code=SCAN, batch_number="B7", expiry_date=date(2027, 3, 31))


def answer_for(request: ET.Element, handling: str, article: str | None = "A1",
               **pack: object) -> ET.Element:
    offered = request.find("Article/Pack")
    assert offered is not None
    return E("InputResponse",
             E("Article", E("Pack", E("Handling", Input=handling), Index=0,
                            ScanCode=offered.get("ScanCode"), **pack),
               Id=article, Name="Metformin 500 mg", RequiresFridge="False"),
             Id=request.get("Id"), Source=request.get("Destination"),
             Destination=request.get("Source"), IsNewDelivery="False")


async def test_allowed_then_stored_then_input_message_with_the_new_pack_id(
        server: Wwks2Server, client: ImsClient) -> None:
    asked = asyncio.create_task(server.request_input(PACK))
    request = await client.expect("InputRequest")
    assert request.id is not None and request.id.isdigit()
    assert request.lead.get("Source") == "999" and request.lead.get("Destination") == "100"
    offered = request.lead.find("Article/Pack")
    assert offered is not None and offered.attrib == {
        "Index": "0", "BatchNumber": "B7", "ExpiryDate": "2027-03-31",
        "ScanCode": "0104150123456789\\x1D10B7\\x1D17270331"}
    await client.send(answer_for(request.lead, "Allowed"))
    answer = await asked
    assert (answer.request_id, answer.verdict, answer.article_id, answer.subscriber_id) == (
        request.id, "Allowed", "A1", 100)
    server.input_finished(InputOutcome(request_id=answer.request_id, article_id="A1",
                                       pack_id=4711, scan_code=SCAN, batch_number="B7",
                                       expiry_date=date(2027, 3, 31)))
    stored = await client.expect("InputMessage", request.id)
    pack = stored.lead.find("Article/Pack")
    assert stored.lead.find("Article").get("Id") == "A1"  # type: ignore[union-attr]
    assert pack is not None and pack.get("Id") == "4711"
    assert pack.find("Handling").get("Input") == "Completed"  # type: ignore[union-attr]


async def test_rejected_answers_come_back_as_they_were_given(server: Wwks2Server,
                                                             client: ImsClient) -> None:
    for handling in ("Rejected", "RejectedNoExpiryDate", "RejectedNoBatchNumber",
                     "AllowedForFridge"):
        asked = asyncio.create_task(server.request_input(PACK))
        request = await client.expect("InputRequest")
        await client.send(answer_for(request.lead, handling))
        assert (await asked).verdict == handling
    # Asking again with the same Id (now with the missing data) is allowed.
    asked = asyncio.create_task(server.request_input(PACK, request_id="25001",
                                                     set_picking_indicator=True))
    request = await client.expect("InputRequest", "25001")
    assert request.lead.get("SetPickingIndicator") == "True"
    await client.send(answer_for(request.lead, "Allowed", article=None))
    answer = await asked
    assert answer.article_id == SCAN  # no article id: the barcode stands for it
    server.input_finished(InputOutcome(request_id="25001", article_id=SCAN, pack_id=0))
    aborted = await client.expect("InputMessage", "25001")
    assert aborted.lead.find("Article/Pack/Handling").get("Input") == "Aborted"  # type: ignore[union-attr]


async def test_no_answer_in_time_or_no_client(make_server: ServerFactory,
                                              connect: ClientFactory) -> None:
    server = await make_server(input_timeout_s=0.3)
    assert (await server.request_input(PACK)).verdict == "NoAnswer"  # nobody connected
    client = await connect(target=server)
    answer = await server.request_input(PACK)
    assert answer.verdict == "NoAnswer" and "0.3 s" in answer.text
    request = await client.expect("InputRequest", answer.request_id)
    await client.send(answer_for(request.lead, "Allowed"))  # too late
    late = await client.expect("UnprocessedMessage")
    assert late.lead.get("Reason") == "DataError"
    assert "no InputRequest with Id" in late.lead.get("Text", "")


async def test_only_clients_that_take_input_are_asked_and_the_first_answer_counts(
        server: Wwks2Server, connect: ClientFactory) -> None:
    without = await connect(hello=False, subscriber_id=101)
    await without.hello(capabilities=("Status", "Output"))
    first = await connect(subscriber_id=100)
    second = await connect(subscriber_id=102)
    asked = asyncio.create_task(server.request_input(PACK))
    one = await first.expect("InputRequest")
    two = await second.expect("InputRequest")
    await second.send(answer_for(two.lead, "Rejected"))
    assert (await asked).verdict == "Rejected"
    await first.send(answer_for(one.lead, "Allowed"))
    assert (await first.expect("UnprocessedMessage")).lead.get("Reason") == "DataError"
    assert without.inbox("InputRequest") == []


async def test_an_answer_without_handling_stores_nothing(server: Wwks2Server,
                                                         client: ImsClient) -> None:
    asked = asyncio.create_task(server.request_input(PACK))
    request = await client.expect("InputRequest")
    await client.send(E("InputResponse", E("Article", E("Pack", Index=0), Id="A1"),
                        Id=request.id, Source=100, Destination=999))
    answer = await asked
    assert answer.verdict == "Rejected" and "no Handling" in answer.text


async def test_article_master_set_accepted_and_rejected(client: ImsClient,
                                                        backend: MemoryBackend) -> None:
    accepted = await client.request(
        "ArticleMasterSetRequest",
        E("Article", E("ProductCode", Code="04150123456789"), Id="A1", Name="Metformin",
          PackingUnit="60", RequiresFridge="False"),
        E("Article", Id="A2", Name="Insulin pen", PackagingUnit="5", RequiresFridge="true"))
    assert accepted.lead.find("SetResult").attrib == {"Value": "Accepted"}  # type: ignore[union-attr]
    assert [(a.article_id, a.packaging_unit, a.requires_fridge, a.product_codes)
            for a in backend.master] == [("A1", "60", False, ("04150123456789",)),
                                         ("A2", "5", True, ())]
    assert backend.actors[-1] == "wwks2:100@127.0.0.1"
    twice = await client.request("ArticleMasterSetRequest", E("Article", Id="A1"),
                                 E("Article", Id="A1"))
    assert twice.lead.find("SetResult").attrib == {  # type: ignore[union-attr]
        "Value": "Rejected", "Text": "an article id appears twice"}
    no_id = await client.request("ArticleMasterSetRequest", E("Article", Name="x"))
    assert no_id.lead.find("SetResult").get("Value") == "Rejected"  # type: ignore[union-attr]
    cleared = await client.request("ArticleMasterSetRequest")
    assert cleared.lead.find("SetResult").get("Value") == "Accepted"  # type: ignore[union-attr]
    assert backend.master == []
