"""A pharmacy's day of orders and stock, generated from a seed (same seed, same day).

``day_plan(n, seed)`` builds ``n`` orders over the 1,400 drugs of ``dispenser/data/formulary.csv``
the way the diabetes programme sees them:

- every patient is an enrolled diabetes patient (E10/E11 on the prescription); most also
  take drugs for complications (hypertension I10, lipids E78, coronary I25, cerebrovascular
  I63, neuropathy G63.2), each such diagnosis on the prescription with its drugs;
- a drug's popularity follows a Zipf law inside its class (metformin is common, miglitol
  rare); quantities are mostly one pack, mean about 2.5 items per order;
- about 15 % are **follow-up** orders: the same patient, same address, other drugs, sent a
  little later, inside the merge window (they should share the first order's shipment);
- about 2 % are **duplicate dispensing** attempts: the same patient orders a drug again
  while the supply of the first order has not run out (a new prescription, so the hold is
  ``duplicate_dispensing``, not ``duplicate_prescription``);
- about 1 % carry a prescription older than 90 days (hold ``prescription_expired``);
- a few orders have a fridge line (insulin pen), confirmed by the packing desk by scan.

Stock: ``initial_packs`` covers a share of each drug's demand in batches of one slot;
``Restocker`` hands out further batches of a drug when the daemon reports it low or a
shipment waits for it. Packs carry serials unique over the whole day.

No name, phone or address here belongs to anyone: they are built from the patient number.

Size: two halves in one module. The day's plan, generated from a seed with no process
running (``day_plan``, ``DayPlan``, ``Restocker``, ``stock_for``, ``hospital_feed``), and the
people who act on a running stack with the plan's orders and ``Restocker`` (``Loader``,
``restocking``, ``packing_desk``, ``fault_desk``, ``pharmacist_review``, ``OrderSystem``).
They could be split into a plan module and a people module; not yet done, and the split
would move only names: ``bench/bench_day.py``, ``bench/api_flood.py`` and
``tests/e2e/test_robot_swap.py`` import from both halves.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError
from dispenser.testing import Sim, Stack, formulary_rows, list_all, scan, wait_for

# In order of popularity (a drug's strengths and makers follow its name).
DIABETES = (
    "metformin", "metformin extended-release", "acarbose", "gliclazide modified-release",
    "glimepiride", "sitagliptin", "dapagliflozin", "empagliflozin", "sitagliptin/metformin",
    "linagliptin", "gliclazide", "repaglinide", "pioglitazone", "vildagliptin", "glipizide",
    "saxagliptin", "alogliptin", "canagliflozin", "voglibose", "gliquidone", "nateglinide",
    "rosiglitazone", "miglitol",
)
# complication -> (ICD-10 code, share of patients, drug names)
COMPLICATIONS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "hypertension": ("I10", 0.60, (
        "amlodipine", "nifedipine controlled-release", "felodipine", "valsartan", "losartan",
        "irbesartan", "telmisartan", "candesartan", "enalapril", "benazepril", "perindopril",
        "hydrochlorothiazide", "indapamide", "metoprolol succinate", "metoprolol tartrate",
        "bisoprolol")),
    "lipids": ("E78.5", 0.50, (
        "atorvastatin", "rosuvastatin", "simvastatin", "pitavastatin", "ezetimibe",
        "fenofibrate", "atorvastatin/amlodipine")),
    "coronary": ("I25.1", 0.20, (
        "aspirin enteric-coated", "clopidogrel", "ticagrelor", "isosorbide mononitrate",
        "trimetazidine", "sacubitril/valsartan", "spironolactone", "furosemide")),
    "cerebrovascular": ("I63.9", 0.08, ("aspirin enteric-coated", "clopidogrel", "cilostazol",
                                        "beraprost sodium")),
    "neuropathy": ("G63.2", 0.15, ("epalrestat", "mecobalamin", "alpha-lipoic acid",
                                   "pregabalin", "duloxetine", "calcium dobesilate")),
}
FRIDGE = frozenset({"insulin glargine", "insulin aspart", "insulin degludec", "insulin detemir",
                    "liraglutide", "dulaglutide"})

_SURNAMES = ("Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu")
_GIVEN = ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Qiang", "Hua", "Ping", "Jun")
_STREETS = ("Nanjing Road", "Heping Road", "Binjiang Avenue", "Weijin Road", "Dagu Road",
            "Youyi Road", "Machang Road", "Jiefang Road")


class _Zipf:
    """Draw from a list with weight 1/rank^s."""

    def __init__(self, items: list[str], s: float = 1.0) -> None:
        self.items = items
        self.cum = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(len(items))))

    def draw(self, rng: random.Random) -> str:
        return self.items[bisect.bisect(self.cum, rng.random() * self.cum[-1])]


@dataclass
class DayPlan:
    seed: int
    today: date
    orders: list[dict[str, Any]]
    # order_id -> "first" | "followup" | "duplicate" | "old_rx"
    kinds: dict[str, str]
    # order_id of a follow-up -> the order it should merge with
    merge_with: dict[str, str]
    demand: Counter[str]
    initial_packs: list[dict[str, str]]
    restocker: Restocker

    def summary(self) -> dict[str, Any]:
        items = sum(len(o["items"]) for o in self.orders)
        return {"seed": self.seed, "orders": len(self.orders),
                "mean_items": round(items / max(1, len(self.orders)), 2),
                "packs_ordered": sum(self.demand.values()), "drugs": len(self.demand),
                "kinds": dict(Counter(self.kinds.values())),
                "fridge_lines": sum(1 for o in self.orders for it in o["items"]
                                    if it["drug_code"] in self.restocker.fridge),
                "initial_packs": len(self.initial_packs)}


@dataclass
class Restocker:
    """Hands out new batches of a drug, one slot's worth at a time, with fresh serials."""

    today: date
    seed: int = 0
    slot_capacity: int = 10
    fridge: frozenset[str] = frozenset()
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _batches: Counter[str] = field(default_factory=Counter)

    def batch(self, drug_code: str, packs: int | None = None) -> list[dict[str, str]]:
        n = self.slot_capacity if packs is None else min(packs, self.slot_capacity)
        self._batches[drug_code] += 1
        k = self._batches[drug_code]
        # Later batches expire later, so FEFO picks the first batches first.
        expiry = self.today + timedelta(days=200 + 20 * k + int(drug_code[-4:]) % 97)
        batch = f"L{drug_code[-5:]}{k:03d}"
        return [{"gtin": drug_code, "batch": batch, "expiry": expiry.isoformat(),
                 "serial": f"S{self.seed % 100000:05d}{next(self._serial):08d}"}
                for _ in range(n)]

    def manual_scan_pack(self, drug_code: str) -> dict[str, str]:
        """A fridge pack taken by hand at the packing desk."""
        expiry = self.today + timedelta(days=180)
        return {"gtin": drug_code, "batch": "F01", "expiry": expiry.isoformat(),
                "serial": f"M{self.seed % 100000:05d}{next(self._serial):08d}"}


