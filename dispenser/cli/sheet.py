"""Lists and records that fit the screen, and plain text for shell tools.

A :class:`Sheet` is a list (one row per order, shipment, pack ...); :class:`Fields` is one
record (``key  value`` lines). Both decide how to look when they are printed:

- on a terminal, a sheet is a table as wide as the terminal. Ids and states are never cut
  or wrapped: when the width is short, the least important columns go first (each column
  says when it goes, ``drop``), then free text wraps between words and lists between items
  (a long text keeps a readable width before less important columns stay).
  Only a terminal too narrow even for the ids and states alone folds them onto a second
  line (no character is ever hidden).
- anywhere else (a pipe, a file), a sheet is plain aligned text: a header line, then one
  line per row, columns two spaces apart, no box drawing, nothing cut. Every cell but the
  last column's is one word (times are written ``2026-11-28T04:10:00Z``, lists with ``,``,
  nothing as ``-``), so ``awk '{print $1}'`` and ``cut`` work; free text is the last column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "Fields", "Kind", "Sheet", "plain_output"]

Kind = Literal["id", "state", "time", "list", "text", "short"]
"""What a column holds, which decides how it may be fitted:

``id``, ``state``, ``time``, ``short`` (a count, ``1/2``, ``yes``): never cut or wrapped;
``list`` (ids or codes joined by ``, ``): wraps between items only;
``text`` (a message, a note): wraps between words.
"""

_SEPARATOR = 3  # " ┃ " between two columns; the outer columns have no padding outside
READABLE = 30  # a column of text narrower than this is hard to read: other columns go first
_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\dZ?)$")
_DASH = "-"


def plain_output(console: Console) -> bool:
    """True when the console writes to a pipe or a file: plain text, no box drawing."""
    return not console.is_terminal


@dataclass(frozen=True)
class Column:
    header: str
    kind: Kind = "id"
    drop: int = 0
    """0: always shown. Otherwise, when the terminal is too narrow for every column, the
    column with the highest ``drop`` goes first, then the next, until the rest fit."""
    justify: Literal["left", "right"] = "left"

    def minimum(self, cells: Iterable[str]) -> int:
        """The narrowest this column may be without cutting anything it must keep whole."""
        header = max((len(word) for word in self.header.split()), default=0)
        return max(header, max((len(word) for cell in cells for word in self._words(cell)),
                               default=0))

    def _words(self, cell: str) -> list[str]:
        """What a line may not be broken within."""
        if self.kind == "text":
            return cell.split()
        if self.kind == "list":  # each item but the last keeps its comma
            return [item + "," for item in cell.split(", ")[:-1]] + [cell.split(", ")[-1]]
        return cell.splitlines()

    def natural(self, cells: Iterable[str]) -> int:
        lines = (line for cell in cells for line in cell.splitlines())
        return max(len(self.header), max((len(line) for line in lines), default=0))

    def plain(self, cell: Text) -> str:
        """The cell as one word (the last column may hold spaces)."""
        shown = cell.plain.replace("\n", " ").strip() or _DASH
        if self.kind == "time":
            return _TIME.sub(r"\1T\2", shown)
        if self.kind == "list":
            return shown.replace(", ", ",")
        return shown


@dataclass
class Sheet:
    """A list that fits the terminal, or plain aligned text (see the module docstring).

    ``hint`` (e.g. how to get the next page) is shown below the table on a terminal; in
    plain output it is left to the caller (``Context.print`` writes it on stderr, so it
    never mixes with the rows a shell tool reads).
    """

    title: str | None
    columns: Sequence[Column]
    rows: list[list[Text]] = field(default_factory=list)
    hint: Text | None = None
    section: bool = False
    """A part of a record (the items of one order): plain output names it in a line of its
    own (``Items:``); a list printed on its own has no title line in plain output."""

    def add_row(self, *cells: Text) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def __len__(self) -> int:
        return len(self.rows)

    def head(self, count: int) -> Sheet:
        """The same sheet with only its first ``count`` rows (its columns chosen anew)."""
        return Sheet(self.title, self.columns, self.rows[:count], self.hint, self.section)

    # -- terminal

    def shown_columns(self, width: int) -> list[int]:
        """Indexes of the columns shown at ``width``: the least important columns go first
        (highest ``drop``) until the rest fit. A column of text or a list counts as at most
        :data:`READABLE` wide (or its longest word) in that decision: beyond, it wraps."""
        everything = list(range(len(self.columns)))
        need: list[int] = []
        for column in self.columns:
            cells = [row[len(need)].plain for row in self.rows]
            natural = column.natural(cells)
            if column.kind in ("text", "list"):
                natural = min(natural, max(column.minimum(cells), READABLE))
            need.append(natural)
        shown = list(everything)
        for i in sorted((i for i in everything if self.columns[i].drop),
                        key=lambda i: (-self.columns[i].drop, -i)):
            if _width(need[j] for j in shown) <= width:
                break
            shown.remove(i)
        return shown

    def widths(self, shown: list[int], width: int) -> list[int]:
        """Each shown column's width: its natural width when everything fits; else columns
        that must stay whole get theirs and the ones that wrap share what is left."""
        cells = [[row[i].plain for row in self.rows] for i in shown]
        columns = [self.columns[i] for i in shown]
        natural = [c.natural(cs) for c, cs in zip(columns, cells, strict=True)]
        if _width(natural) <= width:
            return natural
        minimum = [c.minimum(cs) for c, cs in zip(columns, cells, strict=True)]
        widths = list(minimum)
        spare = width - _width(minimum)
        wanting = [k for k, c in enumerate(columns)
                   if c.kind in ("text", "list") and natural[k] > minimum[k]]
        while spare > 0 and wanting:
            share = max(1, spare // len(wanting))
            for k in list(wanting):
                grant = min(share, natural[k] - widths[k], spare)
                widths[k] += grant
                spare -= grant
                if widths[k] >= natural[k]:
                    wanting.remove(k)
                if spare <= 0:
                    break
        return widths

    def table(self, width: int) -> Table:
        shown = self.shown_columns(width)
        table = Table(title=self.title, title_justify="left", box=box.MINIMAL_HEAVY_HEAD,
                      show_edge=False, pad_edge=False)
        for i, w in zip(shown, self.widths(shown, width), strict=True):
            column = self.columns[i]
            # fold, never an ellipsis: a terminal too narrow for an id breaks it, cuts nothing
            table.add_column(column.header, width=w, justify=column.justify, overflow="fold",
                             no_wrap=False)
        for row in self.rows:
            table.add_row(*(row[i] for i in shown))
        return table

    # -- plain

    def plain_lines(self) -> Iterator[str]:
        if self.section and self.title:
            yield ""
            yield f"{self.title}:"
        cells = [[c.plain(row[i]) for i, c in enumerate(self.columns)] for row in self.rows]
        headers = [c.header.replace(" ", "_") for c in self.columns]
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
                  for i, h in enumerate(headers)]
        for line in (headers, *cells):
            padded = [cell.rjust(w) if c.justify == "right" else cell.ljust(w)
                      for cell, w, c in zip(line, widths, self.columns, strict=True)]
            yield "  ".join(padded).rstrip()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if plain_output(console):
            for line in self.plain_lines():
                yield Text(line, no_wrap=True, overflow="ignore")
            return
        yield self.table(options.max_width)
        if self.hint is not None:
            yield self.hint


def _width(columns: Iterable[int]) -> int:
    widths = list(columns)
    return sum(widths) + _SEPARATOR * max(0, len(widths) - 1)


@dataclass
class Fields:
    """One record as ``key  value`` lines: on a terminal the values wrap at its width; in
    plain output each field is one line, never broken."""

    rows: list[tuple[str, RenderableType]]
    title: str | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if plain_output(console):
            if self.title:
                yield Text(f"{self.title}:")
            width = max((len(key) for key, _ in self.rows), default=0)
            for key, value in self.rows:
                shown = value.plain if isinstance(value, Text) else str(value)
                yield Text(f"{key.ljust(width)}  {shown}".rstrip(), no_wrap=True,
                           overflow="ignore")
            return
        grid = Table.grid(padding=(0, 2))
        if self.title:
            grid.title = self.title
            grid.title_justify = "left"
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for key, value in self.rows:
            grid.add_row(key, value)
        yield grid
