"""Structured logging for the dispenser (structlog).

``configure_logging(level, fmt)`` is called once at start-up. Output is one JSON object per
line when the stream is not a terminal (journald, files, pipes) and a readable console
rendering otherwise, fitted to the terminal's width (:mod:`dispenser.consolelog`); ``fmt``
may force either.

What callers may rely on:

- ``get_logger(__name__)`` returns a bound logger; ``bind_context(order_id=..., shipment_id=...)``
  binds values for everything logged inside the ``with`` block, including from called
  coroutines (contextvars), so every line about an order carries its id.
- **Patient data never reaches the output.** Any event key called ``name``,
  ``patient_name``, ``phone``, ``address`` or ``insurance_id``, at any nesting depth inside
  dicts and lists, is replaced with ``"<redacted>"`` before rendering. Log ids (order id,
  patient id) instead. Free text is not inspected: never put patient data into the event
  message or an exception message.
- Tracebacks are rendered **without local variables** (which would carry patient data from
  whatever frame failed), as a dict in JSON output and as text on the console.
- Standard-library logging (pymodbus, asyncio) goes through the same redaction and renderer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from dispenser.consolelog import ConsoleLines

__all__ = [
    "PATIENT_KEYS",
    "REDACTED",
    "LogFormat",
    "bind_context",
    "configure_logging",
    "get_logger",
    "redact_patient_data",
]

LogFormat = Literal["auto", "json", "console"]

PATIENT_KEYS = frozenset({"name", "patient_name", "phone", "address", "insurance_id"})
REDACTED = "<redacted>"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: (REDACTED if isinstance(key, str) and key.lower() in PATIENT_KEYS else _redact(v))
            for key, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v) for v in value]
    return value


def redact_patient_data(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace every patient-identifying key with ``"<redacted>"``."""
    for key in list(event_dict):
        if key.lower() in PATIENT_KEYS:
            event_dict[key] = REDACTED
        elif key != "exc_info":
            event_dict[key] = _redact(event_dict[key])
    return event_dict


def _renderer(fmt: LogFormat, stream: TextIO) -> tuple[list[Processor], Processor]:
    """Return (format-specific processors, final renderer)."""
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(stream))
    if use_json:
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        return (
            [structlog.processors.ExceptionRenderer(transformer)],
            structlog.processors.JSONRenderer(),
        )
    # Tracebacks as plain text (format_exc_info shows no local variables).
    return [structlog.processors.format_exc_info], ConsoleLines(stream, colors=_isatty(stream))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Set up structlog and standard-library logging; safe to call again (tests do)."""
    out = stream if stream is not None else sys.stdout
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    format_processors, renderer = _renderer(fmt, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_patient_data,
        structlog.processors.StackInfoRenderer(),
    ]
    structlog.configure(
        processors=[*shared, *format_processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Route stdlib logging (pymodbus, asyncio) through the same processors.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *format_processors,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; ``name`` is bound as ``logger`` when given.

    Lazy: safe at module level, it follows a later ``configure_logging``.
    """
    return _NamedLogger(name) if name else structlog.get_logger()


class _NamedLogger:
    """Resolves the logger on each use, so one made at import time follows a later
    ``configure_logging`` (structlog's own ``bind`` would freeze the configuration)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(structlog.get_logger().bind(logger=self._name), attr)


@contextmanager
def bind_context(**values: Any) -> Iterator[None]:
    """Bind e.g. ``order_id``/``shipment_id`` for every log line inside the block."""
    with structlog.contextvars.bound_contextvars(**values):
        yield