def _patient(p: int) -> tuple[dict[str, Any], str]:
    name = f"{_SURNAMES[p % 10]} {_GIVEN[(p // 10) % 10]}"
    address = f"{p % 997 + 1} {_STREETS[p % len(_STREETS)]}, Building {p // 997 + 1}, Tianjin"
    return {"id": f"P{p:06d}", "name": name, "phone": f"+86 22 {5000000 + p % 5000000:07d}"}, \
        address


def day_plan(n: int, seed: int, *, today: date | None = None, mean_items: float = 2.5,
             followup: float = 0.15, duplicate: float = 0.02, old_rx: float = 0.01,
             fridge: float = 0.03, cover: float = 0.9,
             merge_gap: tuple[int, int] = (1, 20), patient_offset: int = 0) -> DayPlan:
    """``n`` orders in submission order. ``cover``: share of each drug's demand loaded
    before the day (the rest comes by restocking). ``merge_gap``: a follow-up is sent this
    many orders after its first order. ``patient_offset``: patient numbers start after it
    (a second plan for the same journal without duplicate patients)."""
    rng = random.Random(seed)
    today = today or datetime.now(UTC).date()
    rows = formulary_rows()
    robot_rows = [r for r in rows if r["fridge"] == "false" and r["manual"] == "false"]
    by_name: dict[str, list[str]] = {}
    for r in robot_rows:
        by_name.setdefault(r["name"], []).append(r["drug_code"])
    # Popularity: the class's names in table order, each name's variants after it.
    diab = _Zipf([c for name in DIABETES for c in by_name.get(name, [])], 0.9)
    comp = {k: _Zipf([c for name in names for c in by_name.get(name, [])], 0.9)
            for k, (_, _, names) in COMPLICATIONS.items()}
    fridge_codes = [r["drug_code"] for r in rows if r["name"] in FRIDGE and r["fridge"] == "true"]
    fridge_zipf = _Zipf(fridge_codes, 1.0)

    start = datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC)
    orders: list[dict[str, Any]] = []
    kinds: dict[str, str] = {}
    merge_with: dict[str, str] = {}
    pending: list[tuple[int, dict[str, Any]]] = []  # (send at index, order)
    # Patients seen, for follow-ups and duplicates: (patient number, first order)
    history: list[tuple[int, dict[str, Any]]] = []
    patient_no = itertools.count(patient_offset + 1)
    used: dict[int, set[str]] = {}  # patient -> drugs on order today

    def prescription(p: int, diagnoses: list[str], age_days: int, k: int) -> dict[str, Any]:
        issued = today - timedelta(days=age_days)
        return {"id": f"RX{p:06d}-{k}", "issued_on": issued.isoformat(),
                "institution": "Tianjin Diabetes Clinic", "prescriber": f"Dr {p % 37 + 1}",
                "diagnoses": diagnoses}

    def delivery(p: int, address: str) -> dict[str, Any]:
        hour = 8 + p % 10
        ws = start + timedelta(hours=hour)
        return {"address": address, "window_start": ws.isoformat(),
                "window_end": (ws + timedelta(hours=3)).isoformat()}

    def items_for(diagnoses: list[str], count: int, avoid: set[str]) -> list[dict[str, Any]]:
        chosen: list[str] = []
        comps = [k for k, (code, _, _) in COMPLICATIONS.items() if code in diagnoses]
        tries = 0
        while len(chosen) < count and tries < 50:
            tries += 1
            if not chosen or not comps or rng.random() < 0.3:
                code = diab.draw(rng)
            else:
                code = comp[rng.choice(comps)].draw(rng)
            if code not in avoid and code not in chosen:
                chosen.append(code)
        return [{"drug_code": c, "quantity": rng.choices((1, 2, 3), (75, 20, 5))[0],
                 "days_supply": 30} for c in chosen]

    def count_items(extra: float) -> int:
        # 1 + Poisson(mean - 1), capped; mean_items over the whole day.
        lam = max(0.0, extra)
        k, p, threshold = 0, 1.0, math.exp(-lam)
        while True:
            p *= rng.random()
            if p <= threshold:
                break
            k += 1
        return min(1 + k, 8)

    i = 0
    while len(orders) < n:
        due = [o for at, o in pending if at <= i]
        if due:
            pending[:] = [(at, o) for at, o in pending if at > i]
            for o in due:
                if len(orders) < n:
                    orders.append(o)
            i += 1
            continue
        i += 1
        roll = rng.random()
        oid = f"ORD-{seed % 1000:03d}-{len(orders) + len(pending) + 1:06d}"
        if roll < followup and history:
            # A follow-up: other drugs, same address, same prescription id space.
            p, first = history[rng.randrange(max(0, len(history) - 50), len(history))]
            patient, address = _patient(p)
            diagnoses = first["prescription"]["diagnoses"]
            items = items_for(diagnoses, rng.choice((1, 1, 2)), used[p])
            if not items:
                continue
            used[p].update(it["drug_code"] for it in items)
            o = {"order_id": oid, "patient": patient,
                 "prescription": prescription(p, diagnoses, 10, 2), "items": items,
                 "delivery": delivery(p, address)}
            kinds[oid] = "followup"
            merge_with[oid] = first["order_id"]
            pending.append((i + rng.randint(*merge_gap), o))
            continue
        if roll < followup + duplicate and history:
            p, first = history[rng.randrange(len(history))]
            patient, address = _patient(p)
            dup = rng.choice(first["items"])
            o = {"order_id": oid, "patient": patient,
                 "prescription": prescription(p, first["prescription"]["diagnoses"], 5, 9),
                 "items": [{"drug_code": dup["drug_code"], "quantity": 1, "days_supply": 30}],
                 "delivery": delivery(p, address)}
            kinds[oid] = "duplicate"
            pending.append((i + rng.randint(30, 300), o))
            continue
        p = next(patient_no)
        patient, address = _patient(p)
        diagnoses = ["E11.9" if rng.random() < 0.93 else "E10.9"]
        for code, share, _ in COMPLICATIONS.values():
            if rng.random() < share:
                diagnoses.append(code)
        # Follow-ups and duplicates carry 1-1.5 items; the first orders make up the mean.
        base_mean = (mean_items - followup * 1.33 - duplicate) / max(0.01, 1 - followup
                                                                     - duplicate)
        items = items_for(diagnoses, count_items(base_mean - 1), set())
        old = roll > 1 - old_rx
        if rng.random() < fridge:
            items.append({"drug_code": fridge_zipf.draw(rng), "quantity": 1, "days_supply": 30})
        o = {"order_id": oid, "patient": patient,
             "prescription": prescription(p, diagnoses, rng.randint(95, 200) if old
                                          else rng.randint(1, 80), 1),
             "items": items, "delivery": delivery(p, address)}
        kinds[oid] = "old_rx" if old else "first"
        if not old:
            history.append((p, o))
            used[p] = {it["drug_code"] for it in items}
        orders.append(o)

    sent = {o["order_id"] for o in orders}
    kinds = {k: v for k, v in kinds.items() if k in sent}
    merge_with = {k: v for k, v in merge_with.items() if k in sent}
    demand: Counter[str] = Counter()
    for o in orders:
        if kinds[o["order_id"]] in ("first", "followup"):
            for it in o["items"]:
                demand[it["drug_code"]] += it["quantity"]
    fridge_set = frozenset(fridge_codes)
    restocker = Restocker(today, seed, fridge=fridge_set)
    initial: list[dict[str, str]] = []
    for code, qty in sorted(demand.items()):
        if code in fridge_set:
            continue
        want = max(1, math.ceil(qty * cover))
        while want > 0:
            b = restocker.batch(code, want)
            initial += b
            want -= len(b)
    rng.shuffle(initial)
    # Loading goes drug by drug in real life too, but a shuffle spreads slots; keep the
    # batches together so each slot holds one batch.
    initial.sort(key=lambda p: (p["gtin"], p["batch"]))
    return DayPlan(seed, today, orders, kinds, merge_with, demand, initial, restocker)




