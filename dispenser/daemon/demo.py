"""The demo: ``dispenserd --simulate`` with the simulated robot and printer, demo stock
and demo orders. This module is the one place outside the tests that imports the
simulator (``firmware_sim``).

Without ``--config`` the demo keeps its journal, audit key and the simulator's state in
``var/demo/`` under the working directory, so a restart continues where it stopped;
``--fresh`` removes them first. The simulator's control socket is ``[simulate] control``
(``var/sim.sock``), where ``dispenser-sim put`` and ``take`` play the person at the input
point.

Demo stock is put at the simulated robot's input point, as staff would, and loaded through
the normal path (scan check, input scanner check, STORE, confirmation), so the journal and
the simulator's ledger agree pack by pack. Demo orders are generated deterministically from
the day (ids ``DEMO-YYYYMMDD-NNNN``; the first N are the same whatever N): a few patients
order more than once (their orders merge into one shipment), some orders carry a fridge
item (a manual line, confirmed by a simulated packing desk). A restart the same day submits
only the orders and loads only the packs the journal does not have yet. The last order,
``DEMO-YYYYMMDD-LOAD``, is for a drug the demo does not stock: it waits (held,
``stock_short``) until a pack of it is loaded by hand (README, "Loading stock in the demo").

Size: the demo in one place, as issue 9 asked, and the one module outside the tests that
imports the simulator: what the demo generates (orders, the hospital feed, packs, all
deterministic from the day) and what runs it (``SimulatedMachine``, stock put at the input
point and loaded, the packing desk, submitting what the journal does not have yet) change
together. The generated data needs no simulator and could move to a module of its own if it
grows; the simulator import would stay here.
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
from dispenser.core.errors import DispenserError, LoadRefused, NotFound
from dispenser.core.formulary import Drug, Formulary
from dispenser.core.gs1 import compose_scan
from dispenser.core.states import OrderState, ShipmentState
from dispenser.core.views import Actor
from dispenser.journal.lock import JournalLock, JournalLocked
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


def waiting_drug(formulary: Formulary, seed: int = 7) -> Drug:
    """The robot drug of the ``LOAD`` order: one the demo does not stock."""
    stocked, _ = pick_drugs(formulary, 10, 2, random.Random(seed))
    codes = {d.drug_code for d in stocked}
    others = [d for d in formulary.values() if d.robot and d.drug_code not in codes]
    return random.Random(seed + 1).choice(others)


def _order(order_id: str, p: int, tag: str, items: list[dict[str, Any]], today: date,
           start: datetime) -> dict[str, Any]:
    hour = 9 + (p % 8)
    return {
        "order_id": order_id,
        "patient": {"id": f"P{tag}{p:04d}",
                    "name": f"{_FIRST[p % 10]} {_GIVEN[(p // 10) % 10]}",
                    "phone": f"+86 22 {5550000 + p:07d}"},
        "prescription": {"id": f"RX{tag}{p:04d}", "issued_on":
                         (today - timedelta(days=10)).isoformat(),
                         "institution": "Demo Diabetes Clinic", "prescriber": "Dr Demo",
                         "diagnoses": ["E11.9"]},
        "items": items,
        "delivery": {"address": f"{(p * 7) % 300 + 1} {_STREETS[p % 5]}, Tianjin",
                     "window_start": (start + timedelta(hours=hour)).isoformat(),
                     "window_end": (start + timedelta(hours=hour + 3)).isoformat()},
    }


def demo_orders(n: int, formulary: Formulary, today: date,
                seed: int = 7) -> list[dict[str, Any]]:
    """The day's first ``n`` demo orders. Each order is drawn from its own number, so the
    first k orders are the same whatever ``n``: a restart recognises those it sent."""
    robot, fridge = pick_drugs(formulary, 10, 2, random.Random(seed))
    tag = f"{today:%y%m%d}"
    start = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    orders: list[dict[str, Any]] = []
    patient_of: list[int] = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        # Some patients order again: their orders merge into one shipment.
        p = patient_of[rng.randrange(i)] if i >= 5 and rng.random() < 0.2 else i
        patient_of.append(p)
        used = {it["drug_code"] for o, q in zip(orders, patient_of, strict=False) if q == p
                for it in o["items"]}
        choices = [d for d in robot if d.drug_code not in used] or robot
        items = [{"drug_code": d.drug_code, "quantity": rng.choice((1, 1, 2)),
                  "days_supply": 30} for d in rng.sample(choices, rng.choice((1, 1, 2)))]
        if fridge and rng.random() < 0.1:
            items.append({"drug_code": rng.choice(fridge).drug_code, "quantity": 1,
                          "days_supply": 30})
        orders.append(_order(f"DEMO-{today:%Y%m%d}-{i + 1:04d}", p, tag, items, today, start))
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
    are changed to cite it: ``institution_not_designated``) and every 60th a pack short
    (``prescription_exhausted``)."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    by_rx: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for o in orders:
        by_rx.setdefault(o["prescription"]["id"], []).append(o)
        pid = o["patient"]["id"]
        if o["order_id"].endswith("-LOAD"):
            continue  # the order of the loading round: nothing but stock stops it
        if pid not in seen and rng.random() < 0.05:
            item = rng.choice(o["items"])
            records.append({"record_id": f"DCH-{o['order_id']}",
                            "source": {"code": "DCH", "name": DEMO_INSTITUTIONS["DCH"]},
                            "patient_id": pid,
                            "dispensed_on": (today - timedelta(days=7)).isoformat(),
                            "drug_code": item["drug_code"], "quantity": 1, "days_supply": 30})
        seen.add(pid)
    prescriptions = []
    designated, owe_short = 0, False
    for rx_id, cited in by_rx.items():
        roll = rng.random()
        if cited[0]["order_id"].endswith("-LOAD"):
            roll = 1.0  # registered as issued
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
        else:
            # Every 60th prescription of the clinic, or the next one that cites two packs
            # of a drug, is registered a pack short.
            designated += 1
            owe_short = owe_short or designated % 60 == 0
            short = [a for a, n in packs.items() if n >= 2]
            if owe_short and short:
                packs[short[0]] -= 1
                owe_short = False
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


def waiting_order(formulary: Formulary, today: date, seed: int = 7) -> dict[str, Any]:
    """``DEMO-YYYYMMDD-LOAD``: one pack of :func:`waiting_drug`, which only a pack loaded by
    hand lets go."""
    start = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    items = [{"drug_code": waiting_drug(formulary, seed).drug_code, "quantity": 1,
              "days_supply": 30}]
    return _order(f"DEMO-{today:%Y%m%d}-LOAD", 9999, f"{today:%y%m%d}", items, today, start)


def demo_packs(orders: list[dict[str, Any]], formulary: Formulary, today: date,
               extra: int = 2, seed: int = 7) -> list[dict[str, str]]:
    """Packs covering the orders' robot items: for each drug an older batch (picked first,
    FEFO) and a newer one. A pack's identity depends only on its drug, batch and number,
    so a restart recognises the packs it loaded."""
    stocked, _ = pick_drugs(formulary, 10, 2, random.Random(seed))
    index = {code: n for n, code in enumerate(sorted(d.drug_code for d in stocked))}
    need: Counter[str] = Counter()
    for o in orders:
        for it in o["items"]:
            if formulary[it["drug_code"]].robot:
                need[it["drug_code"]] += it["quantity"]
    packs: list[dict[str, str]] = []
    for code, qty in sorted(need.items()):
        n = index.get(code, 99)
        total = qty + extra
        first = (total + 1) // 2
        for k in range(total):
            older = k < first
            letter = "A" if older else "B"
            expiry = today + timedelta(days=(200 if older else 420) + n)
            packs.append({"gtin": code, "batch": f"{letter}{n:02d}{today:%m%d}",
                          "expiry": expiry.isoformat(),
                          "serial": f"D{today:%y%m%d}{n:02d}{letter}"
                                    f"{k if older else k - first:03d}"})
    return packs


def scan_of(pack: dict[str, str]) -> str:
    y, m, d = pack["expiry"].split("-")
    return compose_scan(pack["gtin"], f"{y[2:]}{m}{d}", pack["batch"], pack["serial"])


async def load_stock(daemon: Daemon, packs: list[dict[str, str]]) -> int:
    """Put the packs at the simulator's input point and load them the normal way; packs
    the journal has already (an earlier run) are left out."""
    sim = daemon.simulator
    # Whatever lies at the input point from an earlier run comes off first: the packs
    # must lie there in the order they are scanned.
    taken = sim.take_input(None)
    if taken:
        log.info("demo: took packs off the input point", packs=len(taken))
    # Only packs the dispensary would accept go on the input point: a refused pack would
    # stay there and block every later load.
    accepted = []
    known = 0
    for pack in packs:
        try:
            daemon.dispensary.check_scan(scan_of(pack))
        except LoadRefused as exc:
            if exc.reason_code in ("serial_in_stock", "serial_dispensed", "serial_disposed"):
                known += 1
            else:
                log.warning("demo pack left out", drug_code=pack["gtin"], reason=exc.reason_code)
            continue
        except DispenserError as exc:
            log.warning("demo pack left out", drug_code=pack["gtin"], error=exc.message)
            continue
        accepted.append(pack)
    if known:
        log.info("demo: packs loaded before", packs=known)
    packs = accepted
    sim.put_input(packs)
    loaded = 0
    for pack in packs:
        try:
            await daemon.scheduler.request_load(scan_of(pack), LOADER, wait=True)
            loaded += 1
        except Exception as exc:
            log.warning("demo pack not loaded", drug_code=pack["gtin"], error=str(exc))
    return loaded


async def wait_ready(daemon: Daemon) -> None:
    """Until the machine is ready (after a fault, once a person acknowledged it)."""
    from dispenser.daemon.controller import ControllerState

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


def _known(daemon: Daemon, order_id: str) -> bool:
    try:
        daemon.dispensary.get_order(order_id)
    except NotFound:
        return False
    return True


async def submit_orders(daemon: Daemon, orders: list[dict[str, Any]]) -> None:
    """Submit the orders the journal does not have yet, five at a time."""
    new = [o for o in orders if not _known(daemon, o["order_id"])]
    if len(new) < len(orders):
        log.info("demo: orders submitted before", orders=len(orders) - len(new))
    for k in range(0, len(new), 5):
        chunk = new[k:k + 5]
        results = await daemon.commit.run(functools.partial(
            daemon.dispensary.submit_many, chunk, ORDER_SYSTEM))
        for r in results:
            if isinstance(r, DispenserError):
                log.warning("demo order refused", error=r.message)
                continue
            daemon.order_event(r)  # logs it if it is held, with the reasons
            if r.state is OrderState.RECEIVED:
                log.info("order received", order_id=r.order_id, lines=len(r.items),
                         packs=sum(i.quantity for i in r.items))
            if r.order_id.endswith("-LOAD"):
                log.info("demo: waits for a pack loaded by hand", order_id=r.order_id,
                         drug_code=r.items[0].drug_code,
                         how="README.md, Loading stock in the demo")
        await asyncio.sleep(0.5)


def demo_task(orders_n: int) -> Callable[[Daemon], Coroutine[Any, Any, None]]:
    async def run(daemon: Daemon) -> None:
        today = daemon.clock().date()
        # Stock enough for at least 40 orders, so --simulate alone has stock to show.
        orders = demo_orders(max(orders_n, 40), daemon.formulary, today)
        packs = demo_packs(orders, daemon.formulary, today)
        orders = orders[:orders_n]
        if orders:
            orders.append(waiting_order(daemon.formulary, today))
        desk = asyncio.create_task(packing_desk(daemon))
        try:
            await wait_ready(daemon)
            await send_hospital_feed(daemon, orders, today)
            log.info("demo: loading stock", packs=len(packs))
            loading = asyncio.create_task(load_stock(daemon, packs))
            # Orders arrive while stock is still being loaded: a shipment whose drugs are
            # not in yet waits (held, stock_short) and goes as soon as they are.
            await asyncio.sleep(1.0)
            await submit_orders(daemon, orders)
            log.info("demo: orders in", orders=len(orders))
            loaded = await loading
            log.info("demo: stock loaded", packs=loaded)
            await desk
        finally:
            desk.cancel()

    return run


__all__ = ["DEMO_DIR", "DEMO_INSTITUTIONS", "DemoError", "SimulatedMachine",
           "demo_hospital_feed", "demo_orders", "demo_packs", "demo_task", "load_stock",
           "packing_desk", "scan_of", "send_hospital_feed", "start_over", "waiting_drug",
           "waiting_order"]


# The simulated machine (docs/robot-protocol.md §2.1): 2 x 25 x 200 slots of 10 packs.
SIM_GEOMETRY = {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10}


def _with(model: Any, **update: Any) -> Any:
    return model.model_copy(update=update)


class DemoError(Exception):
    """The demo cannot start; the message says why."""


# Where the demo keeps its journal, audit key and simulator state without --config.
DEMO_DIR = Path("var/demo")


def start_over(folder: Path = DEMO_DIR) -> int:
    """``--fresh``: remove the demo's journal, audit key and simulator state (every file
    in ``folder``); refused while a daemon works on that journal. Returns how many files
    went."""
    if not folder.is_dir():
        return 0
    lock = JournalLock(folder / "journal")
    try:
        lock.acquire()
    except JournalLocked as exc:
        raise DemoError(f"cannot start the demo over: {exc}") from None
    removed = 0
    try:
        for entry in folder.iterdir():
            if entry.name == Path(lock.path).name:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    finally:
        lock.release()
    return removed


class SimulatedMachine:
    """The simulator running inside the daemon, and the configuration that points the
    daemon at it. Without a configuration file (``configured`` False) the demo's journal,
    audit key and simulator state are in ``var/demo/`` (``fresh``: removed first), merge
    windows are short, and the account that started it may use dispenserctl as a
    technician (SO_PEERCRED, no token needed). With one, the journal is the configured
    one and the simulator's state is kept beside it."""

    def __init__(self, config: Config, *, configured: bool, speed: float | None,
                 instant: bool, orders: int, fresh: bool = False) -> None:
        self.config = config
        self.configured = configured
        self.speed = speed
        self.instant = instant
        self.orders = orders
        self.fresh = fresh
        self.workdir = tempfile.mkdtemp(prefix="dispenserd-sim-")
        self.simulator: Any = None
        self.tasks: list[Callable[[Daemon], Coroutine[Any, Any, None]]] = []

    async def start(self) -> Config:
        """Start the simulator; raises :class:`DemoError` when it cannot."""
        from firmware_sim import Simulator, SimulatorError, SimulatorOptions

        config = self.config
        if not self.configured:
            if self.fresh:
                removed = start_over(DEMO_DIR)
                log.info("demo: starting over", folder=str(DEMO_DIR), files_removed=removed)
            try:
                DEMO_DIR.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DemoError(f"cannot make {DEMO_DIR}: {exc.strerror}") from None
            peer_uids = {**config.api.peer_uids, os.getuid(): "technician"}
            config = _with(config, journal=_with(config.journal, path=DEMO_DIR / "journal"),
                           policy=_with(config.policy, merge_window_s=2.0),
                           api=_with(config.api, peer_uids=peer_uids),
                           institutions=tuple(InstitutionConfig(code=c, name=n)
                                              for c, n in DEMO_INSTITUTIONS.items()))
            state_file = str(DEMO_DIR / "sim-state.json")
        else:
            state_file = str(Path(config.journal.path).with_suffix(".sim-state.json"))
        control = Path(config.simulate.control)
        opts = SimulatorOptions(
            tcp_port=0, printer_link=str(Path(self.workdir) / "printer"),
            control_path=str(control), speed=self.speed or config.simulate.speed,
            instant=self.instant or config.simulate.instant, state_file=state_file,
            outputs=config.robot.outputs)
        self.simulator = Simulator(opts)
        try:
            control.parent.mkdir(parents=True, exist_ok=True)
            await self.simulator.start()
        except (OSError, SimulatorError) as exc:
            self.simulator = None
            raise DemoError(f"cannot start the simulator: {exc}") from None
        config = config.model_copy(update=dict(
            robot=_with(config.robot, transport="tcp", host="127.0.0.1",
                        port=self.simulator.tcp_port),
            printer=_with(config.printer, url=self.simulator.printer_device, timeout_s=1.0),
            stock=_with(config.stock, **SIM_GEOMETRY)))
        log.info("simulator running", robot=f"127.0.0.1:{self.simulator.tcp_port}",
                 control=str(control), speed=opts.speed, instant=opts.instant)
        log.info("demo journal", path=str(config.journal.path), state=state_file)
        self.tasks.append(demo_task(self.orders))
        return config

    async def stop(self) -> None:
        if self.simulator is not None:
            await self.simulator.stop()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
