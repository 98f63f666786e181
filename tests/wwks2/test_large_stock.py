"""Stock messages with many packs (encoded in a worker thread, the articles' elements
shared by every client's message) are byte for byte what the one-message-at-a-time path
writes, and reach each client addressed to it."""

from __future__ import annotations

import re
from datetime import date

from dispenser.wwks2.backend import StockQuery
from dispenser.wwks2.mapping import article_elements
from dispenser.wwks2.messages import Article, Envelope, StockInfoMessage, encode_message
from dispenser.wwks2.server import Wwks2Server

from .conftest import ClientFactory
from .memory_backend import MemoryBackend


def _without_stamp(data: bytes) -> bytes:
    return re.sub(rb' TimeStamp="[^"]*"', b"", data)


class _Sink:
    def __init__(self, subscriber_id: int) -> None:
        self.subscriber_id = subscriber_id
        self.data: list[bytes] = []

    def send_bytes(self, data: bytes) -> bool:
        self.data.append(data)
        return True


async def test_many_packs_to_many_clients_same_bytes(server: Wwks2Server,
                                                     backend: MemoryBackend) -> None:
    for n in range(400):
        backend.add_pack(f"B{n % 7}", 1000 + n, batch=f"L{n % 3}", expiry=date(2031, 1, 31),
                         serial=f"S{n}", scan_code=f"01\x1d{n}")
    stock = await backend.stock(StockQuery(include_article_details=True))
    sinks = [_Sink(100), _Sink(101), _Sink(102)]

    def make(connection: _Sink, articles: tuple[Article, ...]) -> Envelope:  # type: ignore[override]
        return StockInfoMessage(id="77", source=999, destination=connection.subscriber_id,
                                articles=articles)

    await server.send_stock(sinks, make, stock, True, True)  # type: ignore[arg-type]
    articles = article_elements(stock, True, True)
    for sink in sinks:
        (data,) = sink.data
        expected = encode_message(make(sink, articles))
        assert _without_stamp(data) == _without_stamp(expected)
        assert f'Destination="{sink.subscriber_id}"'.encode() in data[:200]
        assert data.count(b"<Pack ") == 403  # the fixture's three and these 400


async def test_a_client_gets_a_large_stock_info(connect: ClientFactory,
                                                backend: MemoryBackend) -> None:
    for n in range(300):
        backend.add_pack("C1", 5000 + n, serial=f"T{n}")
    first, second = await connect(), await connect(subscriber_id=101)
    answer = await first.request("StockInfoRequest")
    assert sum(1 for _ in answer.lead.iter("Pack")) == 303
    assert answer.lead.get("Destination") == "100"
    assert not second.inbox("StockInfoResponse")
