"""Status and StockInfo (with the coalesced StockInfoMessage) against the protocol fixture."""

from __future__ import annotations

from dispenser.testing.ims_client import E, ImsClient
from dispenser.wwks2.server import Wwks2Server

from .conftest import ClientFactory
from .memory_backend import MemoryBackend


async def test_status_with_components_when_details_are_asked(
        client: ImsClient, backend: MemoryBackend) -> None:
    plain = await client.request("StatusRequest")
    assert plain.lead.get("State") == "Ready" and len(plain.lead) == 0
    backend.ready, backend.not_ready_text = False, "emergency stop"
    detailed = await client.request("StatusRequest", IncludeDetails="true")
    assert detailed.lead.get("State") == "NotReady"
    assert detailed.lead.get("StateText") == "emergency stop"
    assert [(c.get("Type"), c.get("Description"), c.get("State")) for c in detailed.lead] == [
        ("StorageSystem", "Robot", "NotReady"), ("StorageSystem", "Label printer", "Ready"),
        ("StorageSystem", "Output 1", "Ready"), ("StorageSystem", "Output 2", "Ready")]


async def test_status_is_not_ready_when_the_machine_fails_to_answer(
        client: ImsClient, backend: MemoryBackend) -> None:
    backend.fail_next = "machine_status"
    answer = await client.request("StatusRequest")
    assert answer.lead.get("State") == "NotReady"


async def test_stock_info_every_pack_with_its_fields(client: ImsClient,
                                                      backend: MemoryBackend) -> None:
    backend.add_pack("A2", 602, batch="C2", available=False)  # e.g. quarantined
    answer = await client.request("StockInfoRequest", IncludePacks="True",
                                  IncludeArticleDetails="True")
    articles = {a.get("Id"): a for a in answer.lead}
    assert set(articles) == {"A1", "A2"}
    a1 = articles["A1"]
    assert (a1.get("Name"), a1.get("Quantity")) == ("Metformin 500 mg", "2")
    packs = {p.get("Id"): p.attrib for p in a1}
    assert packs["501"] == {"Id": "501", "BatchNumber": "B7", "ExpiryDate": "2027-03-31",
                            "StockInDate": "2026-01-05",
                            "ScanCode": "0104150123456789\\x1D10B7", "State": "Available",
                            "IsInFridge": "False"}
    assert [p.get("State") for p in articles["A2"]] == ["Available", "NotAvailable"]


async def test_stock_info_defaults_and_criteria(client: ImsClient) -> None:
    # IncludePacks defaults to True; no details unless asked.
    by_article = await client.request("StockInfoRequest", E("Criteria", ArticleId="A1"))
    assert [(a.get("Id"), a.get("Name"), len(a)) for a in by_article.lead] == [("A1", None, 2)]
    # Attributes of one Criteria are ANDed, Criteria are ORed.
    ored = await client.request("StockInfoRequest", E("Criteria", ArticleId="A1",
                                                      BatchNumber="B8"),
                                E("Criteria", ArticleId="A2"), IncludePacks="False")
    assert [(a.get("Id"), a.get("Quantity"), len(a)) for a in ored.lead] == [
        ("A1", "1", 0), ("A2", "1", 0)]
    nothing = await client.request("StockInfoRequest", E("Criteria", ArticleId="NOPE"))
    assert len(nothing.lead) == 0


async def test_stock_info_is_unprocessed_rather_than_wrong_when_the_machine_fails(
        client: ImsClient, backend: MemoryBackend) -> None:
    backend.fail_next = "stock"
    request = client.routed("StockInfoRequest", Id="77")
    await client.send(request)
    answer = await client.expect("UnprocessedMessage")
    assert answer.lead.find("Message").get("Id") == "77"  # type: ignore[union-attr]
    assert "incident" in answer.lead.get("Text", "")
    assert client.inbox("StockInfoResponse") == []


async def test_stock_info_of_many_packs(client: ImsClient, backend: MemoryBackend) -> None:
    for n in range(2000):
        backend.add_pack("A9", 10_000 + n, batch=f"L{n % 7}")
    answer = await client.request("StockInfoRequest", E("Criteria", ArticleId="A9"))
    assert len(answer.lead[0]) == 2000  # encoded in a worker thread
    assert answer.lead[0].get("Quantity") == "2000"


async def test_stock_changes_are_broadcast_coalesced(
        server: Wwks2Server, connect: ClientFactory, backend: MemoryBackend) -> None:
    first = await connect()
    second = await connect(subscriber_id=101)
    for _ in range(50):
        server.stock_changed(["A1"])
    server.stock_changed(["A2", "GONE"])
    message = await first.expect("StockInfoMessage")
    quantities = {a.get("Id"): a.get("Quantity") for a in message.lead}
    # The first change goes out at once; everything after it waits for the next slot.
    assert quantities in ({"A1": "2"}, {"A1": "2", "A2": "1", "GONE": "0"})
    messages = [message, *[r for r in await first.collect(1.5)
                           if r.tag == "StockInfoMessage"]]
    assert len(messages) <= 2
    reported = {a.get("Id"): a.get("Quantity") for m in messages for a in m.lead}
    assert reported == {"A1": "2", "A2": "1", "GONE": "0"}
    assert all(m.id is not None and m.id.isdigit() for m in messages)
    assert len([r for r in await second.collect(0) if r.tag == "StockInfoMessage"]) == \
        len(messages)


async def test_a_defect_while_answering_keeps_the_connection(
        client: ImsClient, backend: MemoryBackend) -> None:
    async def broken_status() -> None:
        return None  # not a MachineStatus: the server trips over it

    backend.machine_status = broken_status  # type: ignore[assignment,method-assign]
    await client.send(client.routed("StatusRequest", Id="66", IncludeDetails="true"))
    answer = await client.expect("UnprocessedMessage")
    assert "incident" in answer.lead.get("Text", "")
    assert answer.lead.find("Message").get("Id") == "66"  # type: ignore[union-attr]
    assert (await client.request("StockInfoRequest")).tag == "StockInfoResponse"
