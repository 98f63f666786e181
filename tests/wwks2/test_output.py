"""Output, TaskInfo and TaskCancel against the protocol fixture: every success and refusal
path, in the order the pharmacy client library needs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dispenser.testing.ims_client import E, ImsClient, Received
from dispenser.wwks2.backend import TaskKey
from dispenser.wwks2.server import Wwks2Server

from .conftest import ClientFactory, ServerFactory
from .memory_backend import MemoryBackend, settle


def sdk_output(client: ImsClient, order: str, article: str = "A1", quantity: int = 1,
               destination: int = 2, priority: str = "Normal",
               **criteria: object) -> ET.Element:
    """An OutputRequest as the client library writes it (zeros mean "not set")."""
    values = {"ArticleId": article, "Quantity": quantity, "SubItemQuantity": 0, "PackId": 0,
              "SingleBatchNumber": "False", **criteria}
    return client.routed("OutputRequest",
                         E("Details", Priority=priority, OutputDestination=destination,
                           OutputPoint=0),
                         E("Criteria", **values), Id=order)


async def place(client: ImsClient, request: ET.Element) -> Received:
    await client.send(request)
    return await client.expect("OutputResponse", request.get("Id"))


def status(message: Received) -> str | None:
    details = message.lead.find("Details")
    return details.get("Status") if details is not None else None


def packs(message: Received) -> list[tuple[str | None, str | None, str | None]]:
    return [(a.get("Id"), p.get("Id"), p.get("OutputDestination"))
            for a in message.lead.findall("Article") for p in a.findall("Pack")]


async def test_queued_then_completed_with_every_pack_fefo(
        client: ImsClient, backend: MemoryBackend) -> None:
    response = await place(client, sdk_output(client, "688", quantity=2, priority="High"))
    assert status(response) == "Queued"
    assert response.lead.find("Details").attrib == {  # type: ignore[union-attr]
        "Priority": "High", "OutputDestination": "2", "OutputPoint": "0", "Status": "Queued"}
    assert response.lead.find("Criteria").attrib == {  # type: ignore[union-attr]
        "ArticleId": "A1", "Quantity": "2", "SubItemQuantity": "0", "SingleBatchNumber": "False",
        "PackId": "0"}
    key = TaskKey(100, "688")
    assert backend.tasks[key].task.priority == "High"
    assert backend.tasks[key].task.actor == "wwks2:100@127.0.0.1"
    backend.dispense(key)
    done = await client.expect("OutputMessage", "688")
    assert status(done) == "Completed"
    # FEFO: the pack expiring 2026-01 before the one expiring 2027-03.
    assert packs(done) == [("A1", "502", "2"), ("A1", "501", "2")]
    pack = done.lead.find("Article/Pack")
    assert pack is not None and pack.attrib == {
        "Id": "502", "BatchNumber": "B8", "ExpiryDate": "2026-01-31", "OutputDestination": "2"}


async def test_incomplete_lists_only_what_was_dispensed(client: ImsClient,
                                                         backend: MemoryBackend) -> None:
    request = client.routed(
        "OutputRequest", E("Details", OutputDestination=1),
        E("Criteria", ArticleId="A2", Quantity=3), E("Criteria", ArticleId="A1", Quantity=1,
                                                     BatchNumber="NONE"), Id="690")
    assert status(await place(client, request)) == "Queued"
    backend.dispense(TaskKey(100, "690"))
    done = await client.expect("OutputMessage", "690")
    assert status(done) == "Incomplete"
    assert packs(done) == [("A2", "601", "1")]
    assert [(a.get("Id"), len(a)) for a in done.lead.findall("Article")] == [("A2", 1),
                                                                             ("A1", 0)]


async def test_criteria_pack_id_batch_and_minimum_expiry(client: ImsClient,
                                                         backend: MemoryBackend) -> None:
    await place(client, sdk_output(client, "701", PackId=501))
    await place(client, sdk_output(client, "702", article="A1", BatchNumber="B8"))
    await place(client, sdk_output(client, "703", article="A2",
                                   MinimumExpiryDate="2029-01-01"))
    assert backend.tasks[TaskKey(100, "701")].picks == [501]
    assert backend.tasks[TaskKey(100, "702")].picks == [502]
    assert backend.tasks[TaskKey(100, "703")].picks == []
    criterion = backend.tasks[TaskKey(100, "701")].task.criteria[0]
    assert (criterion.pack_id, criterion.quantity, criterion.sub_item_quantity,
            criterion.single_batch) == (501, 1, None, False)


async def test_rejected_outputs_get_no_output_message(
        client: ImsClient, backend: MemoryBackend) -> None:
    refused = [
        sdk_output(client, "801", destination=7),  # not an output of this machine
        sdk_output(client, "802", article="UNKNOWN"),
        client.routed("OutputRequest", E("Details", OutputDestination=1), Id="803"),  # no criteria
        sdk_output(client, "804", PackId=501, quantity=2),
        sdk_output(client, "805", quantity=0),
    ]
    for request in refused:
        assert status(await place(client, request)) == "Rejected", request.get("Id")
    backend.ready = False
    assert status(await place(client, sdk_output(client, "806"))) == "Rejected"
    assert [r.tag for r in await client.collect(0.3)] == []
    assert not any(k.task_id in {"801", "803", "804", "805", "806"} for k in backend.tasks)


async def test_output_destinations_map_to_output_points_and_back(
        make_server: ServerFactory, connect: ClientFactory, backend: MemoryBackend) -> None:
    server = await make_server(output_destinations={10: 1, 20: 2})
    client = await connect(target=server)
    assert status(await place(client, sdk_output(client, "901", destination=2))) == "Rejected"
    assert status(await place(client, sdk_output(client, "902", destination=20))) == "Queued"
    key = TaskKey(100, "902")
    assert backend.tasks[key].task.output_point == 2
    backend.dispense(key, to_point=1)  # output 2 was out of service
    done = await client.expect("OutputMessage", "902")
    assert done.lead.find("Details").get("OutputDestination") == "20"  # type: ignore[union-attr]
    assert packs(done) == [("A1", "502", "10")]


async def test_the_output_message_never_precedes_the_response(
        client: ImsClient, backend: MemoryBackend) -> None:
    backend.finish_at_once = True  # the outcome is reported inside create_output
    await client.send(sdk_output(client, "910"))
    await client.expect("OutputMessage", "910")
    tags = [r.tag for r in client.frames if r.id == "910"]
    assert tags == ["OutputResponse", "OutputMessage"]


async def test_a_repeated_request_is_the_same_task(client: ImsClient,
                                                   backend: MemoryBackend) -> None:
    first = sdk_output(client, "920")
    assert status(await place(client, first)) == "Queued"
    assert status(await place(client, sdk_output(client, "920"))) == "Queued"
    assert len([k for k in backend.tasks if k.task_id == "920"]) == 1
    assert status(await place(client, sdk_output(client, "920", quantity=2))) == "Rejected"
    backend.dispense(TaskKey(100, "920"))
    await client.expect("OutputMessage", "920")
    # Asked again after it finished: Queued, and the outcome once more.
    assert status(await place(client, sdk_output(client, "920"))) == "Queued"
    assert status(await client.expect("OutputMessage", "920")) == "Completed"


async def test_labels_are_reported_not_labelled(client: ImsClient,
                                                backend: MemoryBackend) -> None:
    request = client.routed("OutputRequest", E("Details", OutputDestination=1),
                            E("Criteria", E("Label", E("Content", ), TemplateId="T1"),
                              ArticleId="A2", Quantity=1), Id="930")
    assert status(await place(client, request)) == "Queued"
    backend.dispense(TaskKey(100, "930"))
    done = await client.expect("OutputMessage", "930")
    assert done.lead.find("Article/Pack").get("LabelStatus") == "NotLabelled"  # type: ignore[union-attr]


async def test_the_output_message_goes_to_every_client(
        server: Wwks2Server, connect: ClientFactory, backend: MemoryBackend) -> None:
    requester = await connect()
    other = await connect(subscriber_id=101)
    await place(requester, sdk_output(requester, "940"))
    backend.dispense(TaskKey(100, "940"))
    mine = await requester.expect("OutputMessage", "940")
    theirs = await other.expect("OutputMessage", "940")
    assert (mine.lead.get("Destination"), theirs.lead.get("Destination")) == ("100", "101")
    assert other.inbox("OutputResponse") == []


async def test_a_manual_output_is_reported_with_id_1(server: Wwks2Server,
                                                     client: ImsClient) -> None:
    from dispenser.wwks2.backend import DispensedPack, OutputOutcome

    server.output_finished(OutputOutcome(
        key=None, status="Completed", priority="Normal", destination=1,
        packs=(DispensedPack(article_id="A1", pack_id=501, output_point=1),)))
    message = await client.expect("OutputMessage", "1")
    assert status(message) == "Completed"
    assert packs(message) == [("A1", "501", "1")]


async def test_an_outcome_missed_while_away_is_sent_after_the_next_hello(
        server: Wwks2Server, connect: ClientFactory, backend: MemoryBackend) -> None:
    client = await connect()
    await place(client, sdk_output(client, "950"))
    await client.close()
    await settle()
    while server.clients():
        await settle()
    backend.dispense(TaskKey(100, "950"))
    assert len(backend.undelivered) == 1
    again = await connect()
    assert status(await again.expect("OutputMessage", "950")) == "Completed"
    assert backend.undelivered == []


async def test_the_machine_failing_on_an_output_rejects_it(client: ImsClient,
                                                          backend: MemoryBackend) -> None:
    backend.fail_next = "create_output"
    assert status(await place(client, sdk_output(client, "960"))) == "Rejected"


async def test_task_info_through_the_life_of_an_output(client: ImsClient,
                                                       backend: MemoryBackend) -> None:
    async def info(order: str, details: str = "False") -> Received:
        return await client.request("TaskInfoRequest", E("Task", Type="Output", Id=order),
                                    IncludeTaskDetails=details)

    def task(message: Received) -> dict[str, str]:
        found = message.lead.find("Task")
        assert found is not None  # always a Task, unknown ids included
        return dict(found.attrib)

    assert task(await info("1000")) == {"Type": "Output", "Id": "1000", "Status": "Unknown"}
    await place(client, sdk_output(client, "1000", quantity=2))
    assert task(await info("1000"))["Status"] == "Queued"
    backend.start(TaskKey(100, "1000"))
    assert task(await info("1000"))["Status"] == "InProcess"
    backend.dispense(TaskKey(100, "1000"))
    finished = await info("1000", details="True")
    assert task(finished)["Status"] == "Completed"
    assert [(p.get("Id"), p.get("OutputDestination"))
            for p in finished.lead.findall("Task/Article/Pack")] == [("502", "2"), ("501", "2")]
    delivery = await client.request("TaskInfoRequest", E("Task", Type="StockDelivery", Id="D1"))
    assert task(delivery) == {"Type": "StockDelivery", "Id": "D1", "Status": "Unknown"}
    newer = await client.request("OutputInfoRequest", E("Task", Id="1000"))
    assert newer.tag == "OutputInfoResponse" and task(newer)["Status"] == "Completed"


async def test_task_cancel_cancelled_then_aborted_and_cancel_error_when_finished(
        client: ImsClient, backend: MemoryBackend) -> None:
    await place(client, sdk_output(client, "1100"))
    answer = await client.request("TaskCancelRequest", E("Task", Type="Output", Id="1100"))
    assert answer.lead.find("Task").attrib == {  # type: ignore[union-attr]
        "Type": "Output", "Id": "1100", "Status": "Cancelled"}
    aborted = await client.expect("OutputMessage", "1100")
    assert status(aborted) == "Aborted" and packs(aborted) == []
    order = [r.tag for r in client.frames if r.id in {"1100", answer.id}]
    assert order == ["OutputResponse", "TaskCancelResponse", "OutputMessage"]
    assert backend.actors[-1] == "wwks2:100@127.0.0.1"
    finished = await client.request("TaskCancelRequest", E("Task", Type="Output", Id="1100"))
    assert finished.lead.find("Task").get("Status") == "CancelError"  # type: ignore[union-attr]
    unknown = await client.request("TaskCancelRequest", E("Task", Type="Output", Id="404"))
    assert unknown.lead.find("Task").get("Status") == "Unknown"  # type: ignore[union-attr]
    backend.fail_next = "cancel_output"
    await place(client, sdk_output(client, "1101"))
    failed = await client.request("TaskCancelRequest", E("Task", Type="Output", Id="1101"))
    assert failed.lead.find("Task").get("Status") == "CancelError"  # type: ignore[union-attr]


async def test_aborted_midway_lists_the_packs_already_dispensed(
        client: ImsClient, backend: MemoryBackend) -> None:
    await place(client, sdk_output(client, "1200", quantity=2))
    backend.dispense(TaskKey(100, "1200"), stop_after=1)
    aborted = await client.expect("OutputMessage", "1200")
    assert status(aborted) == "Aborted"
    assert packs(aborted) == [("A1", "502", "2")]


async def test_control_character_text_is_echoed_unchanged_and_plain_for_the_machine(
        client: ImsClient, backend: MemoryBackend) -> None:
    backend.add_pack("A3", 701, batch="X\x1dY")
    request = client.routed("OutputRequest", E("Details", OutputDestination=1),
                            E("Criteria", ArticleId="A3", Quantity=1, BatchNumber="X\\x1dY"),
                            Id="1300")
    response = await place(client, request)
    assert b'BatchNumber="X\\x1dY"' in response.raw  # lower case, as the IMS sent it
    task = backend.tasks[TaskKey(100, "1300")]
    assert task.task.criteria[0].batch_number == "X\x1dY"
    assert task.picks == [701]
    backend.dispense(TaskKey(100, "1300"))
    done = await client.expect("OutputMessage", "1300")
    assert b'BatchNumber="X\\x1DY"' in done.raw  # from the machine: upper-case hex
