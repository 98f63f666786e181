"""Hostile XML over the wire is refused without harm: the server stays up and serves
everyone else."""

from __future__ import annotations

import asyncio

from dispenser.wwks2.server import Wwks2Server

from .conftest import ClientFactory, ServerFactory
from .test_xmlio import BILLION_LAUGHS, EXTERNAL_ENTITY, nested


async def test_entity_attacks_and_deep_nesting_get_a_syntax_error(
        server: Wwks2Server, connect: ClientFactory) -> None:
    attacker = await connect()
    bystander = await connect(subscriber_id=101)
    for frame in (BILLION_LAUGHS, EXTERNAL_ENTITY, nested(200_000)):
        await attacker.send_raw(frame)
        answer = await attacker.expect("UnprocessedMessage")
        assert answer.lead.get("Reason") == "SyntaxError"
        assert b"root:" not in answer.raw  # nothing of /etc/passwd came back
    assert (await attacker.request("StatusRequest")).lead.get("State") == "Ready"
    assert (await bystander.request("StatusRequest")).lead.get("State") == "Ready"


async def test_a_10_mb_message_closes_only_its_connection(
        make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server()  # max_message_bytes: 8 MiB
    attacker = await connect(target=server)
    bystander = await connect(target=server, subscriber_id=101)
    head = b'<WWKS Version="2.0"><StockInfoRequest Id="9" Source="100" Destination="999">'
    body = b'<Criteria ArticleId="A1"/>' * (10 * 1024 * 1024 // 26)
    sent = asyncio.create_task(attacker.send_raw(head + body + b"</StockInfoRequest></WWKS>"))
    answer = await attacker.expect("UnprocessedMessage", timeout=30)
    assert answer.lead.get("Reason") == "DataError"
    assert "longer than 8388608 bytes" in answer.lead.get("Text", "")
    assert await attacker.closed_by_server(timeout=30)
    sent.cancel()
    assert server.snapshot()["oversized_messages"] == 1
    assert (await bystander.request("StatusRequest")).lead.get("State") == "Ready"
    latecomer = await connect(target=server, subscriber_id=102)
    assert (await latecomer.request("StatusRequest")).lead.get("State") == "Ready"


async def test_a_message_just_under_the_limit_is_served(
        make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server(max_message_bytes=200_000)
    client = await connect(target=server)
    criteria = b'<Criteria ArticleId="A2"/>' * 7000  # ~182 KB: parsed off the loop
    await client.send_raw(b'<WWKS Version="2.0"><StockInfoRequest Id="9" Source="100" '
                          b'Destination="999" IncludePacks="False">' + criteria
                          + b"</StockInfoRequest></WWKS>")
    answer = await client.expect("StockInfoResponse", "9")
    assert [a.get("Id") for a in answer.lead] == ["A2"]
