"""The console form of log lines: short enough to read in an 80-column terminal.

One record::

    13:02:42 info  order received     order_id=DEMO-20261203-0001 state=received
                                      lines=2 packs=4

The local time (seconds), the level, the event, then the values as ``key=value`` in the
order they were given; values that do not fit the terminal's width go whole onto the next
line, so an id is never cut. A list of plain values is written ``a,b`` (JSON when an item
has a space or a comma). The logger's name and the date stay in the JSON form (journald,
files). A traceback follows the line as text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from structlog.typing import EventDict, WrappedLogger

__all__ = ["ConsoleLines"]

# Keys that are the line's head, or kept for the JSON form only.
_HEAD = frozenset({"timestamp", "level", "event", "logger", "exception", "exc_info",
                   "stack", "logger_name", "_record", "_from_structlog"})
_LEVEL = {"warning": "warn", "critical": "crit", "exception": "error"}
_COLOUR = {"debug": "\x1b[2m", "info": "\x1b[32m", "warn": "\x1b[33m", "error": "\x1b[31;1m",
           "crit": "\x1b[31;1m"}
_RESET = "\x1b[0m"
_EVENT = 18  # the event column's width; a longer event pushes the values along
_MIN_VALUES = 36  # narrower than this, continuation lines start at a small indent


def _value(value: Any) -> str:
    if isinstance(value, list | tuple | set | frozenset) and all(
            (isinstance(v, int | float) and not isinstance(v, bool))
            or (isinstance(v, str) and v and not any(c in v for c in ' ,"')) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (" " in text or not text) else text


class ConsoleLines:
    """structlog renderer writing :mod:`consolelog`'s form, coloured when ``colors``."""

    def __init__(self, stream: TextIO, colors: bool) -> None:
        self.stream = stream
        self.colors = colors

    def width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
            if columns > 0:  # a pty nobody sized says 0
                return max(40, columns)
        except (AttributeError, OSError, ValueError):
            pass
        try:
            return max(40, int(os.environ.get("COLUMNS", "")))
        except ValueError:
            return 80

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
        width = self.width()
        level = str(event_dict.get("level", _method))
        level = _LEVEL.get(level, level)
        clock = datetime.now().strftime("%H:%M:%S")
        event = str(event_dict.get("event", ""))
        pairs = [f"{k}={_value(v)}" for k, v in event_dict.items() if k not in _HEAD]
        indent = 15 + _EVENT + 1  # where the values start when the event is short
        if pairs:
            event = event.ljust(_EVENT)
        head_plain = f"{clock} {level:<5} {event}"
        head = head_plain
        if self.colors:
            head = f"{clock} {_COLOUR.get(level, '')}{level:<5}{_RESET} {event}"
        if width - indent < _MIN_VALUES:
            indent = 4
        lines: list[str] = []
        current, used = head, len(head_plain)
        for pair in pairs:
            if used + 1 + len(pair) <= width:
                current, used = f"{current} {pair}", used + 1 + len(pair)
            else:  # whole onto the next line (alone there if it is wider than that)
                lines.append(current.rstrip())
                current, used = " " * indent + pair, indent + len(pair)
        lines.append(current.rstrip())
        text = "\n".join(lines)
        trace = event_dict.get("exception")
        if trace:
            text += "\n" + str(trace).rstrip("\n")
        return text
