"""The ledger invariant: the journal, as the API reports it, against the simulator's
ledger, which is the physical truth, pack by pack.

- every order is in a final state (completed, cancelled, rejected, failed), if asked;
- every pack the journal knows is where the journal says: ``in_stock``/``quarantined`` in
  that slot, ``picked`` in the tote at its shipment's (or output task's) output,
  ``dispensed`` or ``disposed`` in a handed-on tote, ``dropped`` in the ledger's
  ``dropped``, ``missing`` out of storage (``jammed``, ``removed``, ``dropped``),
  ``loading``/``refused`` at the input point or out of storage (``taken_off`` the input
  point by a person);
- no pack is in two places and no serial was dispensed twice;
- every handed-on tote holds packs of one shipment or one output task only, and exactly
  its packs: a destruction tote (the expiry sweep) holds only ``disposed`` packs of its
  task, none of them dispensed to anyone, and a ``disposed`` pack is a destruction task's;
- the packs in the slots are exactly the journal's stock (nothing in storage unknown to it);
- every completed shipment's label and packing slip came out of the printer.

End-to-end tests, campaigns and benchmarks all check this one invariant
(``check_invariant``).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from dispenser.api.client import ApiClient
from dispenser.testing.data import formulary_rows, pack_key
from dispenser.testing.sim import Sim
from dispenser.testing.waiting import list_all

__all__ = [
    "ORDER_FINAL",
    "SHIPMENT_FINAL",
    "InvariantReport",
    "InvariantViolation",
    "check_invariant",
    "dispensed",
]

ORDER_FINAL = frozenset({"completed", "cancelled", "rejected", "failed"})
SHIPMENT_FINAL = frozenset({"completed", "cancelled", "failed"})


class InvariantViolation(AssertionError):
    """The journal and the physical ledger disagree; ``report.problems`` says where."""

    def __init__(self, report: InvariantReport) -> None:
        self.report = report
        shown = "\n  ".join(report.problems[:30])
        more = len(report.problems) - 30
        super().__init__(f"{len(report.problems)} invariant problem(s):\n  {shown}"
                         + (f"\n  ... and {more} more" if more > 0 else ""))


@dataclass
class InvariantReport:
    problems: list[str] = field(default_factory=list)
    orders: Counter[str] = field(default_factory=Counter)
    shipments: Counter[str] = field(default_factory=Counter)
    packs: Counter[str] = field(default_factory=Counter)
    released_totes: int = 0
    packs_dispensed: int = 0
    packs_disposed: int = 0  # handed on in destruction totes (the expiry sweep)
    # Consequences of packs vanishing unseen (sim.inject slot_short / slot_empty), which the
    # controller cannot know until it picks the slot empty or counts it: "substituted" (the
    # robot picked the next pack of the same batch, the journal names the vanished one),
    # "vanished_in_stock" / "vanished_quarantined" (the journal still has it in the slot).
    known: Counter[str] = field(default_factory=Counter)
    # Printed labels per kind: shipments with two or more copies (a reprint after a crash
    # between printing and journaling it is allowed: printing is at least once).
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": len(self.problems), "orders": dict(self.orders),
                "shipments": dict(self.shipments), "packs": dict(self.packs),
                "released_totes": self.released_totes,
                "packs_dispensed": self.packs_dispensed,
                "packs_disposed": self.packs_disposed, "labels": self.labels,
                "known_consequences_of_vanished_packs": dict(self.known)}


async def check_invariant(client: ApiClient, sim: Sim, *, require_final: bool = True,
                          raise_on_problem: bool = True) -> InvariantReport:
    """Compare journal and ledger pack by pack (see the module docstring); raises
    ``InvariantViolation`` with every problem (unless ``raise_on_problem`` is false)."""
    report = await _check(client, sim, require_final)
    if report.problems and raise_on_problem:
        raise InvariantViolation(report)
    return report


async def _check(c: ApiClient, sim: Sim, require_final: bool) -> InvariantReport:
    r = InvariantReport()
    bad = r.problems.append

    orders = await list_all(c, "order.list", {}, "order_id")
    r.orders.update(o["state"] for o in orders)
    if require_final:
        for o in orders:
            if o["state"] not in ORDER_FINAL:
                bad(f"order {o['order_id']} is {o['state']}, not final")
    shipments = await list_all(c, "shipment.list", {}, "shipment_id")
    r.shipments.update(s["state"] for s in shipments)
    if require_final:
        for s in shipments:
            if s["state"] not in SHIPMENT_FINAL:
                bad(f"shipment {s['shipment_id']} is {s['state']}, not final")
    packs = await list_all(c, "stock.list", {"state": None}, "pack_id")
    r.packs.update(p["state"] for p in packs)
    tasks = await list_all(c, "task.list", {}, "task_id")
    destruction = {t["task_id"] for t in tasks if t["purpose"] == "destruction"}
    ledger = await sim.ledger()
    robot_drugs = {row["drug_code"] for row in formulary_rows()
                   if row["fridge"] == "false" and row["manual"] == "false"}

    # Where the ledger has each serial (a serial is unique per pack in these campaigns).
    where: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for slot, ps in ledger["slots"].items():
        for p in ps:
            where[p["serial"]].append(("slot", int(slot)))
    for p in ledger["input"]:
        where[p["serial"]].append(("input", None))
    for out, tote in ledger["outputs"].items():
        for p in tote["packs"]:
            where[p["serial"]].append(("output", (int(out), tote["tote"])))
    for t in ledger["totes"]:
        for p in t["packs"]:
            where[p["serial"]].append(("released", t["tote"]))
    for kind in ("dropped", "jammed", "removed", "taken_off"):
        for p in ledger.get(kind, []):
            where[p["serial"]].append((kind, None))
    for serial, places in where.items():
        if len(places) > 1:
            bad(f"pack {serial} is in {len(places)} places at once: {places}")

    by_serial_journal: dict[str, dict[str, Any]] = {}
    # By owner: a shipment's id, or an output task's (``_owner``).
    tote_of_shipment: dict[str, set[Any]] = defaultdict(set)
    output_of_shipment: dict[str, set[Any]] = defaultdict(set)
    # Packs that vanished unseen (slot_short / slot_empty): the robot picks by position,
    # not by serial, so from then on the journal names the vanished pack where the next one
    # of the same batch went. For those batches compare counts per place, not serials.
    removed = {p["serial"] for p in ledger["removed"]}
    # The simulator's packs carry the GTIN printed on them (docs/simulator.md), the
    # journal's the drug code: the same 14 digits.
    removed_batches = {(p["gtin"], p["batch"]) for p in ledger["removed"]}
    excused: set[str] = set()
    if removed_batches:
        _check_batches_by_count(r, packs, ledger, where, removed_batches, removed)
        excused = {q["serial"] for q in packs
                   if (q["drug_code"], q["batch"]) in removed_batches}
        excused |= {p["serial"] for place in _physical_packs(ledger)
                    for p in place if (p["gtin"], p["batch"]) in removed_batches}
    stands_in: dict[str, str] = {}

    for p in packs:
        serial = p["serial"]
        if serial in excused:
            by_serial_journal.setdefault(serial, p)
            continue
        if serial in by_serial_journal:
            prev = by_serial_journal[serial]
            if prev["state"] not in ("refused",) and p["state"] not in ("refused",):
                bad(f"serial {serial} recorded as two live packs: {prev['pack_id']} "
                    f"({prev['state']}) and {p['pack_id']} ({p['state']})")
        if serial not in by_serial_journal or p["state"] not in ("refused", "loading"):
            by_serial_journal[serial] = p
        places = where.get(stands_in.get(serial, serial), [])
        kinds = {k for k, _ in places}
        state = p["state"]
        if p["drug_code"] not in robot_drugs and p["slot"] is None:
            # A fridge or manual pack scanned at the packing desk: never in the robot.
            if places:
                bad(f"manual pack {p['pack_id']} ({serial}) is in the robot: {places}")
            r.packs["manual"] += 1
            continue
        if state in ("in_stock", "quarantined"):
            if p["slot"] is None:
                if state == "in_stock":
                    bad(f"pack {p['pack_id']} in_stock without a slot")
            elif ("slot", p["slot"]) not in places:
                bad(f"pack {p['pack_id']} ({serial}) {state} in slot {p['slot']} per journal, "
                    f"ledger has it at {places or 'nowhere'}")
        elif state == "picked":
            if kinds != {"output"}:
                bad(f"pack {p['pack_id']} ({serial}) picked ({_owner(p)}) "
                    f"but the ledger has it at {places or 'nowhere'}")
            else:
                output_of_shipment[_owner(p)].add(places[0][1])
        elif state in ("dispensed", "disposed"):
            for_destruction = p["task_id"] is not None and p["task_id"] in destruction
            if state == "dispensed" and for_destruction:
                bad(f"pack {p['pack_id']} ({serial}) of destruction task {p['task_id']} "
                    "dispensed, not disposed")
            if state == "disposed" and (not for_destruction or p["shipment_id"] is not None):
                bad(f"pack {p['pack_id']} ({serial}) disposed but not a destruction task's: "
                    f"task {p['task_id']}, shipment {p['shipment_id']}")
            if kinds != {"released"}:
                bad(f"pack {p['pack_id']} ({serial}) {state} ({_owner(p)}) "
                    f"but the ledger has it at {places or 'nowhere'}")
            else:
                tote_of_shipment[_owner(p)].add(places[0][1])
                if state == "dispensed":
                    r.packs_dispensed += 1
                else:
                    r.packs_disposed += 1
        elif state == "dropped":
            if kinds != {"dropped"}:
                bad(f"pack {p['pack_id']} ({serial}) dropped per journal, ledger: {places}")
        elif state == "missing":
            if not kinds or not kinds <= {"jammed", "removed", "dropped"}:
                bad(f"pack {p['pack_id']} ({serial}) missing per journal, ledger: "
                    f"{places or 'nowhere'}")
        elif state in ("loading", "refused"):
            if kinds & {"slot", "output", "released"} and not _stored_again(
                    serial, packs, p):
                bad(f"pack {p['pack_id']} ({serial}) {state} per journal, ledger: {places}")
        else:
            bad(f"pack {p['pack_id']} in unknown state {state}")

    # Nothing in storage, at the outputs or handed on that the journal does not hold there.
    journal_live = by_serial_journal
    for serial, places in where.items():
        if serial in excused:
            continue
        for kind, loc in places:
            jp = journal_live.get(serial)
            if kind == "slot" and (jp is None or jp["state"] not in ("in_stock", "quarantined")
                                   or jp["slot"] != loc):
                bad(f"slot {loc} holds {serial}, journal: {_desc(jp)}")
            elif kind == "output" and (jp is None or jp["state"] != "picked"):
                bad(f"tote at output {loc[0]} holds {serial}, journal: {_desc(jp)}")
            elif kind == "released" and (jp is None
                                         or jp["state"] not in ("dispensed", "disposed")):
                bad(f"released tote {loc} holds {serial}, journal: {_desc(jp)}")

    # One tote per shipment (or output task), one shipment per tote, and the same packs.
    shipment_of_tote: dict[Any, set[str]] = defaultdict(set)
    for sid, totes in tote_of_shipment.items():
        if len(totes) > 1:
            bad(f"{sid}'s packs are in {len(totes)} released totes: {sorted(totes)}")
        for t in totes:
            shipment_of_tote[t].add(sid)
    for sid, outs in output_of_shipment.items():
        for o in outs:
            shipment_of_tote[("output", o)].add(sid)
    for t, sids in shipment_of_tote.items():
        if len(sids) > 1:
            bad(f"tote {t} holds packs of {len(sids)} shipments or tasks: {sorted(sids)}")
    r.released_totes = sum(1 for t in ledger["totes"] if t["packs"])

    # A completed shipment with robot items has its packs handed on, and nothing else.
    ship_state = {s["shipment_id"]: s for s in shipments}
    for sid in tote_of_shipment:
        sh = ship_state.get(sid.removeprefix("shipment "))
        if sh is not None and sh["state"] not in SHIPMENT_FINAL | {"labelling"}:
            bad(f"{sid} is {sh['state']} but its tote was handed on")
    counted = {p["shipment_id"] for p in packs if p["serial"] in excused}
    for s in shipments:
        if (s["state"] == "completed" and s["picked"]
                and f"shipment {s['shipment_id']}" not in tote_of_shipment
                and s["shipment_id"] not in counted):
            bad(f"shipment {s['shipment_id']} completed with {s['picked']} packs picked but "
                "no released tote holds them")

    # A destruction task ended with packs in its tote: they were handed on, all of them.
    for t in tasks:
        if t["task_id"] in destruction and t["state"] in ("completed", "incomplete",
                                                           "aborted") and t["picked"]:
            owner = f"task {t['task_id']}"
            if owner not in tote_of_shipment:
                bad(f"destruction task {t['task_id']} ended with {t['picked']} packs but "
                    "no released tote holds them")
    serials = [p["serial"] for t in ledger["totes"] for p in t["packs"]]
    dup = [s for s, n in Counter(serials).items() if n > 1]
    if dup:
        bad(f"serials handed on twice: {dup[:10]}")

    # Labels: every completed shipment's shipping label and packing slip came out of the
    # printer (not cancelled); copies are counted.
    printed: Counter[tuple[str, str]] = Counter()
    for label in ledger.get("labels", []):
        if not label.get("printed") or label.get("cancelled"):
            continue
        m = _SHIPMENT_ID.search(label["zpl"])
        if m:
            kind = "slip" if "PACKING SLIP" in label["zpl"] else "label"
            printed[(m.group(0), kind)] += 1
    completed = [s["shipment_id"] for s in shipments if s["state"] == "completed"]
    for sid in completed:
        for kind in ("label", "slip"):
            if printed[(sid, kind)] == 0:
                bad(f"shipment {sid} completed but its {kind} never came out of the printer")
    r.labels = {"printed": sum(printed.values()),
                "shipments_with_copies": len({sid for (sid, _), n in printed.items() if n > 1})}
    return r


_SHIPMENT_ID = re.compile(r"SH-[0-9]{8}")


def _owner(p: dict[str, Any]) -> str:
    """Whose tote a picked pack is in: its shipment's, else its output task's."""
    if p["shipment_id"] is not None:
        return f"shipment {p['shipment_id']}"
    return f"task {p['task_id']}"


def _physical_packs(ledger: dict[str, Any]) -> list[list[dict[str, Any]]]:
    places = [*ledger["slots"].values(), ledger["input"]]
    places += [t["packs"] for t in ledger["outputs"].values()]
    places += [t["packs"] for t in ledger["totes"]]
    return places


def _check_batches_by_count(r: InvariantReport, packs: list[dict[str, Any]],
                            ledger: dict[str, Any], where: dict[str, list[tuple[str, Any]]],
                            batches: set[tuple[str, str]], removed: set[str]) -> None:
    """For batches that lost packs unseen: per slot, the journal holds at least what is
    physically there and at most that plus what vanished; per shipment, the tote holds as
    many packs of the batch as the journal gave it; in total nothing extra went out."""
    bad = r.problems.append
    # The tote of each shipment (or output task), from its packs of other batches.
    tote_of: dict[str, Any] = {}
    for p in packs:
        if (p["drug_code"], p["batch"]) in batches or (p["shipment_id"] is None
                                                   and p["task_id"] is None):
            continue
        for kind, loc in where.get(p["serial"], []):
            if kind in ("released", "output"):
                tote_of[_owner(p)] = (kind, loc)
    for drug_code, batch in sorted(batches):
        mine = [p for p in packs if p["drug_code"] == drug_code and p["batch"] == batch]
        vanished = sum(1 for p in ledger["removed"]
                       if p["gtin"] == drug_code and p["batch"] == batch)
        j_slot = Counter(p["slot"] for p in mine if p["state"] in ("in_stock", "quarantined"))
        phys_slot = Counter({int(s): sum(1 for p in ps
                                         if (p["gtin"], p["batch"]) == (drug_code, batch))
                             for s, ps in ledger["slots"].items()})
        for slot in set(j_slot) | {s for s, n in phys_slot.items() if n}:
            j, ph = j_slot.get(slot, 0), phys_slot.get(slot, 0)
            if ph > j or j - ph > vanished:
                bad(f"batch {drug_code}/{batch}: slot {slot} holds {ph} packs, journal {j} "
                    f"({vanished} vanished unseen)")
            elif j > ph:
                r.known["vanished_still_in_journal_stock"] += j - ph
        j_ship = Counter(_owner(p) for p in mine
                         if p["state"] in ("dispensed", "disposed", "picked"))
        phys_tote: Counter[Any] = Counter()
        for kind, key in (("released", "totes"), ("output", "outputs")):
            places = (ledger[key] if kind == "released" else
                      [{"tote": (int(o), t["tote"]), "packs": t["packs"]}
                       for o, t in ledger[key].items()])
            for t in places:
                n = sum(1 for p in t["packs"] if (p["gtin"], p["batch"]) == (drug_code, batch))
                if n:
                    phys_tote[(kind, t["tote"])] += n
        unmapped = 0
        for sid, n in j_ship.items():
            tote = tote_of.get(sid)
            if tote is None:
                unmapped += n
            elif phys_tote.get(tote, 0) != n:
                bad(f"batch {drug_code}/{batch}: {sid} got {n} per journal, its tote "
                    f"{tote} holds {phys_tote.get(tote, 0)}")
        known_totes = {tote_of[s] for s in j_ship if s in tote_of}
        others = sum(n for t, n in phys_tote.items() if t not in known_totes)
        if others != unmapped:
            bad(f"batch {drug_code}/{batch}: {others} packs in totes of shipments the journal "
                f"does not give this batch to (expected {unmapped})")
        if any(p["serial"] in removed and p["state"] in ("dispensed", "picked") for p in mine):
            r.known["journal_names_vanished_pack_as_sent"] += sum(
                1 for p in mine if p["serial"] in removed and p["state"] in ("dispensed",
                                                                               "picked"))


def _stored_again(serial: str, packs: list[dict[str, Any]], p: dict[str, Any]) -> bool:
    """A refused scan of a serial that another (later) pack record holds in storage."""
    return any(q["serial"] == serial and q["pack_id"] != p["pack_id"]
               and q["state"] not in ("loading", "refused") for q in packs)


def _desc(p: dict[str, Any] | None) -> str:
    if p is None:
        return "unknown pack"
    return f"pack {p['pack_id']} {p['state']} slot={p['slot']} shipment={p['shipment_id']}"


async def dispensed(client: ApiClient) -> dict[str, list[tuple[str, str, str, str]]]:
    """The robot-picked packs of every completed shipment, as the journal records them
    (drug, batch, expiry, serial), by shipment."""
    out: dict[str, list[tuple[str, str, str, str]]] = {}
    for sh in await list_all(client, "shipment.list", {"state": "completed"}):
        if sh["picked"]:
            full = await client.call("shipment.get", {"shipment_id": sh["shipment_id"]})
            out[sh["shipment_id"]] = [pack_key(p) for p in full["packs"]]
    return out
