"""What tests, campaigns and benchmarks share: the machine's processes, the simulator's
control socket, test data, waiting, and the one ledger invariant.

- ``Sim`` (``sim.py``): ``dispenser-sim`` as a process and a client of its control socket;
- ``Daemon``, ``DaemonOptions``, ``TOKENS`` (``daemon.py``): ``dispenserd`` as a process
  with a test configuration;
- ``Stack`` (``stack.py``): both, with API clients, as campaigns and benchmarks use them;
- ``check_invariant`` (``invariant.py``): the journal against the simulator's ledger, pack
  by pack;
- ``data.py``: formulary rows, packs, scans, orders; ``waiting.py``: ``wait_for``,
  ``list_all``; ``report.py``: ``say``, ``report_campaign``; ``tools.py``: system tools;
  ``small_disk.py``: a journal disk that fills up; ``flood.py``: a client that pipelines
  a flood of requests on one connection;
- ``campaigns/``: the day's load, the crash, fault, API fuzzing and edge campaigns
  (``bench/`` has their commands; the suite runs short versions).

Nothing here is used by the daemon itself.
"""

from __future__ import annotations

from typing import Any

from dispenser.api.client import ApiClient
from dispenser.testing.daemon import ROLES, TOKENS, Daemon, DaemonOptions
from dispenser.testing.data import (
    FORMULARY,
    GS,
    ROOT,
    drugs,
    formulary_rows,
    order,
    pack,
    pack_key,
    scan,
)
from dispenser.testing.invariant import (
    ORDER_FINAL,
    SHIPMENT_FINAL,
    InvariantReport,
    InvariantViolation,
    check_invariant,
    dispensed,
)
from dispenser.testing.report import report_campaign, say
from dispenser.testing.sim import BIN, Sim
from dispenser.testing.stack import Stack
from dispenser.testing.tools import free_port
from dispenser.testing.waiting import list_all, wait_for, wait_until

__all__ = [
    "BIN",
    "FORMULARY",
    "GS",
    "ORDER_FINAL",
    "ROLES",
    "ROOT",
    "SHIPMENT_FINAL",
    "TOKENS",
    "Daemon",
    "DaemonOptions",
    "InvariantReport",
    "InvariantViolation",
    "Sim",
    "Stack",
    "check_invariant",
    "dispensed",
    "drugs",
    "formulary_rows",
    "free_port",
    "list_all",
    "load_packs",
    "order",
    "pack",
    "pack_key",
    "report_campaign",
    "say",
    "scan",
    "wait_for",
    "wait_until",
]


async def load_packs(sim: Sim, client: ApiClient, packs: list[dict[str, str]]) -> list[Any]:
    """Put the packs at the input point and load each through ``stock.load`` (waiting for
    each STORE), as staff do."""
    await sim.put_input(packs)
    return [await client.call("stock.load", {"scan": scan(p), "wait": True}, timeout=60)
            for p in packs]
