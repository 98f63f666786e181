"""Lists and records for people: one function per view of docs/api.md.

Lists are :class:`~dispenser.cli.sheet.Sheet` and records :class:`~dispenser.cli.sheet.Fields`:
they fit a terminal's width (ids and states never cut) and become plain aligned text in a
pipe or a file. Every value from the daemon is wrapped in :class:`rich.text.Text`, so a ``[``
in an order id or a message is shown as it is, never read as rich markup. Missing keys show
as ``-``: the CLI keeps working when the daemon adds or omits a field. List views never show
patient data (the API does not return it in lists either).

Size: a catalogue, one short function per view of docs/api.md (orders, shipments, packs,
tasks, discrepancies, faults, the machine's status, registers, self-test, stats), on top of
the cell and error helpers every view uses (``text``, ``state``, ``when``, ``error_lines``):
one place to check the rules above for all views at once. The patient's record is already
apart (``patient_view``). It could be split like ``dispenser/cli/commands/`` (orders and
shipments; stock, tasks and discrepancies; the machine and diagnostics) with the helpers in
a module of their own; not yet done: each feature so far added its views here, and the
command modules import them from this one name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.cli.causes import cause_text, held_causes
from dispenser.cli.sheet import Column, Fields, Sheet

__all__ = [
    "code_name",
    "discrepancies_table",
    "error_lines",
    "fault_table",
    "held_orders",
    "kv_table",
    "order_detail",
    "order_table",
    "pack_table",
    "page_hint",
    "registers_table",
    "selftest_table",
    "shipment_detail",
    "shipment_table",
    "stats_table",
    "status_view",
    "task_detail",
    "task_table",
    "text",
    "when",
]

DASH = "-"
_STATE_STYLE = {
    "ready": "green", "completed": "green", "in_stock": "green",
    "held": "yellow", "paused": "yellow", "maintenance": "yellow", "loading": "yellow",
    "fault": "bold red", "estop": "bold red", "failed": "red", "rejected": "red",
    "cancelled": "dim", "quarantined": "red", "refused": "red", "missing": "red",
}


def text(value: Any, style: str = "") -> Text:
    """A cell: the value as plain text (``-`` for None)."""
    if value is None or value == "":
        return Text(DASH, style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no", style=style)
    return Text(str(value), style=style)


def state(value: Any) -> Text:
    return text(value, _STATE_STYLE.get(str(value), ""))


def when(value: Any) -> Text:
    """An ISO 8601 time, shortened to seconds: ``2026-11-28 04:10:00Z``."""
    if not isinstance(value, str) or not value:
        return text(value)
    shown = value.replace("T", " ")
    for utc in ("+00:00", "Z"):
        if shown.endswith(utc):
            shown = shown[: -len(utc)]
            break
    else:
        return Text(shown)
    return Text(shown.split(".")[0] + "Z")


def code_name(code: Any) -> str:
    """``not_found`` for -32003 (or for "not_found"): the names docs/api.md uses."""
    if isinstance(code, str):
        return code
    try:
        return ErrorCode(int(code)).name.lower()
    except (TypeError, ValueError):
        return str(code)


def _without_listing(message: str, data: Any) -> str:
    """The message less the field errors it ends with, when ``data.errors`` lists them
    too: each is then shown once, on its own line (``invalid params: address: ...``)."""
    errors = data.get("errors") if isinstance(data, Mapping) else None
    if not isinstance(errors, list) or not errors:
        return message
    listing = "; ".join(f"{e.get('path', '?')}: {e.get('message', '')}"
                        for e in errors if isinstance(e, Mapping))
    return message.removesuffix(": " + listing) if listing else message


def error_lines(code: Any, message: str, data: Any) -> list[str]:
    """A refusal as lines a person can act on: the message, then every detail in data,
    each said once."""
    lines = [f"{_without_listing(message, data)} ({code_name(code)})"]
    if not isinstance(data, Mapping):
        if data is not None:
            lines.append(f"  {data}")
        return lines
    for key, value in data.items():
        if key in {"code", "message"}:
            continue
        if key == "errors" and isinstance(value, list):
            for error in value:
                if isinstance(error, Mapping):
                    lines.append(f"  {error.get('path', '?')}: {error.get('message', '')}")
                else:
                    lines.append(f"  {error}")
        elif key == "codes" and isinstance(value, list):
            lines.append(f"  unknown drug codes: {', '.join(map(str, value))}")
        elif isinstance(value, list):
            lines.append(f"  {key.replace('_', ' ')}: {', '.join(map(str, value))}")
        else:
            lines.append(f"  {key.replace('_', ' ')}: {value}")
    return lines


def api_error_lines(exc: ApiError) -> list[str]:
    return error_lines(exc.code, exc.message, exc.data)


def kv_table(rows: Iterable[tuple[str, Any]], title: str | None = None) -> Fields:
    return Fields([(key, value if isinstance(value, Text) else text(value))
                   for key, value in rows], title)


def page_hint(result: Mapping[str, Any], flag: str = "--after") -> Text | None:
    after = result.get("next")
    if after is None:
        return None
    return Text(f"more: repeat with {flag} {after}", style="dim")


def _items(result: Any) -> list[Mapping[str, Any]]:
    if isinstance(result, Mapping):
        items = result.get("items", [])
        return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
    return []


def _sheet(title: str | None, columns: Iterable[Column], result: Any = None,
           section: bool = False) -> Sheet:
    hint = page_hint(result) if isinstance(result, Mapping) else None
    return Sheet(title, list(columns), hint=hint, section=section)


def _holds(reasons: Any) -> Text:
    """The checks that hold an order, each once (two drugs short are one ``stock_short``)."""
    if not isinstance(reasons, list) or not reasons:
        return text(None)
    codes = [str(r.get("code", r)) if isinstance(r, Mapping) else str(r) for r in reasons]
    return Text(", ".join(dict.fromkeys(codes)), style="yellow")


def _list(values: Any) -> Text:
    return text(", ".join(map(str, values)) if isinstance(values, list) else values)


# -- orders

ORDER_COLUMNS = (
    Column("order"), Column("state", "state"), Column("patient", drop=5),
    Column("shipment", drop=2), Column("received", "time", drop=6),
    Column("lines", "short", drop=4, justify="right"),
    Column("packs", "short", drop=3, justify="right"), Column("holds", "list"),
)


def order_table(result: Any, title: str = "Orders") -> RenderableType:
    items = _items(result)
    if not items:
        return Text("no orders", style="dim")
    sheet = _sheet(title, ORDER_COLUMNS, result)
    for o in items:
        lines = o.get("items")
        rows = [i for i in lines if isinstance(i, Mapping)] if isinstance(lines, list) else None
        packs = sum(int(i.get("quantity", 0)) for i in rows) if rows is not None else None
        sheet.add_row(text(o.get("order_id")), state(o.get("state")), text(o.get("patient_id")),
                      text(o.get("shipment_id")), when(o.get("received_at")),
                      text(len(rows) if rows is not None else None), text(packs),
                      _holds(o.get("hold_reasons")))
    return sheet


def order_detail(o: Mapping[str, Any]) -> RenderableType:
    patient = o.get("patient") if isinstance(o.get("patient"), Mapping) else {}
    delivery = o.get("delivery") if isinstance(o.get("delivery"), Mapping) else {}
    rx = o.get("prescription") if isinstance(o.get("prescription"), Mapping) else {}
    assert isinstance(patient, Mapping) and isinstance(delivery, Mapping)
    assert isinstance(rx, Mapping)
    head = kv_table([
        ("order", text(o.get("order_id"))), ("state", state(o.get("state"))),
        ("priority", o.get("priority")), ("shipment", o.get("shipment_id")),
        ("received", when(o.get("received_at"))),
        ("patient", f"{patient.get('name') or DASH} ({o.get('patient_id') or DASH})"),
        ("phone", patient.get("phone")),
        ("prescription", f"{rx.get('id') or DASH}, {rx.get('prescriber') or DASH}, "
                         f"{rx.get('institution') or DASH}" if rx else None),
        ("address", delivery.get("address")),
        ("window", Text.assemble(when(delivery.get("window_start")), " - ",
                                 when(delivery.get("window_end"))) if delivery else None),
    ])
    parts: list[RenderableType] = [head]
    items = o.get("items")
    if isinstance(items, list) and items:
        sheet = _sheet("Lines", (Column("drug code"), Column("packs", "short", justify="right"),
                                 Column("days supply", "short", justify="right")),
                       section=True)
        for i in items:
            if isinstance(i, Mapping):
                sheet.add_row(text(i.get("drug_code")), text(i.get("quantity")),
                              text(i.get("days_supply")))
        parts.append(sheet)
    holds = o.get("hold_reasons")
    if isinstance(holds, list) and holds:
        sheet = _sheet("Held because", (Column("check", "state"), Column("drug code", drop=1),
                                        Column("detail", "text")), section=True)
        for h in holds:
            if isinstance(h, Mapping):
                detail = h.get("message") or h.get("detail")
                cause = cause_text(h.get("cause"))
                sheet.add_row(text(h.get("code"), "yellow"), text(h.get("drug_code")),
                              text(f"{detail} [{cause}]" if cause else detail))
        parts.append(sheet)
    return Group(*parts)


def held_orders(result: Any) -> RenderableType:
    """The held orders list, and under it what caused each duplicate or provenance hold
    (the supply or prescription), so a decision needs no second lookup."""
    table = order_table(result, "Held orders")
    why = held_causes(result)
    return table if why is None else Group(table, why)


# -- shipments


def _picks_done(s: Mapping[str, Any]) -> Text:
    robot = s.get("robot_picks")
    manual = s.get("manual_picks")
    total = s.get("item_count")
    picked = s.get("picked")
    if picked is None and isinstance(robot, list):
        picked = sum(int(p.get("picked", 0)) for p in robot if isinstance(p, Mapping))
    confirmed = sum(int(m.get("confirmed", 0)) for m in manual if isinstance(m, Mapping)) \
        if isinstance(manual, list) else 0
    if total is None:
        return text(None)
    return Text(f"{int(picked or 0) + confirmed}/{total}")


SHIPMENT_COLUMNS = (
    Column("shipment"), Column("state", "state"), Column("orders", "list"),
    Column("patient", drop=4), Column("output", "short", drop=2, justify="right"),
    Column("fridge", "short", drop=5), Column("packs", "short", drop=3, justify="right"),
    Column("created", "time", drop=6),
)


def shipment_table(result: Any, title: str = "Shipments") -> RenderableType:
    items = _items(result)
    if not items:
        return Text("no shipments", style="dim")
    sheet = _sheet(title, SHIPMENT_COLUMNS, result)
    for s in items:
        sheet.add_row(text(s.get("shipment_id")), state(s.get("state")),
                      _list(s.get("order_ids")), text(s.get("patient_id")),
                      text(s.get("output")), text(s.get("fridge")), _picks_done(s),
                      when(s.get("created_at")))
    return sheet


def shipment_detail(s: Mapping[str, Any]) -> RenderableType:
    patient = s.get("patient") if isinstance(s.get("patient"), Mapping) else {}
    delivery = s.get("delivery") if isinstance(s.get("delivery"), Mapping) else {}
    assert isinstance(patient, Mapping) and isinstance(delivery, Mapping)
    parts: list[RenderableType] = [kv_table([
        ("shipment", text(s.get("shipment_id"))), ("state", state(s.get("state"))),
        ("orders", _list(s.get("order_ids"))),
        ("patient", f"{patient.get('name') or DASH} ({s.get('patient_id') or DASH})"),
        ("phone", patient.get("phone")),
        ("address", delivery.get("address")),
        ("output", s.get("output")), ("fridge", s.get("fridge")),
        ("packs", _picks_done(s)), ("created", when(s.get("created_at"))),
        ("total", s.get("total")), ("self pay", s.get("self_pay")),
    ])]
    robot = s.get("robot_picks")
    if isinstance(robot, list) and robot:
        sheet = _sheet("Robot picks", (
            Column("drug code"), Column("slot", justify="right"),
            Column("packs", "short", justify="right"),
            Column("picked", "short", justify="right")), section=True)
        for p in robot:
            if isinstance(p, Mapping):
                sheet.add_row(text(p.get("drug_code")), text(p.get("slot")),
                              text(p.get("count")), text(p.get("picked")))
        parts.append(sheet)
    manual = s.get("manual_picks")
    if isinstance(manual, list) and manual:
        sheet = _sheet("Manual picks (scan each with confirm-manual)", (
            Column("drug code"), Column("packs", "short", justify="right"),
            Column("confirmed", "short", justify="right")), section=True)
        for m in manual:
            if isinstance(m, Mapping):
                done = m.get("confirmed") == m.get("count")
                sheet.add_row(text(m.get("drug_code")), text(m.get("count")),
                              text(m.get("confirmed"), "green" if done else "yellow"))
        parts.append(sheet)
    packs = [*(s.get("packs") or []), *(s.get("manual_packs") or [])]
    if packs:
        parts.append(pack_table({"items": packs}, title="Packs in the tote", section=True))
    return Group(*parts)


# -- stock

PACK_COLUMNS = (
    Column("pack", justify="right"), Column("drug code"), Column("batch", drop=1),
    Column("expiry", "time"), Column("serial", drop=3), Column("slot", drop=2, justify="right"),
    Column("state", "state"),
)


SHELF_COLUMN = Column("shelf", "state", drop=1)


def _shelf(p: Mapping[str, Any]) -> Text:
    """``expired`` or ``near_expiry`` for a pack in stock that serves no order, else ``-``."""
    if p.get("expired"):
        return Text("expired", style="bold red")
    if p.get("near_expiry"):
        return Text("near_expiry", style="yellow")
    return text(None)


def pack_table(result: Any, title: str = "Packs", section: bool = False,
               shelf: bool = False) -> RenderableType:
    """Packs; ``shelf`` adds a last column that flags packs near expiry or expired."""
    items = _items(result)
    if not items:
        return Text("no packs", style="dim")
    columns = (*PACK_COLUMNS, SHELF_COLUMN) if shelf else PACK_COLUMNS
    sheet = _sheet(title, columns, result, section=section)
    for p in items:
        cells = [text(p.get("pack_id")), text(p.get("drug_code")), text(p.get("batch")),
                 text(p.get("expiry")), text(p.get("serial")), text(p.get("slot")),
                 state(p.get("state"))]
        if shelf:
            cells.append(_shelf(p))
        sheet.add_row(*cells)
    return sheet


TASK_COLUMNS = (
    Column("task"), Column("state", "state"), Column("key", drop=3),
    Column("priority", "short", drop=4), Column("output", "short", justify="right"),
    Column("packs", "short", justify="right"), Column("short", "short", justify="right",
                                                       drop=2),
    Column("created", "time", drop=5),
)


def _task_packs(t: Mapping[str, Any]) -> Text:
    return Text(f"{t.get('picked', 0)}/{t.get('asked', 0)}")


def task_table(result: Any, title: str = "Output tasks") -> RenderableType:
    items = _items(result)
    if not items:
        return Text("no output tasks", style="dim")
    sheet = _sheet(title, TASK_COLUMNS, result)
    for t in items:
        sheet.add_row(text(t.get("task_id")), state(t.get("state")), text(t.get("key")),
                      text(t.get("priority")), text(t.get("output")), _task_packs(t),
                      text(t.get("short")), when(t.get("created_at")))
    return sheet


def task_detail(t: Mapping[str, Any]) -> RenderableType:
    request = t.get("request") if isinstance(t.get("request"), Mapping) else {}
    assert isinstance(request, Mapping)
    parts: list[RenderableType] = [kv_table([
        ("task", text(t.get("task_id"))), ("state", state(t.get("state"))),
        ("purpose", t.get("purpose")), ("key", t.get("key")), ("by", t.get("actor")),
        ("priority", t.get("priority")), ("output", t.get("output")),
        ("packs", _task_packs(t)), ("short", t.get("short")),
        ("created", when(t.get("created_at"))), ("finished", when(t.get("finished_at"))),
        ("reported", t.get("reported")),
    ])]
    lines = t.get("lines")
    if isinstance(lines, list) and lines:
        sheet = _sheet("Lines", (
            Column("asked for"), Column("drug code", drop=2),
            Column("packs", "short", justify="right"),
            Column("picked", "short", justify="right"),
            Column("to pick", "short", justify="right"),
            Column("short", "short", justify="right")), section=True)
        for ln in lines:
            if isinstance(ln, Mapping):
                reserved = sum(int(r.get("count", 0)) for r in ln.get("reserved") or []
                               if isinstance(r, Mapping))
                sheet.add_row(text(ln.get("ref")), text(ln.get("drug_code")),
                              text(ln.get("quantity")), text(len(ln.get("packs") or [])),
                              text(reserved), text(ln.get("short")))
        parts.append(sheet)
        packs = [p for ln in lines if isinstance(ln, Mapping) for p in ln.get("packs") or []]
        if packs:
            parts.append(pack_table({"items": packs}, title="Packs", section=True))
    return Group(*parts)


DISCREPANCY_COLUMNS = (
    Column("id", justify="right"), Column("at", "time", drop=2),
    Column("slot", justify="right"), Column("drug code"),
    Column("expected", "short", justify="right"), Column("found", "short", justify="right"),
    Column("shipment", drop=1),
)


def discrepancies_table(result: Any) -> RenderableType:
    items = _items(result)
    if not items:
        return Text("no discrepancies", style="dim")
    sheet = _sheet("Stock discrepancies", DISCREPANCY_COLUMNS, result)
    for d in items:
        sheet.add_row(text(d.get("discrepancy_id")), when(d.get("at")), text(d.get("slot")),
                      text(d.get("drug_code") or d.get("kind")), text(d.get("expected")),
                      text(d.get("found"), "red"), text(d.get("shipment_id")))
    return sheet


# -- machine and faults


def _context(value: Any) -> Text:
    if not isinstance(value, Mapping):
        return text(value)
    return Text(", ".join(f"{k}={v}" for k, v in value.items() if v is not None))


FAULT_COLUMNS = (
    Column("fault", justify="right"), Column("kind", "state"), Column("raised", "time", drop=2),
    Column("acked", "time"), Column("by", drop=4), Column("context", "list", drop=1),
    Column("note", "text", drop=3),
)


def fault_table(result: Any, title: str = "Faults") -> RenderableType:
    items = _items(result)
    if not items:
        return Text("no faults", style="dim")
    sheet = _sheet(title, FAULT_COLUMNS, result)
    for f in items:
        active = f.get("acked_at") is None
        sheet.add_row(text(f.get("fault_id")), text(f.get("kind"), "bold red" if active else ""),
                      when(f.get("raised_at")),
                      when(f.get("acked_at")) if not active else Text("open", style="bold red"),
                      text(f.get("acked_by")), _context(f.get("context")), text(f.get("note")))
    return sheet


def _counts(value: Any, held: Any = None) -> Text:
    if not isinstance(value, Mapping) or not value:
        return text(None)
    parts = []
    for key, count in value.items():
        part = f"{key} {count}"
        if key == "held" and isinstance(held, Mapping) and held:
            part += " (" + ", ".join(f"{k} {v}" for k, v in held.items()) + ")"
        parts.append(part)
    return Text(", ".join(parts))


def _stock_line(stock: Any) -> Text:
    """``in stock 20, near expiry 3 (expired 1), quarantined 2``; near expiry counts the
    expired packs too."""
    if not isinstance(stock, Mapping):
        return text(None)
    line = Text(f"in stock {stock.get('in_stock', DASH)}, ")
    near = Text(f"near expiry {stock.get('near_expiry', DASH)} "
                f"(expired {stock.get('expired', DASH)})")
    if stock.get("near_expiry"):
        near.stylize("bold red" if stock.get("expired") else "yellow")
    line.append_text(near)
    line.append(f", quarantined {stock.get('quarantined', DASH)}")
    return line


def _fault_line(fault: Any) -> Text:
    if not isinstance(fault, Mapping):
        return Text("none", style="green")
    return Text.assemble(Text(f"#{fault.get('fault_id')} {fault.get('kind')}", style="bold red"),
                         " ", _context(fault.get("context")), " since ",
                         when(fault.get("raised_at")))


def _machine_line(s: Mapping[str, Any]) -> Text:
    line = state(s.get("state"))
    pause = s.get("pause")
    if s.get("state") == "paused" and isinstance(pause, Mapping):
        reason = pause.get("reason") or "no reason given"
        line.append(f": {reason} (by {pause.get('by') or DASH} since ")
        line.append_text(when(pause.get("at")))
        line.append(")")
    return line


def _robot_line(robot: Any) -> Text:
    if not isinstance(robot, Mapping):
        return text(None)
    link = robot.get("link")
    parts = [Text(f"link {link}", style="green" if link == "up" else "bold red")]
    if robot.get("machine_state") is not None:
        parts.append(Text(f"  {robot['machine_state']}"))
    if robot.get("queue_depth") is not None:
        parts.append(Text(f"  queue {robot['queue_depth']}/{robot.get('queue_capacity', '?')}"))
    if robot.get("door_open"):
        parts.append(Text("  door open", style="bold red"))
    if robot.get("homed") is False:
        parts.append(Text("  not homed", style="yellow"))
    full = robot.get("output_full")
    if isinstance(full, list) and full:
        parts.append(Text(f"  output full: {', '.join(map(str, full))}", style="yellow"))
    return Text.assemble(*parts)


def _printer_line(printer: Any) -> Text:
    if not isinstance(printer, Mapping):
        return text(None)
    reasons = printer.get("reasons") or []
    waiting = printer.get("waiting") or []
    ready = printer.get("ready", not reasons)
    line = Text("ready" if ready else "not ready: " + ", ".join(map(str, reasons)),
                style="green" if ready else "bold red")
    if waiting:
        line.append(f"  waiting: {len(waiting) if isinstance(waiting, list) else waiting}")
    return line


def _outputs_line(outputs: Any) -> Text:
    if not isinstance(outputs, list) or not outputs:
        return text(None)
    return Text("  ".join(
        f"{o.get('output')}:{o.get('shipment_id') or o.get('task_id') or 'free'}"
        for o in outputs if isinstance(o, Mapping)))


def _wwks2_line(w: Mapping[str, Any]) -> Text:
    clients = [c for c in w.get("clients") or [] if isinstance(c, Mapping)]
    who = ", ".join(f"{c.get('subscriber_id')}@{c.get('peer')}" for c in clients)
    line = Text(f"{w.get('address')}  {len(clients)} client{'s' if len(clients) != 1 else ''}"
                + (f" ({who})" if who else ""))
    line.append(f"  messages {w.get('messages_in', 0)} in / {w.get('messages_out', 0)} out")
    unprocessed = w.get("unprocessed") or 0
    if unprocessed:
        line.append(f"  {unprocessed} unprocessed", style="yellow")
    return line


def status_view(s: Mapping[str, Any]) -> Fields:
    rows: list[tuple[str, Any]] = [
        ("machine", _machine_line(s)),
        ("fault", _fault_line(s.get("fault"))),
        ("robot", _robot_line(s.get("robot"))),
        ("printer", _printer_line(s.get("printer"))),
        ("outputs", _outputs_line(s.get("outputs"))),
        ("shipments", _counts(s.get("shipments"))),
        ("orders", _counts(s.get("orders"), s.get("held_orders"))),
        ("stock", _stock_line(s.get("stock"))),
    ]
    if s.get("tasks"):
        rows.append(("tasks", _counts(s.get("tasks"))))
    wwks2 = s.get("wwks2")
    if isinstance(wwks2, Mapping):
        rows.append(("wwks2", _wwks2_line(wwks2)))
    if s.get("loads_waiting"):
        rows.append(("loads waiting", s.get("loads_waiting")))
    adoption = s.get("robot_adoption")
    if isinstance(adoption, Mapping):
        if adoption.get("state") == "waiting":
            rows.append(("robot adoption", Text(
                "another robot answers than the journal's: a technician adopts it in "
                "maintenance mode (dispenserctl robot adopt)", style="bold red")))
        else:
            slots = adoption.get("slots_to_count") or []
            counted = adoption.get("counted") or []
            rows.append(("robot adoption", Text(
                f"counting the slots the old robot may have changed: {len(counted)} of "
                f"{len(slots)} counted; nothing is picked until they are", style="yellow")))
    blocked = s.get("input_blocked")
    if isinstance(blocked, Mapping):
        rows.append(("input point", Text(
            f"take the pack off the input point: serial {blocked.get('serial') or DASH}, "
            f"batch {blocked.get('batch') or DASH} ({blocked.get('reason') or 'refused'})",
            style="bold red")))
    journal = s.get("journal")
    if isinstance(journal, Mapping) and not journal.get("writable", True):
        problem = journal.get("problem")
        message = problem.get("message") if isinstance(problem, Mapping) else None
        rows.append(("journal", Text(f"NOT WRITABLE: {message or 'unknown cause'}",
                                     style="bold red")))
    return kv_table(rows)


# -- diagnostics


def registers_table(result: Mapping[str, Any]) -> Sheet:
    base = int(result.get("address", 0))
    sheet = _sheet("Holding registers", (Column("address", justify="right"),
                                         Column("value", "short", justify="right"),
                                         Column("hex", "short", justify="right")))
    for offset, value in enumerate(result.get("values") or []):
        sheet.add_row(Text(str(base + offset)), Text(str(value)), Text(f"0x{int(value):04X}"))
    return sheet


def selftest_table(result: Mapping[str, Any]) -> RenderableType:
    sheet = _sheet("Self-test", (Column("step"), Column("ok", "state"),
                                 Column("detail", "text")))
    for step in result.get("steps") or []:
        if isinstance(step, Mapping):
            ok = bool(step.get("ok"))
            sheet.add_row(text(step.get("step")), Text("ok" if ok else "FAILED",
                                                       style="green" if ok else "bold red"),
                          text(step.get("detail")))
    verdict = Text("self-test passed", style="green") if result.get("ok") else \
        Text("self-test FAILED", style="bold red")
    return Group(sheet, verdict)


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def stats_table(result: Mapping[str, Any]) -> Fields:
    return kv_table(_flatten("", result))
