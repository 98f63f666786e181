"""What the client library embedded in most pharmacy software enforces (the digest's
section 5), checked on every message the server wrote during a full exchange."""

from __future__ import annotations

import asyncio
import re
from datetime import date

from dispenser.testing.ims_client import E, ImsClient
from dispenser.wwks2.backend import InputOutcome, ScannedPack, TaskKey
from dispenser.wwks2.server import Wwks2Server

from .memory_backend import MemoryBackend

ENVELOPE = re.compile(rb'^<WWKS Version="2\.0" TimeStamp="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">'
                      rb"<([A-Za-z]+)[ />]")
EXACT = {
    "Subscriber@Type": {"Robot"},
    "StatusResponse@State": {"Ready", "NotReady"},
    "Component@State": {"Ready", "NotReady"},
    "Component@Type": {"StorageSystem", "BoxSystem"},
    "Details@Status": {"Queued", "Rejected", "Completed", "Incomplete", "Aborted",
                       "BoxReleased"},
    "Details@Priority": {"Lowest", "Low", "Normal", "High", "Highest"},
    "Task@Type": {"Output", "StockDelivery"},
    "Task@Status": {"Unknown", "Queued", "InProcess", "Aborting", "Aborted", "Completed",
                    "Incomplete", "Cancelled", "CancelError"},
    "SetResult@Value": {"Accepted", "Rejected"},
    "Pack@State": {"Available", "NotAvailable"},
    "Pack@Shape": {"Cuboid", "Cylinder"},
    "Pack@LabelStatus": {"Labelled", "NotLabelled", "LabelError"},
    "Handling@Input": {"Completed", "Aborted"},
    "UnprocessedMessage@Reason": {"SyntaxError", "NotSupported", "DataError",
                                  "TooManyRequests"},
}
INTEGER = {"Source", "Destination", "Subscriber@Id", "Pack@Id", "Quantity",
           "OutputDestination"}
BOOLEAN = {"IsInFridge", "RequiresFridge", "IsNewDelivery", "SetPickingIndicator",
           "SingleBatchNumber"}


async def full_exchange(server: Wwks2Server, client: ImsClient,
                        backend: MemoryBackend) -> None:
    await client.request("StatusRequest", IncludeDetails="true")
    await client.request("StockInfoRequest", IncludeArticleDetails="True")
    for order, article in (("1", "A1"), ("2", "A2"), ("3", "NOPE")):
        await client.request("OutputRequest", E("Details", Priority="Normal",
                                                OutputDestination=1, OutputPoint=0),
                             E("Criteria", ArticleId=article, Quantity=1, SubItemQuantity=0,
                               PackId=0, SingleBatchNumber="False"), Id=order)
    backend.dispense(TaskKey(100, "1"))
    await client.expect("OutputMessage", "1")
    await client.request("TaskInfoRequest", E("Task", Type="Output", Id="1"),
                         E("Task", Type="Output", Id="404"), IncludeTaskDetails="True")
    await client.request("TaskCancelRequest", E("Task", Type="Output", Id="2"))
    await client.expect("OutputMessage", "2")
    await client.request("ArticleMasterSetRequest", E("Article", Id="A1", Name="Metformin"))
    server.stock_changed(["A1", "A2"])
    await client.expect("StockInfoMessage")
    asked = asyncio.create_task(server.request_input(ScannedPack("0104150123456789\x1d10B7")))
    request = await client.expect("InputRequest")
    await client.send(E("InputResponse", E("Article", E("Pack", E("Handling", Input="Allowed"),
                                                        Index=0), Id="A1"),
                        Id=request.id, Source=100, Destination=999))
    await asked
    server.input_finished(InputOutcome(request.id, "A1", 7001, expiry_date=date(2027, 1, 31)))
    await client.expect("InputMessage")
    await client.send_raw(b"<WWKS><Nonsense/></WWKS>")
    await client.expect("UnprocessedMessage")


async def test_every_message_keeps_the_rules_of_the_client_library(
        server: Wwks2Server, client: ImsClient, backend: MemoryBackend) -> None:
    await full_exchange(server, client, backend)
    leads = set()
    for received in client.frames:
        raw = received.raw
        match = ENVELOPE.match(raw)
        assert match is not None, raw[:150]
        assert raw.index(b"<" + match.group(1)) < 125
        assert not raw.startswith(b"\xef\xbb\xbf") and b"<?xml" not in raw
        assert b"xmlns" not in raw
        assert raw.count(b"</WWKS>") == 1
        leads.add(received.tag)
        for element in received.lead.iter():
            for name, value in element.attrib.items():
                key = f"{element.tag}@{name}"
                if key in EXACT:
                    assert value in EXACT[key], (key, value)
                if name in INTEGER or key in INTEGER:
                    assert re.fullmatch(r"\d+", value), (key, value)
                if name in BOOLEAN:
                    assert value in {"True", "False"}, (key, value)
    assert leads == {"HelloResponse", "StatusResponse", "StockInfoResponse", "OutputResponse",
                     "OutputMessage", "TaskInfoResponse", "TaskCancelResponse",
                     "ArticleMasterSetResponse", "StockInfoMessage", "InputRequest",
                     "InputMessage", "UnprocessedMessage"}


async def test_every_response_repeats_the_request_id_under_its_exact_name(
        server: Wwks2Server, client: ImsClient, backend: MemoryBackend) -> None:
    await full_exchange(server, client, backend)
    # request() waits for the response by exact name and Id: each of these matched one.
    responses = [r.tag for r in client.frames if r.tag.endswith("Response")]
    assert responses == ["HelloResponse", "StatusResponse", "StockInfoResponse",
                         "OutputResponse", "OutputResponse", "OutputResponse",
                         "TaskInfoResponse", "TaskCancelResponse", "ArticleMasterSetResponse"]
    task_info = next(r for r in client.frames if r.tag == "TaskInfoResponse")
    assert [(t.get("Id"), t.get("Status")) for t in task_info.lead] == [("1", "Completed"),
                                                                       ("404", "Unknown")]