# --------------------------------------------------------------------------- the people
# Refusals that pass: wrong_state (a fault, a restart), hardware (the robot could not be
# asked: scan again), internal error.
_PASSING = (-32006, -32009, -32603)
# The robot refused a pack and it still lies at the input point, in front of the others.
_BLOCKED = "refused_pack_at_input"


def _reason(exc: ApiError) -> str | None:
    return exc.data.get("reason") if isinstance(exc.data, dict) else None


class Loader:
    """Staff at the robot's input point: put packs there (``sim.put_input``) and scan each
    one (``stock.load``), strictly in the order they lie there. One loader at a time."""

    def __init__(self, client: ApiClient, sim: Sim, *, chunk: int = 500) -> None:
        self.client = client
        self.sim = sim
        self.chunk = chunk
        self.lock = asyncio.Lock()
        self.loaded = 0
        self.rescanned = 0
        self.refused: Counter[str] = Counter()
        # Packs the robot refused, taken off the input point (set aside, as staff do).
        self.taken_off: list[dict[str, Any]] = []

    async def take_off_refused(self) -> None:
        """The input point is blocked by a pack the robot refused (``machine.status``
        says so): take it off and set it aside."""
        st = await self.client.call("machine.status")
        blocked = st.get("input_blocked")
        if blocked is None:
            return
        taken = await self.sim.take_input(1)
        self.taken_off += taken
        self.refused[f"robot:{blocked.get('reason')}"] += 1

    async def load(self, packs: list[dict[str, str]]) -> int:
        """Queue the packs' loads (``wait`` false), pipelined a chunk at a time; the number
        the daemon took. When a load fails for a reason that passes (the robot did not get
        the STORE, the machine not ready), the pack is still first at the input point and
        every later load of the chunk was refused as ``input_mismatch``: staff scan again
        from that pack on, one at a time."""
        took = 0
        async with self.lock:
            for k in range(0, len(packs), self.chunk):
                part = packs[k:k + self.chunk]
                await self.sim.put_input(part)
                calls = [self.client.call("stock.load", {"scan": scan(p), "wait": False},
                                          timeout=600) for p in part]
                again: int | None = None
                for i, res in enumerate(await asyncio.gather(*calls, return_exceptions=True)):
                    if isinstance(res, ApiError):
                        if again is None and (int(res.code) in _PASSING
                                              or _reason(res) == _BLOCKED):
                            again = i
                        if again is None:
                            self.refused[str(_reason(res) or res.code)] += 1
                    elif isinstance(res, BaseException):
                        raise res
                    elif again is None:
                        took += 1
                    else:
                        # Taken after a failed one: the input point and the daemon may now
                        # disagree; the invariant at the end will say.
                        self.refused["taken_after_a_failed_load"] += 1
                if again is not None:
                    self.rescanned += len(part) - again
                    await self.take_off_refused()
                    took += await self._one_by_one(part[again:])
        self.loaded += took
        return took

    async def load_one_by_one(self, packs: list[dict[str, str]],
                              patience: float = 600) -> int:
        """Load packs one at a time; while the machine cannot load (a fault, a restart)
        wait and scan the same pack again, as staff would. For loading during faults."""
        async with self.lock:
            await self.sim.put_input(packs)
            took = await self._one_by_one(packs, patience)
        self.loaded += took
        return took

    async def _one_by_one(self, packs: list[dict[str, str]], patience: float = 600) -> int:
        """The packs lie at the input point in this order: scan each until it is taken."""
        took = 0
        for p in packs:
            deadline = time.monotonic() + patience
            while True:
                try:
                    await self.client.call("stock.load", {"scan": scan(p), "wait": False},
                                           timeout=60)
                    took += 1
                    break
                except ApiError as exc:
                    if _reason(exc) == _BLOCKED and time.monotonic() < deadline:
                        await self.take_off_refused()
                        continue
                    if int(exc.code) in _PASSING and time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
                        continue
                    self.refused[str(_reason(exc) or exc.code)] += 1
                    break
        return took

    async def wait_stored(self, timeout: float = 3600) -> None:
        """Until no pack is ``loading`` any more."""
        async def done() -> bool:
            page = await self.client.call("stock.list", {"state": "loading", "limit": 1})
            return not page["items"]
        await wait_for(done, timeout, interval=0.2, what="loads to be stored")


