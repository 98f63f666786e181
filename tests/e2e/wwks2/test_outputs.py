"""Pharmacy software drives the real machine over WWKS2: dispenserd and dispenser-sim as
processes, the IMS test client on TCP. Stock as the machine holds it (FEFO, quarantine,
shelf life, reservations), outputs to the end (Completed, Incomplete, Rejected, the same
request again), what every client hears, TaskInfo, the status and CLI views, and the
robot's ledger pack by pack."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from dispenser.api.client import ApiClient
from dispenser.testing import Sim, drugs, load_packs, pack, wait_for
from dispenser.testing.ims_client import E, ImsClient
from dispenser.testing.wwks2 import (
    Wwks2Daemon,
    check_totes_match_journal,
    criteria,
    ctl,
    output,
    packs_of,
    status_of,
)

TODAY = date.today()
A, B, C = (r["drug_code"] for r in drugs()["robot"][20:23])


def _articles(message: object) -> dict[str, list[dict[str, str]]]:
    lead = message.lead  # type: ignore[attr-defined]
    return {a.get("Id"): [p.attrib for p in a.findall("Pack")] for a in lead.iter("Article")}


async def _stocked(daemon: Wwks2Daemon, sim: Sim) -> ApiClient:
    """A, two batches (the earlier expiring first out); B, a batch to quarantine; C, one
    pack with 20 days left (loaded while 10 days were enough)."""
    daemon.min_shelf_life_days = 10
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    await load_packs(sim, staff, [
        *(pack(A, "AE", TODAY + timedelta(days=100), f"AE{i}") for i in range(2)),
        *(pack(A, "AL", TODAY + timedelta(days=300), f"AL{i}") for i in range(3)),
        *(pack(B, "BQ", TODAY + timedelta(days=200), f"BQ{i}") for i in range(2)),
        pack(C, "CN", TODAY + timedelta(days=20), "CN0")])
    await staff.close()
    assert daemon.stop() == 0
    daemon.min_shelf_life_days = 30  # C now has too little shelf life to hand over
    daemon.start()
    staff = await daemon.client("staff")
    await daemon.wait_ready(staff)
    return staff


async def test_stock_outputs_and_what_every_client_hears(daemon: Wwks2Daemon,
                                                         sim: Sim) -> None:
    daemon.wwks2 = "keepalive_interval_s = 1"
    staff = await _stocked(daemon, sim)
    ims = await daemon.ims(100)
    other = await daemon.ims(101)
    try:
        # KeepAlive both ways: answered, and asked by the storage system after the Hello.
        alive = await ims.request("KeepAliveRequest")
        assert (alive.lead.get("Source"), alive.lead.get("Destination")) == ("999", "100")
        await ims.expect("KeepAliveRequest", timeout=5)

        status = await ims.request("StatusRequest", IncludeDetails="true")
        assert status.lead.get("State") == "Ready"
        assert [c.get("Description") for c in status.lead.findall("Component")] == [
            "Robot", "Label printer", "Output 1", "Output 2", "Output 3", "Output 4"]

        await staff.call("stock.quarantine", {"drug_code": B, "batch": "BQ", "reason": "recall"})
        stock = await ims.request("StockInfoRequest", IncludePacks="True",
                                  IncludeArticleDetails="True")
        got = _articles(stock)
        assert [p["SerialNumber"] for p in got[A]] == ["AE0", "AE1", "AL0", "AL1", "AL2"]
        assert {p["State"] for p in got[A]} == {"Available"}
        assert {p["State"] for p in got[B]} == {"NotAvailable"}  # quarantined
        assert [p["State"] for p in got[C]] == ["NotAvailable"]  # 20 days left, 30 needed
        first = got[A][0]
        assert int(first["Id"]) > 0 and first["BatchNumber"] == "AE"
        assert first["ExpiryDate"] == (TODAY + timedelta(days=100)).isoformat()
        assert first["ScanCode"] == f"01{A}17{TODAY + timedelta(days=100):%y%m%d}10AE\\x1D21AE0"
        article = next(stock.lead.iter("Article"))
        assert article.get("Name") and article.get("Quantity") == "5"

        # Completed: FEFO, every pack with where it went; both clients hear it, only the
        # requester gets the response.
        response = await output(ims, "688", criteria(A, 3), destination=2)
        assert status_of(response) == "Queued"
        done = await ims.expect("OutputMessage", "688", timeout=30)
        assert status_of(done) == "Completed"
        packs = packs_of(done)
        assert [p["SerialNumber"] for p in packs] == ["AE0", "AE1", "AL0"]
        assert {(p["article"], p["OutputDestination"]) for p in packs} == {(A, "2")}
        assert status_of(await other.expect("OutputMessage", "688")) == "Completed"
        assert not other.inbox("OutputResponse")

        # The same request again is the same task: Queued and its outcome again.
        again = await output(ims, "688", criteria(A, 3), destination=2)
        assert status_of(again) == "Queued"
        assert packs_of(await ims.expect("OutputMessage", "688")) == packs
        # The same Id for something else is refused, with no OutputMessage after.
        assert status_of(await output(ims, "688", criteria(A, 1))) == "Rejected"

        # Incomplete: fewer than asked; an article that got nothing is listed empty.
        assert status_of(await output(ims, "689", criteria(A, 5), criteria(B, 1))) == "Queued"
        short = await ims.expect("OutputMessage", "689", timeout=30)
        assert status_of(short) == "Incomplete"
        assert [p["SerialNumber"] for p in packs_of(short)] == ["AL1", "AL2"]
        assert _articles(short)[B] == []
        # Rejected: no such destination, no such article, no such machine state.
        assert status_of(await output(ims, "690", criteria(A, 1), destination=9)) \
            == "Rejected"
        assert status_of(await output(ims, "691", criteria("99999999999999", 1))) \
            == "Rejected"
        await staff.call("machine.pause", {"reason": "lunch"})
        assert status_of(await output(ims, "692", criteria(A, 1))) == "Rejected"
        assert (await ims.request("StatusRequest")).lead.get("State") == "NotReady"
        await staff.call("machine.resume")

        # TaskInfo answers from the journal, with the packs when asked.
        info = await ims.request("TaskInfoRequest", E("Task", Type="Output", Id="688"),
                                 E("Task", Type="Output", Id="nope"),
                                 E("Task", Type="StockDelivery", Id="1"),
                                 IncludeTaskDetails="True")
        tasks = info.lead.findall("Task")
        assert [t.get("Status") for t in tasks] == ["Completed", "Unknown", "Unknown"]
        assert [p["SerialNumber"] for p in packs_of(info)] == ["AE0", "AE1", "AL0"]

        # Stock changes reach every client; A has no pack left.
        def a_empty(c: ImsClient) -> bool:
            return any(a.get("Id") == A and a.get("Quantity") == "0"
                       for m in c.frames if m.tag == "StockInfoMessage"
                       for a in m.lead.iter("Article"))
        await wait_for(lambda: asyncio.sleep(0, a_empty(ims) and a_empty(other)), 10,
                       what="StockInfoMessage with A at 0")

        # Pack by pack, the robot's totes are the tasks' packs.
        by_task = await check_totes_match_journal(staff, sim)
        assert sorted(by_task.values()) == [["AE0", "AE1", "AL0"], ["AL1", "AL2"]]
        listed = (await staff.call("task.list", {"purpose": "wwks2_output"}))["items"]
        assert {t["key"]: t["state"] for t in listed} == {"100/688": "completed",
                                                          "100/689": "incomplete"}
        assert {t["actor"] for t in listed} == {"wwks2:100@127.0.0.1"}
        assert all(t["reported"] for t in listed)

        # What staff and technicians see.
        st = await staff.call("machine.status")
        assert st["tasks"] == {"completed": 1, "incomplete": 1}
        assert {c["subscriber_id"] for c in st["wwks2"]["clients"]} == {100, 101}
        # (in a thread: the clients must go on answering keep-alives meanwhile)
        shown = await asyncio.to_thread(ctl, daemon, "staff", "status")
        assert shown.returncode == 0, shown.stderr
        assert "wwks2" in shown.stdout and "2 clients" in shown.stdout
        assert "completed 1, incomplete 1" in shown.stdout
        stats = await asyncio.to_thread(ctl, daemon, "technician", "diag", "stats")
        assert "wwks2.messages_in" in stats.stdout and "wwks2.unprocessed" in stats.stdout
        listing = await asyncio.to_thread(ctl, daemon, "staff", "tasks")
        assert "100/688" in listing.stdout and "incomplete" in listing.stdout

        # A hostile message costs its sender an UnprocessedMessage, nothing more.
        await ims.send_raw(b'<WWKS Version="2.0"><!DOCTYPE x [<!ENTITY a "aaaa">]>'
                           b'<StatusRequest Id="66" Source="100" Destination="999"/></WWKS>')
        refused = await ims.expect("UnprocessedMessage")
        assert refused.lead.get("Reason") == "SyntaxError"
        assert (await ims.request("StatusRequest")).lead.get("State") == "Ready"
        tech = await daemon.client("technician")
        stats_now = await tech.call("diag.stats")
        assert stats_now["wwks2"]["unprocessed"] == 1
        assert stats_now["wwks2"]["outputs_rejected"] == 4
        assert (await tech.call("audit.verify"))["ok"] is True
        await tech.close()
    finally:
        await ims.close()
        await other.close()
        await staff.close()
