"""``top``: a live view of the machine, refreshed every second until Ctrl-C.

One frame is machine.status, the shipments being picked or labelled, the open faults and a
picks-per-hour rate. Parts the caller's role may not read (fault.list needs staff, the pick
counters of diag.stats need technician) are shown as such, not as an error.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.text import Text

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.cli.args import seconds
from dispenser.cli.context import Context, Exit
from dispenser.cli.render import fault_table, shipment_table, status_view
from dispenser.cli.sheet import Sheet, plain_output

__all__ = ["PickRate", "register"]

CURRENT = ("picking", "labelling")
_NOT_ALLOWED = {ErrorCode.FORBIDDEN, ErrorCode.UNAUTHENTICATED}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("top", parents=[common],
                       help="live view: machine, robot queue, shipments, picks/hour, faults")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=seconds(0.1, 60), default=1.0, metavar="SECONDS",
                   help="refresh period (default 1)")
    p.set_defaults(func=top)


@dataclass
class PickRate:
    """Packs picked per hour: over the samples of about the last ``window_s`` (the oldest
    kept is the newest one at least that old) once they span 10 s; before that since the
    daemon started (packs picked / uptime, the uptime given with the first sample)."""

    window_s: float = 300.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    started: float | None = None  # when the daemon started, on the samples' clock

    def add(self, now: float, picked: int, uptime_s: float | None) -> tuple[float | None, str]:
        if not self.samples and uptime_s:
            self.started = now - uptime_s
        self.samples.append((now, picked))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()
        first_t, first_n = self.samples[0]
        span = now - first_t
        if span >= 10:
            label = f"last {span:.0f} s" if span < 120 else f"last {span / 60:.0f} min"
            return (picked - first_n) * 3600 / span, label
        if self.started is not None and now > self.started:
            return picked * 3600 / (now - self.started), "since start"
        return None, "measuring"


@dataclass
class Frame:
    status: Mapping[str, Any]
    shipments: list[Mapping[str, Any]]
    faults: list[Mapping[str, Any]] | None  # None: the role may not list faults
    picks_per_hour: float | None
    rate_basis: str

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "shipments": self.shipments, "faults": self.faults,
                "picks_per_hour": self.picks_per_hour, "rate_basis": self.rate_basis}


class Source:
    """Fetches frames; remembers which optional calls the role is refused."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.may_list_faults = True
        self.may_read_stats = True
        self.rate = PickRate()

    def _optional(self, method: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return self.ctx.call(method, params)
        except ApiError as exc:
            if exc.code in _NOT_ALLOWED:
                return None
            raise

    def frame(self) -> Frame:
        status = self.ctx.call("machine.status")
        shipments: list[Mapping[str, Any]] = []
        for state in CURRENT:
            page = self.ctx.call("shipment.list", {"state": state, "limit": 50})
            shipments += [s for s in page.get("items", []) if isinstance(s, Mapping)]
        faults: list[Mapping[str, Any]] | None = None
        if self.may_list_faults:
            page = self._optional("fault.list", {"active": True, "limit": 20})
            self.may_list_faults = page is not None
            faults = page.get("items", []) if isinstance(page, Mapping) else None
        rate, basis = None, "needs the technician role"
        if self.may_read_stats:
            stats = self._optional("diag.stats")
            self.may_read_stats = stats is not None
            if stats is not None:
                basis = "dispenserd reports no pick count"
            if isinstance(stats, Mapping) and isinstance(stats.get("packs_picked"), int):
                uptime = None
                if len(self.rate.samples) == 0:
                    info = self.ctx.call("system.info")
                    uptime = info.get("uptime_s") if isinstance(info, Mapping) else None
                rate, basis = self.rate.add(time.monotonic(), stats["packs_picked"], uptime)
        return Frame(status, shipments, faults, rate, basis)


def _header(frame: Frame, now: str) -> Text:
    if frame.picks_per_hour is not None:
        rate = Text(f"{frame.picks_per_hour:.0f} picks/h ({frame.rate_basis})")
    else:
        rate = Text(f"picks/h: n/a ({frame.rate_basis})", style="dim")
    return Text.assemble(Text("dispenser ", style="bold"), now, "   ", rate)


def _more(count: int, what: str, command: str) -> Text:
    return Text(f"+ {count} more {what} (dispenserctl {command})", style="dim")


@dataclass
class Screen:
    """One frame of ``top``. On a terminal it fits the terminal's height too: when the
    lists are longer than the room left, the shipments are cut first (open faults are what
    staff must act on), and a line says how many more there are and where to see them."""

    frame: Frame
    now: str

    def parts(self, shipments: int | None = None,
              faults: int | None = None) -> list[RenderableType]:
        frame = self.frame
        parts: list[RenderableType] = [_header(frame, self.now), status_view(frame.status)]
        title = "Current shipments (" + ", ".join(CURRENT) + ")"
        sheet = shipment_table({"items": frame.shipments}, title)
        if isinstance(sheet, Sheet):
            sheet.section = True
            shown = sheet if shipments is None else sheet.head(shipments)
            if len(shown):
                parts.append(shown)
            if len(shown) < len(sheet):
                parts.append(_more(len(sheet) - len(shown), "shipments", "shipments"))
        else:
            parts.append(Text("no shipment being picked or labelled", style="dim"))
        if frame.faults is None:
            parts.append(Text("open faults: listing them needs the staff role", style="dim"))
        else:
            listed = fault_table({"items": frame.faults}, "Open faults")
            if isinstance(listed, Sheet):
                listed.section = True
                shown = listed if faults is None else listed.head(faults)
                if len(shown):
                    parts.append(shown)
                if len(shown) < len(listed):
                    parts.append(_more(len(listed) - len(shown), "open faults", "faults"))
            else:
                parts.append(listed)
        return parts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if plain_output(console):
            yield from self.parts()
            return
        # One line is left free: the cursor rests below the frame while Live waits.
        room = options.size.height - 1
        free = options.update(height=None)

        def height(parts: list[RenderableType]) -> int:
            return len(console.render_lines(Group(*parts), free, pad=False))

        everything = self.parts()
        if height(everything) <= room:
            yield from everything
            return

        def most(count: int, fits: Callable[[int], bool]) -> int:
            """The largest n in 0..count with fits(n) (heights grow with n), else 0."""
            low, high = 0, count
            while low < high:
                middle = (low + high + 1) // 2
                if fits(middle):
                    low = middle
                else:
                    high = middle - 1
            return low

        faults = len(self.frame.faults or [])
        if height(self.parts(0, faults)) <= room:
            ships = most(len(self.frame.shipments),
                         lambda n: height(self.parts(n, faults)) <= room)
            yield from self.parts(ships, faults)
            return
        shown = most(faults, lambda n: height(self.parts(0, n)) <= room)
        yield from self.parts(0, shown)  # may still not fit: then the terminal scrolls


def render(frame: Frame) -> Screen:
    return Screen(frame, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"))


def top(ctx: Context, args: argparse.Namespace) -> Exit:
    source = Source(ctx)
    frame = source.frame()
    if ctx.json:
        ctx.print_json(frame.as_json())
        return Exit.OK
    if args.once:
        ctx.print(render(frame))
        return Exit.OK
    try:
        with Live(render(frame), console=ctx.out, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(source.frame()), refresh=True)
    except KeyboardInterrupt:
        pass
    return Exit.OK
