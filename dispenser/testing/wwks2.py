"""dispenserd with its WWKS2 front door, for end-to-end tests: the harness's processes
(``tests/e2e/harness.py``) with a ``[wwks2]`` table, the IMS test client of
``dispenser/testing/ims_client.py`` (which shares no code with the server), and the check that
the robot's ledger and the journal agree pack by pack when output tasks and shipments
share the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dispenser.api.client import ApiClient
from dispenser.testing import TOKENS, Daemon, Sim, free_port, list_all, pack_key
from dispenser.testing.ims_client import E, ImsClient, Received

CTL = Path(sys.executable).parent / "dispenserctl"


class Wwks2Daemon(Daemon):
    """``dispenserd`` serving WWKS2 on ``wwks2_port`` (a free port unless given);
    ``wwks2`` adds lines to the ``[wwks2]`` table; other keywords go to ``Daemon``."""

    def __init__(self, workdir: Path, sim: Sim, *, wwks2_port: int = 0, wwks2: str = "",
                 **knobs: Any) -> None:
        super().__init__(workdir, sim, **knobs)
        self.wwks2_port = wwks2_port
        self.wwks2 = wwks2

    def write_config(self) -> Path:
        path = super().write_config()
        if not self.wwks2_port:
            self.wwks2_port = free_port()
        path.write_text(path.read_text() + "\n[wwks2]\nenabled = true\n"
                        f"port = {self.wwks2_port}\n{self.wwks2}\n")
        return path

    async def ims(self, subscriber_id: int = 100, hello: bool = True,
                  **options: Any) -> ImsClient:
        client = await ImsClient.connect(self.wwks2_port, subscriber_id=subscriber_id,
                                         **options)
        if hello:
            await client.hello()
        return client


def ctl(daemon: Daemon, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    """dispenserctl as a user runs it (into a pipe: plain text, no terminal width)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPENSER_")}
    env.update({"DISPENSER_SOCKET": str(daemon.socket), "DISPENSER_TOKEN": TOKENS[role]})
    return subprocess.run([str(CTL), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def criteria(article: str, quantity: int, **more: Any) -> ET.Element:
    """A Criteria as the pharmacy client library writes it (0 and False for "not set")."""
    values = {"ArticleId": article, "Quantity": quantity, "SubItemQuantity": 0, "PackId": 0,
              "SingleBatchNumber": "False", **more}
    return E("Criteria", **values)


async def output(ims: ImsClient, task_id: str, *crits: ET.Element, destination: int = 1,
                 priority: str = "Normal") -> Received:
    """Send an OutputRequest; returns its OutputResponse."""
    details = E("Details", Priority=priority, OutputDestination=destination, OutputPoint=0)
    return await ims.request("OutputRequest", details, *crits, Id=task_id)


def status_of(response: Received) -> str | None:
    details = response.lead.find("Details")
    return None if details is None else details.get("Status")


def packs_of(message: Received) -> list[dict[str, str]]:
    """The packs an OutputMessage (or TaskInfo Task) lists, each with its article id."""
    found = []
    for article in message.lead.iter("Article"):
        for pack in article.findall("Pack"):
            found.append({"article": article.get("Id", ""), **pack.attrib})
    return found


async def task_packs(client: ApiClient) -> dict[str, list[dict[str, Any]]]:
    """Every output task's packs (in its tote or dispensed), by task id."""
    out: dict[str, list[dict[str, Any]]] = {}
    after = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after"] = after
        page = await client.call("task.list", params)
        for t in page["items"]:
            full = await client.call("task.get", {"task_id": t["task_id"]})
            out[t["task_id"]] = [p for ln in full["lines"] for p in ln["packs"]]
        after = page["next"]
        if not after:
            return out


async def check_totes_match_journal(client: ApiClient, sim: Sim) -> dict[str, list[str]]:
    """Pack by pack: every tote the robot handed on holds exactly the packs of one
    completed shipment or of one ended output task; no pack left twice; no tote holds
    anything the journal does not record. Returns each task's serials."""
    ledger = await sim.ledger()
    totes: dict[tuple[str, ...], int] = {}
    for t in ledger["totes"]:
        if t["packs"]:
            key = tuple(sorted(p["serial"] for p in t["packs"]))
            totes[key] = totes.get(key, 0) + 1
    journal: list[str] = []
    for sh in await list_all(client, "shipment.list"):
        if sh["state"] != "completed" or sh["picked"] == 0:
            continue
        full = await client.call("shipment.get", {"shipment_id": sh["shipment_id"]})
        key = tuple(sorted(p["serial"] for p in full["packs"]))
        assert totes.get(key, 0) > 0, f"{sh['shipment_id']}: no tote holds exactly {key}"
        totes[key] -= 1
        journal += key
    by_task: dict[str, list[str]] = {}
    for task_id, packs in (await task_packs(client)).items():
        if not packs:
            continue
        assert all(p["state"] == "dispensed" for p in packs), (task_id, packs)
        key = tuple(sorted(p["serial"] for p in packs))
        assert totes.get(key, 0) > 0, f"{task_id}: no tote holds exactly {key}"
        totes[key] -= 1
        journal += key
        by_task[task_id] = list(key)
    assert not any(totes.values()), "a tote holds packs no shipment or task records"
    robot = [p["serial"] for t in ledger["totes"] for p in t["packs"]]
    assert len(robot) == len(set(robot)), "the robot handed a pack on twice"
    assert sorted(journal) == sorted(robot)
    return by_task


async def check_stock_matches_slots(client: ApiClient, sim: Sim,
                                    blocked: frozenset[int] = frozenset()) -> None:
    """Packs the journal has in stock are exactly the packs in the robot's slots (the
    part of the ledger invariant that holds whatever else went out through outputs).

    ``blocked`` slots (a short pick found them emptier than recorded; a person has to
    count them) are left out."""
    ledger = await sim.ledger()
    in_slots = {(int(s), pack_key(p)) for s, packs in ledger["slots"].items() for p in packs
                if int(s) not in blocked}
    journal: set[tuple[int, tuple[str, str, str, str]]] = set()
    for state in ("in_stock", "quarantined"):
        for p in await list_all(client, "stock.list", {"state": state}):
            if p["slot"] is not None and p["shipment_id"] is None and p["slot"] not in blocked:
                journal.add((p["slot"], pack_key(p)))
    assert journal == in_slots, (f"journal only: {sorted(journal - in_slots)[:5]}, "
                                 f"robot only: {sorted(in_slots - journal)[:5]}")