async def restocking(stack: Stack, loader: Loader, restocker: Restocker,
                     stop: asyncio.Event, *, interval: float = 0.5,
                     careful: bool = False) -> Counter[str]:
    """Staff refilling what runs low: on each ``low_stock`` event, for every shipment
    held ``stock_short`` and for every shipment being picked that is owed packs, one more
    batch of that drug. ``careful``: one pack at a time, waiting out faults (a fault
    campaign). Returns batches per reason."""
    done: Counter[str] = Counter()
    client = await stack.client("staff", keep=False)
    events = await stack.client("staff", keep=False)
    # Drugs wanted, each once, oldest first (drug -> why). A queue that took every
    # sighting grew faster than batches could be loaded while many shipments were held
    # (each listing every 2 s added them all again), and a drug that ran out late waited
    # behind thousands of stale entries: the day's load of seed 20261203 ended with
    # shipments held for a drug never restocked.
    wanted: dict[str, str] = {}
    more = asyncio.Event()
    recent: dict[str, float] = {}

    def want(code: str, why: str) -> None:
        if code not in wanted:
            wanted[code] = why
            more.set()

    async def listen() -> None:
        async for ev in events.subscribe(["stock"]):
            if ev.get("kind") == "low_stock" and ev.get("drug_code"):
                want(str(ev["drug_code"]), "low_stock")

    async def held() -> None:
        while not stop.is_set():
            page = await client.call("shipment.list", {"state": "held", "limit": 1000})
            for sh in page["items"]:
                for h in sh.get("hold_reasons", []):
                    if h.get("code") == "stock_short" and h.get("drug_code"):
                        want(str(h["drug_code"]), "stock_short")
            page = await client.call("shipment.list", {"state": "picking", "limit": 1000})
            for sh in page["items"]:
                for o in sh.get("owed", []):
                    want(str(o["drug_code"]), "owed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval * 4):
                    await stop.wait()

    tasks = [asyncio.create_task(listen()), asyncio.create_task(held())]
    try:
        while not stop.is_set():
            if not wanted:
                more.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await more.wait()
                continue
            code = next(iter(wanted))
            why = wanted.pop(code)
            now = time.monotonic()
            if code in restocker.fridge or now - recent.get(code, 0) < 2.0:
                continue
            recent[code] = now
            # A held shipment names what it is short of (it once could name a drug that
            # had come in since: docs/reliability.md, finding 8); a low-stock event or an
            # owed pack is looked at first, so a drug is not loaded again and again.
            if why != "stock_short":
                page = await client.call("stock.list", {"drug_code": code, "limit": 5})
                if len(page["items"]) >= 5:
                    done["skipped_in_stock"] += 1
                    continue
            if careful:
                await loader.load_one_by_one(restocker.batch(code))
            else:
                await loader.load(restocker.batch(code))
            done[why] += 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await events.close()
        await client.close()
    return done


async def packing_desk(client: ApiClient, restocker: Restocker, stop: asyncio.Event, *,
                       interval: float = 0.5) -> int:
    """The packing desk: scans the fridge packs of shipments (``shipment.confirm_manual``)."""
    confirmed = 0
    while not stop.is_set():
        # The tote reaches the desk in labelling (its robot packs picked); the scans may
        # come earlier, but watching only labelling keeps the desk from listing the whole
        # queue twice a second.
        for state in ("labelling",):
            after = None
            while True:
                params: dict[str, Any] = {"state": state, "limit": 1000}
                if after:
                    params["after"] = after
                page = await client.call("shipment.list", params)
                for sh in page["items"]:
                    for line in sh.get("manual_picks", []):
                        for _ in range(int(line["count"]) - int(line["confirmed"])):
                            p = restocker.manual_scan_pack(line["drug_code"])
                            try:
                                await client.call("shipment.confirm_manual",
                                                  {"shipment_id": sh["shipment_id"],
                                                   "scan": scan(p)})
                                confirmed += 1
                            except ApiError:
                                break  # the shipment moved on; look again next round
                after = page["next"]
                if after is None:
                    break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
    return confirmed


# Faults staff acknowledge without asking anyone, once their cause is gone: the robot's
# link came back, the robot lost its reference (the acknowledgement homes it). Any other
# fault stays for a technician, and the day does not finish: the figures say which.
PASSING_FAULTS = frozenset({"link_down", "not_homed"})


async def fault_desk(client: ApiClient, stop: asyncio.Event, *,
                     interval: float = 0.5) -> Counter[str]:
    """Staff at the machine: a fault of ``PASSING_FAULTS`` is acknowledged once the machine
    shows it (a refused acknowledgement, the cause still there, is tried again later).
    Returns the faults acknowledged, by kind."""
    acked: Counter[str] = Counter()
    while not stop.is_set():
        try:
            page = await client.call("fault.list", {"active": True})
            for f in page["items"]:
                if f["kind"] in PASSING_FAULTS:
                    with contextlib.suppress(ApiError):
                        await client.call("fault.ack", {"fault_id": f["fault_id"],
                                                        "note": "cause gone (staff)"})
                        acked[f["kind"]] += 1
        except (ConnectionError, OSError):
            pass
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
    return acked


CHECK_HOLDS = frozenset({"not_eligible", "prescription_expired", "duplicate_dispensing",
                         "duplicate_prescription", "quantity_limit", "delivery_window_passed",
                         "prescription_unregistered", "prescription_mismatch",
                         "institution_not_designated", "prescription_exhausted"})


async def pharmacist_review(client: ApiClient) -> Counter[str]:
    """The pharmacist rejects every order held by a dispensing check (the day's
    duplicates and old prescriptions); returns the hold codes seen."""
    seen: Counter[str] = Counter()
    held = await list_all(client, "order.list", {"state": "held"}, "order_id")
    for o in held:
        codes = {h["code"] for h in o.get("hold_reasons", [])}
        seen.update(codes)
        if codes & CHECK_HOLDS:
            with contextlib.suppress(ApiError):
                await client.call("order.reject", {"order_id": o["order_id"],
                                                   "reason": "check hold confirmed"})
    return seen


class OrderSystem:
    """The pharmacy's order system: sends orders one by one and, when the daemon does not
    answer (killed, restarting), connects again and sends the same order again: a safe
    retry, since the same ``order_id`` with the same content returns the existing order."""

    def __init__(self, stack: Stack, orders: list[dict[str, Any]]) -> None:
        self.stack = stack
        self.orders = orders
        self.acknowledged: dict[str, str] = {}  # order_id -> state in the reply
        self.retries = 0
        self.refused: Counter[str] = Counter()
        self._client: ApiClient | None = None

    async def _connected(self) -> ApiClient:
        while self._client is None or self._client.closed:
            try:
                self._client = await self.stack.client("order_system", keep=False)
            except (OSError, ConnectionError, TimeoutError, ApiError):
                await asyncio.sleep(0.05)
        return self._client

    async def submit(self, order: dict[str, Any]) -> None:
        while True:
            c = await self._connected()
            try:
                res = await c.call("order.submit", {"order": order}, timeout=30)
                self.acknowledged[order["order_id"]] = res["state"]
                return
            except ApiError as exc:
                if int(exc.code) in (-32603, -32009):
                    self.retries += 1
                    await asyncio.sleep(0.1)
                    continue
                self.refused[str(exc.code)] += 1
                self.acknowledged[order["order_id"]] = f"error {exc.code}"
                return
            except (ConnectionError, OSError, TimeoutError):
                self.retries += 1
                with contextlib.suppress(Exception):
                    await c.close()
                self._client = None
                await asyncio.sleep(0.05)

    async def run(self, rate: float) -> None:
        """Send every order, ``rate`` per second at most."""
        t0 = time.monotonic()
        for k, o in enumerate(self.orders):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.submit(o)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def stock_for(plan: DayPlan, margin: float = 1.3, extra: int = 2) -> list[dict[str, str]]:
    """Enough packs of every robot drug for the whole plan, with a margin (campaigns load
    everything up front and never restock)."""
    packs: list[dict[str, str]] = []
    for code, qty in sorted(plan.demand.items()):
        if code in plan.restocker.fridge:
            continue
        want = math.ceil(qty * margin) + extra
        while want > 0:
            b = plan.restocker.batch(code, want)
            packs += b
            want -= len(b)
    return packs


__all__ = ["COMPLICATIONS", "DIABETES", "PASSING_FAULTS", "DayPlan", "Loader", "OrderSystem",
           "Restocker", "day_plan", "fault_desk", "packing_desk", "pharmacist_review",
           "restocking", "stock_for"]



# ============================================================================ hospital feed
# Issue 10: what the programme's hospitals send beside the orders. Self-contained: a plan's
# orders in, the records and prescriptions a records feed registers before the day out.

# The designated institutions (``[[institutions]]``): the clinic the day's orders cite and a
# hospital whose pharmacy dispenses too.
FEED_INSTITUTIONS = {"TDC": "Tianjin Diabetes Clinic",
                     "TMUGH": "Tianjin Medical University General Hospital"}
NON_DESIGNATED = "HP-CLINIC-7"  # a clinic outside the programme


@dataclass
class HospitalFeed:
    records: list[dict[str, Any]]  # for records.import
    prescriptions: list[dict[str, Any]]  # for prescriptions.register
    # order id -> the hold its prescription or record should cause
    expected: dict[str, str]

    def summary(self) -> dict[str, Any]:
        return {"records": len(self.records), "prescriptions": len(self.prescriptions),
                "expected_holds": dict(Counter(self.expected.values()))}


def hospital_feed(orders: list[dict[str, Any]], seed: int, *, today: date | None = None,
                  bought: float = 0.05, unregistered: float = 0.01,
                  non_designated: float = 0.005, exhausted: float = 0.005) -> HospitalFeed:
    """For a day's orders: dispensing records of the hospital for a share ``bought`` of the
    patients (one of their drugs bought there last week, 30 days' supply), and the
    prescriptions the orders cite as the clinic issued them (packs summed per ATC code over
    the orders citing it), except a share ``unregistered``; a share ``non_designated``
    registered by a clinic outside the programme (its orders are changed to cite it); a
    share ``exhausted`` with one pack
    fewer than ordered on one item (orders of two packs or more)."""
    rng = random.Random(seed * 31 + 10)
    today = today or datetime.now(UTC).date()
    atc = {r["drug_code"]: r["atc"] for r in formulary_rows()}
    by_rx: dict[str, list[dict[str, Any]]] = {}
    for o in orders:
        by_rx.setdefault(o["prescription"]["id"], []).append(o)
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    expected: dict[str, str] = {}
    for o in orders:
        pid = o["patient"]["id"]
        if pid in seen:
            continue
        seen.add(pid)
        if rng.random() < bought:
            item = rng.choice(o["items"])
            records.append({
                "record_id": f"H{len(records) + 1:07d}",
                "source": {"code": "TMUGH", "name": FEED_INSTITUTIONS["TMUGH"]},
                "patient_id": pid, "dispensed_on": (today - timedelta(days=7)).isoformat(),
                "drug_code": item["drug_code"], "quantity": 1, "days_supply": 30})
            expected.setdefault(o["order_id"], "duplicate_dispensing")
    prescriptions: list[dict[str, Any]] = []
    for rx_id, cited in by_rx.items():
        roll = rng.random()
        if roll < unregistered:
            for o in cited:
                expected[o["order_id"]] = "prescription_unregistered"
            continue
        packs: Counter[str] = Counter()
        days: dict[str, int] = {}
        for o in cited:
            for it in o["items"]:
                code = atc[it["drug_code"]]
                packs[code] += it["quantity"]
                days[code] = max(days.get(code, 0), it["days_supply"])
        institution = "TDC"
        roll -= unregistered
        if roll < non_designated:
            institution = NON_DESIGNATED
            for o in cited:  # such orders cite that clinic
                o["prescription"]["institution"] = NON_DESIGNATED
                expected[o["order_id"]] = "institution_not_designated"
        elif roll - non_designated < exhausted:
            short = [c for c, n in packs.items() if n >= 2]
            if short:
                packs[short[0]] -= 1
                expected[cited[-1]["order_id"]] = "prescription_exhausted"
        first = cited[0]["prescription"]
        prescriptions.append({
            "id": rx_id, "institution": institution, "prescriber": first["prescriber"],
            "patient_id": cited[0]["patient"]["id"], "issued_on": first["issued_on"],
            "diagnoses": sorted({d for o in cited for d in o["prescription"]["diagnoses"]}),
            "items": [{"atc": c, "quantity": n, "days_supply": days[c]}
                      for c, n in sorted(packs.items())]})
    return HospitalFeed(records, prescriptions, expected)
