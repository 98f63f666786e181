"""Byte transport to the printer over pyserial: a device path or a pyserial URL
(``loop://``, ``socket://host:port``, ``/dev/ttyUSB0``). Blocking; no ZPL knowledge."""

from __future__ import annotations

import contextlib
import time

import serial

try:  # pyserial on POSIX lets termios errors through (tcflush on a line that hung up)
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - not POSIX
    _TermiosError = OSError  # type: ignore[assignment,misc]

from drivers.printer.status import PrinterError


class PrinterLinkDown(PrinterError):
    """The serial line cannot be opened, written or read."""


_LINE_ERRORS = (serial.SerialException, OSError, _TermiosError)


class SerialTransport:
    """write / read_until / close over one serial line. Every call is bounded by
    ``timeout_s``; reads return what arrived by then."""

    def __init__(self, url_or_path: str, baudrate: int = 9600, timeout_s: float = 1.0) -> None:
        self.url = url_or_path
        self.timeout_s = timeout_s
        try:
            self._port = serial.serial_for_url(
                url_or_path,
                baudrate=baudrate,
                timeout=min(timeout_s, 0.05),
                write_timeout=timeout_s,
            )
        except (*_LINE_ERRORS, ValueError) as exc:
            raise PrinterLinkDown(f"cannot open printer line {url_or_path}: {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except _LINE_ERRORS as exc:
            raise PrinterLinkDown(f"cannot write to printer line {self.url}: {exc}") from exc

    def discard_input(self) -> None:
        """Drop bytes that arrived unasked (a late answer to an earlier request)."""
        try:
            self._port.reset_input_buffer()
        except _LINE_ERRORS as exc:
            raise PrinterLinkDown(f"cannot read printer line {self.url}: {exc}") from exc

    def read_until(
        self, terminator: bytes, count: int = 1, timeout_s: float | None = None
    ) -> bytes:
        """Read until ``terminator`` was seen ``count`` times or the timeout passed; returns
        what arrived (possibly incomplete: the caller checks)."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        buf = bytearray()
        try:
            while buf.count(terminator) < count and time.monotonic() < deadline:
                chunk = self._port.read(max(1, self._port.in_waiting))
                buf += chunk
        except _LINE_ERRORS as exc:
            raise PrinterLinkDown(f"cannot read printer line {self.url}: {exc}") from exc
        return bytes(buf)

    def close(self) -> None:
        """Close the line; a line that already hung up closes quietly."""
        with contextlib.suppress(*_LINE_ERRORS):
            self._port.close()
