"""The connection over loopback TCP: handshake, the 5 s Hello rule, keep-alive, who may
connect, several clients, and messages that cannot be processed."""

from __future__ import annotations

import asyncio
import socket

from dispenser.testing.ims_client import E, ImsClient, envelope
from dispenser.wwks2.server import HELLO_TIMEOUT_S, Wwks2Server

from .conftest import ClientFactory, ServerFactory

ALL_CAPABILITIES = ["KeepAlive", "Status", "Input", "StockInfo", "Output", "TaskInfo",
                    "TaskCancel", "ArticleMaster"]


async def test_hello_response_repeats_the_id_and_announces_every_capability(
        connect: ClientFactory) -> None:
    client = await connect(hello=False)
    response = await client.hello(message_id="1")
    assert response.id == "1"
    subscriber = response.lead.find("Subscriber")
    assert subscriber is not None
    assert subscriber.attrib == {"Id": "999", "Type": "Robot", "Manufacturer": "dispenser",
                                 "ProductInfo": "dispenserd",
                                 "VersionInfo": subscriber.get("VersionInfo")}
    assert [c.get("Name") for c in subscriber] == ALL_CAPABILITIES
    assert response.raw.startswith(b'<WWKS Version="2.0" TimeStamp="')
    assert response.raw.index(b"<HelloResponse") < 125


async def test_input_is_announced_only_when_the_ims_decides_inputs(
        make_server: ServerFactory, connect: ClientFactory) -> None:
    local = await make_server(input_mode="local")
    client = await connect(hello=False, target=local)
    subscriber = (await client.hello()).lead.find("Subscriber")
    assert subscriber is not None
    assert "Input" not in [c.get("Name") for c in subscriber]


async def test_a_message_before_hello_is_answered_and_hello_still_works(
        connect: ClientFactory) -> None:
    client = await connect(hello=False)
    await client.send(client.routed("StatusRequest", Id="3"))
    refused = await client.expect("UnprocessedMessage")
    assert refused.lead.get("Reason") == "NotSupported"
    assert "send HelloRequest first" in refused.lead.get("Text", "")
    assert refused.lead.find("Message").get("Id") == "3"  # type: ignore[union-attr]
    await client.hello()
    assert (await client.request("StatusRequest")).lead.get("State") == "Ready"


async def test_a_client_that_does_not_say_hello_within_5_s_is_closed(
        server: Wwks2Server, connect: ClientFactory) -> None:
    assert HELLO_TIMEOUT_S == 5.0
    silent = await connect(hello=False)
    talking = await connect(hello=False)
    await talking.send(talking.routed("StatusRequest"))  # talking, but no Hello
    polite = await connect()
    assert await silent.closed_by_server(timeout=HELLO_TIMEOUT_S + 10)
    assert await talking.closed_by_server(timeout=5)
    assert server.snapshot()["hello_timeouts"] == 2
    # The one that said Hello is still served after the deadline.
    assert (await polite.request("StatusRequest")).lead.get("State") == "Ready"


async def test_keep_alive_request_is_answered_with_source_and_destination_swapped(
        client: ImsClient) -> None:
    await client.send(E("KeepAliveRequest", Id="12", Source="100", Destination="999"))
    answer = await client.expect("KeepAliveResponse", "12")
    assert (answer.lead.get("Source"), answer.lead.get("Destination")) == ("999", "100")


