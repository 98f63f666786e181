"""Line-by-line input (``submit``, ``load``): reading, progress and the refusal report.

Every non-blank input line ends up in exactly one outcome, accepted or refused, and every
refusal is reported with its line number and each error: nothing is dropped silently.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from dispenser.cli.context import Context, UsageError
from dispenser.cli.render import error_lines
from dispenser.cli.visible import visible

__all__ = ["Line", "Report", "open_input", "progress", "read_lines", "refusal_text"]


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, counting blank lines too, as an editor shows them
    text: str


@dataclass
class Report:
    """One row per input line, in line order: ``{"line": n, ...result}`` when accepted,
    ``{"line": n, ..., "error": {"code", "message", ...}}`` when refused."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, row: dict[str, Any]) -> None:
        self.rows.append({"line": line, **row})

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "error" in row]

    @property
    def accepted(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "error" not in row]

    def as_json(self) -> dict[str, Any]:
        rows = sorted(self.rows, key=lambda row: int(row["line"]))
        return {"results": rows, "accepted": len(self.accepted), "refused": len(self.refused)}


def refusal_text(row: dict[str, Any], subject_key: str) -> Text:
    """``line 3 (ORD-7): message (code)`` and one indented line per detail."""
    error = row["error"] if isinstance(row.get("error"), dict) else {}
    subject = row.get(subject_key)
    if isinstance(subject, str):
        # From the input file: a scan's group separators as <GS>, any other control
        # character escaped (an order file may come from the order system).
        subject = visible(subject.replace("\x1d", "<GS>"))
    head = f"line {row['line']}" + (f" ({subject})" if subject else "") + ": "
    details = error_lines(error.get("code"), str(error.get("message", "refused")), error)
    return Text(head + "\n".join(visible(line) for line in details), style="red")


@contextmanager
def open_input(path: str | None) -> Iterator[IO[str]]:
    """The named file, or stdin for ``-`` / no name. An unreadable file is a usage error."""
    if path is None or path == "-":
        yield sys.stdin
        return
    try:  # opened apart from the with below: only open()'s own errors are usage errors
        handle = Path(path).open(encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        yield handle


def read_lines(handle: IO[str]) -> Iterator[Line]:
    """Non-blank lines with their numbers, CR/LF stripped, as they arrive (a scanner types
    one line at a time, so nothing is read ahead)."""
    number = 0
    while True:
        try:
            raw = handle.readline()
        except UnicodeDecodeError as exc:
            raise UsageError(f"input line {number + 1} is not UTF-8 text: {exc.reason}") from None
        if not raw:
            return
        number += 1
        stripped = raw.rstrip("\r\n")
        if stripped.strip():
            yield Line(number, stripped)


@contextmanager
def progress(ctx: Context, description: str, total: int | None,
             show: bool = True) -> Iterator[Progress | None]:
    """A progress bar on stderr when a person watches it; None otherwise."""
    if not (show and ctx.interactive):
        yield None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=ctx.err, transient=True)
    with bar:
        bar.add_task(description, total=total)
        yield bar
