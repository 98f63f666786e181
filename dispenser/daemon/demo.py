"""The demo: ``dispenserd --simulate`` with the simulated robot and printer, demo stock
and demo orders. This module is the one place outside the tests that imports the
simulator (``firmware_sim``).

Demo stock is put at the simulated robot's input point, as staff would, and loaded through
the normal path (scan check, input scanner check, STORE, confirmation), so the journal and
the simulator's ledger agree pack by pack. Demo orders are generated deterministically:
a few patients order more than once (their orders merge into one shipment), some orders
carry a fridge item (a manual line, confirmed by a simulated packing desk).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispenser.config import Config, InstitutionConfig
from dispenser.core.errors import DispenserError
from dispenser.core.formulary import Drug, Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.states import ShipmentState
from dispenser.core.views import Actor
from dispenser.logs import get_logger

if TYPE_CHECKING:
    from dispenser.daemon.app import Daemon

log = get_logger(__name__)

LOADER = Actor("demo-loader", "staff")
ORDER_SYSTEM = Actor("demo-order-system", "order_system")
PACKER = Actor("demo-packing-desk", "staff")

_FIRST = ("Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu")
_GIVEN = ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Qiang", "Hua", "Ping", "Jun")
_STREETS = ("Nanjing Road", "Heping Road", "Binjiang Avenue", "Weijin Road", "Dagu Road")


def pick_drugs(formulary: Formulary, robot: int, fridge: int,
               rng: random.Random) -> tuple[list[Drug], list[Drug]]:
    robots = [d for d in formulary.values() if d.robot]
    fridges = [d for d in formulary.values() if d.fridge and not d.manual]
    return rng.sample(robots, min(robot, len(robots))), rng.sample(fridges,
                                                                   min(fridge, len(fridges)))


def demo_orders(n: int, formulary: Formulary, today: date, seed: int = 7,
                run: str = "") -> list[dict[str, Any]]:
    rng = random.Random(seed)
    robot, fridge = pick_drugs(formulary, 10, 2, rng)
    orders: list[dict[str, Any]] = []
    patients = max(1, int(n * 0.8))
    start = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    for i in range(n):
        p = i if i < patients else rng.randrange(patients)  # some patients order twice
        pid = f"P{run}{p:05d}"
        used = {o["items"][0]["drug_code"] for o in orders if o["patient"]["id"] == pid}
        choices = [d for d in robot if d.drug_code not in used] or robot
        items = [{"drug_code": d.drug_code, "quantity": rng.choice((1, 1, 2)),
                  "days_supply": 30} for d in rng.sample(choices, rng.choice((1, 1, 2)))]
        if fridge and rng.random() < 0.1:
            items.append({"drug_code": rng.choice(fridge).drug_code, "quantity": 1,
                          "days_supply": 30})
        hour = 9 + (p % 8)
        orders.append({
            "order_id": f"DEMO-{today:%Y%m%d}{run}-{i + 1:04d}",
            "patient": {"id": pid,
                        "name": f"{_FIRST[p % 10]} {_GIVEN[(p // 10) % 10]}",
                        "phone": f"+86 22 {5550000 + p:07d}"},
            "prescription": {"id": f"RX{run}{p:05d}-{today:%y%m}", "issued_on":
                             (today - timedelta(days=10)).isoformat(),
                             "institution": "Demo Diabetes Clinic", "prescriber": "Dr Demo",
                             "diagnoses": ["E11.9"]},
            "items": items,
            "delivery": {"address": f"{(p * 7) % 300 + 1} {_STREETS[p % 5]}, Tianjin",
                         "window_start": (start + timedelta(hours=hour)).isoformat(),
                         "window_end": (start + timedelta(hours=hour + 3)).isoformat()},
        })
    return orders


# The demo's hospital feed (issue 10): the clinic the demo orders cite is designated; a
# city hospital's pharmacy also dispenses to some of the demo patients.
DEMO_INSTITUTIONS = {"DDC": "Demo Diabetes Clinic", "DCH": "Demo City Hospital"}
FEED = Actor("demo-hospital-feed", "records")


def demo_hospital_feed(orders: list[dict[str, Any]], formulary: Formulary, today: date,
                       seed: int = 11) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(dispensing records, prescriptions) for the demo orders: about 5 % of the patients
    bought one of their drugs at the city hospital last week; the prescriptions the orders
    cite are registered as the clinic issued them, except about 1 in 40 (held
    ``prescription_unregistered``), 1 in 60 from a clinic outside the programme (its orders
    are changed to cite it: ``institution_not_designated``) and 1 in 60 a pack short
    (``prescription_exhausted``)."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    by_rx: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for o in orders:
        by_rx.setdefault(o["prescription"]["id"], []).append(o)
        pid = o["patient"]["id"]
        if pid not in seen and rng.random() < 0.05:
            item = rng.choice(o["items"])
            records.append({"record_id": f"DCH-{o['order_id']}",
                            "source": {"code": "DCH", "name": DEMO_INSTITUTIONS["DCH"]},
                            "patient_id": pid,
                            "dispensed_on": (today - timedelta(days=7)).isoformat(),
                            "drug_code": item["drug_code"], "quantity": 1, "days_supply": 30})
        seen.add(pid)
    prescriptions = []
    for rx_id, cited in by_rx.items():
        roll = rng.random()
        if roll < 1 / 40:
            continue
        institution = "DDC"
        packs: dict[str, int] = {}
        for o in cited:
            for it in o["items"]:
                atc = formulary[it["drug_code"]].atc
                packs[atc] = packs.get(atc, 0) + it["quantity"]
        if roll < 1 / 40 + 1 / 60:
            institution = "CLINIC-X"
            for o in cited:
                o["prescription"]["institution"] = institution
        elif roll < 1 / 40 + 2 / 60:
            short = [a for a, n in packs.items() if n >= 2]
            if short:
                packs[short[0]] -= 1
        first = cited[0]["prescription"]
        prescriptions.append({
            "id": rx_id, "institution": institution, "prescriber": first["prescriber"],
            "patient_id": cited[0]["patient"]["id"], "issued_on": first["issued_on"],
            "diagnoses": first["diagnoses"],
            "items": [{"atc": a, "quantity": n, "days_supply": 90} for a, n in packs.items()]})
    return records, prescriptions


async def send_hospital_feed(daemon: Daemon, orders: list[dict[str, Any]],
                             today: date) -> None:
    """Import the demo's hospital feed before its orders arrive, when the demo clinic is a
    designated institution (the demo's own configuration)."""
    d = daemon.dispensary
    if "DDC" not in d.prescriptions.institutions:
        return
    records, prescriptions = demo_hospital_feed(orders, daemon.formulary, today)
    await daemon.commit.run(functools.partial(d.import_records, records, FEED))
    await daemon.commit.run(functools.partial(d.register_prescriptions, prescriptions, FEED))
    log.info("demo: hospital feed", records=len(records), prescriptions=len(prescriptions))


def demo_packs(orders: list[dict[str, Any]], formulary: Formulary, today: date,
               extra: int = 2, run: str = "") -> list[dict[str, str]]:
    """Packs covering the orders' robot items: for each drug an older batch (picked first,
    FEFO) and a newer one."""
    need: Counter[str] = Counter()
    for o in orders:
        for it in o["items"]:
            if formulary[it["drug_code"]].robot:
                need[it["drug_code"]] += it["quantity"]
    packs: list[dict[str, str]] = []
    serial = 1
    for n, (code, qty) in enumerate(sorted(need.items())):
        total = qty + extra
        first = (total + 1) // 2
        for k in range(total):
            older = k < first
            expiry = today + timedelta(days=(200 if older else 420) + n)
            packs.append({"gtin": code, "batch": f"{'A' if older else 'B'}{n:02d}{today:%m}",
                          "expiry": expiry.isoformat(), "serial": f"DS{run}{serial:06d}"})
            serial += 1
    return packs


def scan_of(pack: dict[str, str]) -> str:
    y, m, d = pack["expiry"].split("-")
    return compose_scan(pack["gtin"], f"{y[2:]}{m}{d}", pack["batch"], pack["serial"])


async def load_stock(daemon: Daemon, packs: list[dict[str, str]]) -> int:
    """Put the packs at the simulator's input point and load them the normal way."""
    sim = daemon.simulator
    # Only packs the dispensary would accept go on the input point: a refused pack would
    # stay there and block every later load.
    accepted = []
    for pack in packs:
        try:
            daemon.dispensary.check_scan(scan_of(pack))
        except DispenserError as exc:
            log.warning("demo pack left out", gtin=pack["gtin"], error=exc.message)
            continue
        accepted.append(pack)
    packs = accepted
    sim.put_input(packs)
    loaded = 0
    for pack in packs:
        try:
            await daemon.scheduler.request_load(scan_of(pack), LOADER, wait=True)
            loaded += 1
        except Exception as exc:
            log.warning("demo pack not loaded", gtin=pack["gtin"], error=str(exc))
    return loaded


async def wait_ready(daemon: Daemon, timeout_s: float = 60.0) -> None:
    from dispenser.daemon.controller import ControllerState

    async with asyncio.timeout(timeout_s):
        while daemon.machine.state is not ControllerState.READY:
            await asyncio.sleep(0.05)


async def packing_desk(daemon: Daemon, interval_s: float = 0.5) -> None:
    """Confirm fridge/manual lines of labelled shipments, as the packing desk would."""
    d = daemon.dispensary
    serial = 1
    while True:
        await asyncio.sleep(interval_s)
        for view in d.list_shipments(ShipmentState.LABELLING, limit=50):
            for line in view.manual_picks:
                for _ in range(line.quantity - len(line.confirmed)):
                    expiry = daemon.clock().date() + timedelta(days=180)
                    scan = compose_scan(line.drug_code, f"{expiry:%y%m%d}", "F01",
                                        f"MP{serial:08d}")
                    serial += 1
                    try:
                        await daemon.commit.run(functools.partial(
                            d.confirm_manual, view.shipment_id, scan, PACKER))
                    except DispenserError as exc:
                        log.warning("demo manual pick refused", shipment_id=view.shipment_id,
                                    error=exc.message)
                        continue
            daemon.scheduler.maybe_complete(view.shipment_id)


def demo_task(orders_n: int) -> Callable[[Daemon], Coroutine[Any, Any, None]]:
    async def run(daemon: Daemon) -> None:
        today = daemon.clock().date()
        # A tag per run keeps order ids and serials unique when the journal is kept
        # between runs (--simulate with --config).
        run = daemon.clock().strftime("%H%M%S")
        # Stock enough for at least 40 orders, so --simulate alone has stock to show.
        orders = demo_orders(max(orders_n, 40), daemon.formulary, today, run=run)
        packs = demo_packs(orders, daemon.formulary, today, run=run)
        orders = orders[:orders_n]
        desk = asyncio.create_task(packing_desk(daemon))
        try:
            await wait_ready(daemon)
            await send_hospital_feed(daemon, orders, today)
            log.info("demo: loading stock", packs=len(packs))
            loading = asyncio.create_task(load_stock(daemon, packs))
            # Orders arrive while stock is still being loaded: a shipment whose drugs are
            # not in yet waits (held, stock_short) and goes as soon as they are.
            await asyncio.sleep(1.0)
            for k in range(0, len(orders), 5):
                chunk = orders[k:k + 5]
                results = await daemon.commit.run(functools.partial(
                    daemon.dispensary.submit_many, chunk, ORDER_SYSTEM))
                for r in results:
                    if isinstance(r, DispenserError):
                        log.warning("demo order refused", error=r.message)
                    else:
                        daemon.order_event(r)
                        log.info("order received", order_id=r.order_id, state=r.state.value,
                                 lines=len(r.items), packs=sum(i.quantity for i in r.items))
                await asyncio.sleep(0.5)
            loaded = await loading
            log.info("demo: stock loaded", packs=loaded)
            await desk
        finally:
            desk.cancel()

    return run


__all__ = ["DEMO_INSTITUTIONS", "demo_hospital_feed", "demo_orders", "demo_packs", "demo_task",
           "load_stock", "packing_desk", "scan_of", "send_hospital_feed"]


# The simulated machine (docs/robot-protocol.md §2.1): 2 x 25 x 200 slots of 10 packs.
SIM_GEOMETRY = {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10}


def _with(model: Any, **update: Any) -> Any:
    return model.model_copy(update=update)


class SimulatedMachine:
    """The simulator running inside the daemon, and the configuration that points the
    daemon at it. Without a configuration file (``configured`` False) the demo journal is
    a fresh temporary one, merge windows are short, and the account that started it may
    use dispenserctl as a technician (SO_PEERCRED, no token needed)."""

    def __init__(self, config: Config, *, configured: bool, speed: float | None,
                 instant: bool, orders: int) -> None:
        self.config = config
        self.configured = configured
        self.speed = speed
        self.instant = instant
        self.orders = orders
        self.workdir = tempfile.mkdtemp(prefix="dispenserd-sim-")
        self.simulator: Any = None
        self.tasks: list[Callable[[Daemon], Coroutine[Any, Any, None]]] = []

    async def start(self) -> Config:
        from firmware_sim import Simulator, SimulatorOptions

        config = self.config
        state_file = None
        if not self.configured:
            peer_uids = {**config.api.peer_uids, os.getuid(): "technician"}
            config = _with(config, journal=_with(config.journal,
                                                 path=Path(self.workdir) / "journal.sqlite"),
                           policy=_with(config.policy, merge_window_s=2.0),
                           api=_with(config.api, peer_uids=peer_uids),
                           institutions=tuple(InstitutionConfig(code=c, name=n)
                                              for c, n in DEMO_INSTITUTIONS.items()))
        else:
            state_file = str(Path(config.journal.path).with_suffix(".sim-state.json"))
        opts = SimulatorOptions(
            tcp_port=0, printer_link=str(Path(self.workdir) / "printer"),
            speed=self.speed or config.simulate.speed,
            instant=self.instant or config.simulate.instant, state_file=state_file,
            outputs=config.robot.outputs)
        self.simulator = Simulator(opts)
        await self.simulator.start()
        config = config.model_copy(update=dict(
            robot=_with(config.robot, transport="tcp", host="127.0.0.1",
                        port=self.simulator.tcp_port),
            printer=_with(config.printer, url=self.simulator.printer_device, timeout_s=1.0),
            stock=_with(config.stock, **SIM_GEOMETRY)))
        log.info("simulator running", listeners=self.simulator.listeners(), speed=opts.speed,
                 instant=opts.instant)
        self.tasks.append(demo_task(self.orders))
        return config

    async def stop(self) -> None:
        if self.simulator is not None:
            await self.simulator.stop()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