async def test_the_server_sends_keep_alives_after_hello_only_and_closes_a_dead_peer(
        make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server(keepalive_interval_s=0.2)
    quiet = await connect(hello=False, target=server)
    await asyncio.sleep(0.7)
    await quiet.hello()
    # Nothing came before the HelloResponse: it is the first message this client got.
    assert quiet.frames[0].tag == "HelloResponse"
    alive = await connect(target=server)
    dead = await connect(target=server, answer_keepalive=False)
    request = await alive.expect("KeepAliveRequest", timeout=5)
    assert request.lead.get("Source") == "999"
    assert request.lead.get("Destination") == "100"
    assert await dead.closed_by_server(timeout=10)
    assert server.snapshot()["keepalive_timeouts"] >= 1
    await asyncio.sleep(0.5)
    assert (await alive.request("StatusRequest")).lead.get("State") == "Ready"


async def test_tcp_keep_alive_is_on_for_every_connection(server: Wwks2Server,
                                                        client: ImsClient) -> None:
    (connection,) = server._connections.values()
    sock = connection.writer.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


async def test_a_client_without_the_keep_alive_capability_is_not_sent_any(
        make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server(keepalive_interval_s=0.1)
    client = await connect(hello=False, target=server, answer_keepalive=False)
    await client.hello(capabilities=("Status", "Output"))
    received = await client.collect(0.6)
    assert [r.tag for r in received] == []
    assert (await client.request("StatusRequest")).lead.get("State") == "Ready"


async def test_addresses_not_allowed_are_refused_and_counted(
        make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server(allowed_clients=["192.0.2.10", "10.1.2.0/24"])
    client = await connect(hello=False, target=server)
    assert await client.closed_by_server(timeout=5)
    assert server.snapshot()["refused"] == 1
    assert server.snapshot()["accepted"] == 0


async def test_responses_go_to_the_requester_only_and_broadcasts_to_all(
        server: Wwks2Server, connect: ClientFactory) -> None:
    first = await connect(subscriber_id=100)
    second = await connect(subscriber_id=101)
    answer = await first.request("StatusRequest", Id="40")
    assert answer.lead.get("Destination") == "100"
    server.stock_changed(["A1"])
    one = await first.expect("StockInfoMessage")
    two = await second.expect("StockInfoMessage")
    assert (one.lead.get("Destination"), two.lead.get("Destination")) == ("100", "101")
    assert [r.tag for r in await second.collect(0.3)] == []  # no StatusResponse for it


async def test_framing_one_byte_at_a_time_and_several_messages_in_one_write(
        client: ImsClient) -> None:
    data = envelope(client.routed("StatusRequest", Id="50"))
    for i in range(len(data)):
        await client.send_raw(data[i:i + 1])
    assert (await client.expect("StatusResponse", "50")).lead.get("State") == "Ready"
    batch = b"\r\n".join(envelope(client.routed("KeepAliveRequest", Id=str(n)))
                         for n in range(60, 65))
    await client.send_raw(batch + b"\n  \n")
    for n in range(60, 65):
        await client.expect("KeepAliveResponse", str(n))


async def test_cdata_with_the_end_tag_inside_stays_in_its_message(client: ImsClient) -> None:
    request = (b'<WWKS Version="2.0" TimeStamp="2025-01-10T08:00:01Z"><OutputRequest Id="70" '
               b'Source="100" Destination="999"><Details OutputDestination="1"/><Criteria '
               b'ArticleId="A1" Quantity="1"><Label TemplateId="T1"><Content><![CDATA[<b>a < b'
               b'</b></WWKS></WWKS ]]></Content></Label></Criteria></OutputRequest></WWKS>')
    await client.send_raw(request)
    response = await client.expect("OutputResponse", "70")
    assert response.lead.find("Details").get("Status") == "Queued"  # type: ignore[union-attr]
    content = response.lead.find("Criteria/Label/Content")
    assert content is not None and content.text == "<b>a < b</b></WWKS></WWKS "
    # Echoed as escaped text, never raw: the client library frames on the literal end tag.
    assert response.raw.count(b"</WWKS>") == 1


async def test_unprocessable_messages_are_answered_and_the_connection_goes_on(
        server: Wwks2Server, client: ImsClient) -> None:
    cases = [
        (b"<WWKS Version='2.0'><StatusRequest Id='1'></WWKS>", "SyntaxError", None),
        (b'<WWKS Version="2.0"><ConfigurationGetRequest Id="2" Source="100" '
         b'Destination="999"/></WWKS>', "NotSupported", "2"),
        (b'<WWKS Version="2.0"><OutputMessage Id="3" Source="100" Destination="999">'
         b'<Details OutputDestination="1" Status="Completed"/></OutputMessage></WWKS>',
         "NotSupported", "3"),
        (b'<WWKS Version="2.0"><StockInfoRequest Id="4" Source="100" Destination="999" '
         b'IncludePacks="maybe"/></WWKS>', "DataError", "4"),
        (b'<WWKS Version="2.0"><StatusRequest Id="5" Source="100" Destination="998"/></WWKS>',
         "DataError", "5"),
        (b"this is not XML</WWKS>", "SyntaxError", None),
    ]
    for frame, reason, message_id in cases:
        await client.send_raw(frame)
        answer = await client.expect("UnprocessedMessage")
        assert answer.lead.get("Reason") == reason, frame
        assert answer.lead.get("Source") == "999"
        assert answer.lead.get("Destination") == "100"
        original = answer.lead.find("Message")
        assert original is not None and original.get("Id") == message_id
        assert original.text == frame.decode()
        assert answer.id is not None and answer.id.isdigit()
    assert (await client.request("StatusRequest")).lead.get("State") == "Ready"
    assert server.snapshot()["unprocessed"] == len(cases)
