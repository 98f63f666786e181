"""The label printer as the daemon sees it: ask its status, print a label and know whether
it printed. Blocking serial I/O runs in a worker thread, one exchange at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from drivers.printer.status import (
    FRAME_END,
    MalformedStatus,
    NotReadyReason,
    PrinterStatus,
    parse_host_status,
)
from drivers.printer.transport import PrinterLinkDown, SerialTransport
from drivers.printer.zpl import cancel_all_request, host_status_request

T = TypeVar("T")


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def discard_input(self) -> None: ...
    def read_until(
        self, terminator: bytes, count: int = 1, timeout_s: float | None = None
    ) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PrintOutcome:
    """``printed`` is True only when the printer confirmed it took and printed the label.

    When it is False the reasons say why. A label refused before sending never prints; a
    label that was sent but not confirmed was cancelled on the printer (``~JA``) when the
    printer still answered, so a reprint does not make a second copy."""

    printed: bool
    reasons: list[NotReadyReason] = field(default_factory=list)


@dataclass(frozen=True)
class LabelsOutcome:
    """How several labels sent together went: the first ``printed`` of them printed,
    confirmed by the printer; the rest did not print, and were cancelled on the printer
    (``~JA``) when it still answered. When not all printed, ``reasons`` say why."""

    printed: int
    reasons: list[NotReadyReason] = field(default_factory=list)


class Printer:
    """A ZPL printer on a serial line. The line is opened on first use and reopened after
    it failed."""

    def __init__(
        self,
        open_transport: Callable[[], Transport],
        *,
        timeout_s: float = 1.0,
        confirm_timeout_s: float = 3.0,
        poll_interval_s: float = 0.05,
    ) -> None:
        self._open_transport = open_transport
        self.timeout_s = timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.poll_interval_s = poll_interval_s
        self._transport: Transport | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def serial(
        cls,
        url_or_path: str,
        *,
        baudrate: int = 9600,
        timeout_s: float = 1.0,
        confirm_timeout_s: float = 3.0,
    ) -> Printer:
        return cls(
            lambda: SerialTransport(url_or_path, baudrate=baudrate, timeout_s=timeout_s),
            timeout_s=timeout_s,
            confirm_timeout_s=confirm_timeout_s,
        )

    async def close(self) -> None:
        async with self._lock:
            self._drop()

    def _drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------------ blocking parts

    def _line(self) -> Transport:
        if self._transport is None:
            self._transport = self._open_transport()
        return self._transport

    def _status_blocking(self) -> PrinterStatus:
        line = self._line()
        line.discard_input()
        line.write(host_status_request())
        raw = line.read_until(FRAME_END, count=3, timeout_s=self.timeout_s)
        if not raw.strip():
            return PrinterStatus.no_response()
        return parse_host_status(raw)

    def _send_and_status_blocking(self, data: bytes) -> PrinterStatus:
        # The status request follows the formats on the same line: one exchange.
        line = self._line()
        line.discard_input()
        line.write(data + host_status_request())
        raw = line.read_until(FRAME_END, count=3, timeout_s=self.timeout_s)
        if not raw.strip():
            return PrinterStatus.no_response()
        return parse_host_status(raw)

    async def _exchange(self, work: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s * 2 + 1.0):
                return await asyncio.to_thread(work)
        except PrinterLinkDown:
            self._drop()
            raise

    async def _status(self) -> PrinterStatus:
        try:
            return await self._exchange(self._status_blocking)
        except PrinterLinkDown:
            return PrinterStatus(reasons=[NotReadyReason.LINK_DOWN])
        except TimeoutError:
            self._drop()
            return PrinterStatus.no_response()

    # ------------------------------------------------------------------ public

    async def status(self) -> PrinterStatus:
        """The printer's status. A silent printer or a dead line is a not-ready status
        (NO_RESPONSE, LINK_DOWN); an answer that does not parse raises MalformedStatus."""
        async with self._lock:
            return await self._status()

    async def print_label(self, zpl: bytes) -> PrintOutcome:
        """Print one label (``^XA ... ^XZ``) if the printer is ready, and confirm it."""
        if not zpl.lstrip().startswith(b"^XA") or not zpl.rstrip().endswith(b"^XZ"):
            raise ValueError("a label is one ZPL format, ^XA ... ^XZ")
        async with self._lock:
            before = await self._status()
            if not before.ready:
                return PrintOutcome(printed=False, reasons=before.reasons)
            try:
                await self._exchange(lambda: self._line().write(zpl))
            except (PrinterLinkDown, TimeoutError):
                self._drop()
                return PrintOutcome(printed=False, reasons=[NotReadyReason.LINK_DOWN])
            return await self._confirm()

    async def print_labels(self, zpls: Sequence[bytes]) -> LabelsOutcome:
        """Print labels in this order if the printer is ready, and confirm them together:
        one status before, the labels and a status request in one write, and further
        status requests only while the printer still holds some of them. Labels that
        cannot be confirmed are cancelled, as with ``print_label``; the outcome says how
        many of the first ones printed (a printer that went silent or a line that broke
        after the write: none, as nothing is known)."""
        for zpl in zpls:
            if not zpl.lstrip().startswith(b"^XA") or not zpl.rstrip().endswith(b"^XZ"):
                raise ValueError("a label is one ZPL format, ^XA ... ^XZ")
        if not zpls:
            return LabelsOutcome(0)
        data = b"".join(zpls)
        async with self._lock:
            before = await self._status()
            if not before.ready:
                return LabelsOutcome(0, before.reasons)
            try:
                after = await self._exchange(lambda: self._send_and_status_blocking(data))
            except (PrinterLinkDown, TimeoutError):
                self._drop()
                return LabelsOutcome(0, [NotReadyReason.LINK_DOWN])
            deadline = time.monotonic() + self.confirm_timeout_s
            gone = {NotReadyReason.NO_RESPONSE, NotReadyReason.LINK_DOWN}
            while True:
                waiting = after.formats_in_buffer + int(after.partial_format)
                if after.ready and waiting == 0:
                    return LabelsOutcome(len(zpls))
                if gone.intersection(after.reasons):
                    return LabelsOutcome(0, after.reasons)
                if not after.ready or time.monotonic() >= deadline:
                    # Formats leave the buffer in order as they print: the ones still in it
                    # are the last ones; cancel them so a reprint is the only copy.
                    await self._cancel_buffered()
                    return LabelsOutcome(
                        max(0, len(zpls) - waiting), after.reasons or [NotReadyReason.NOT_CONFIRMED]
                    )
                await asyncio.sleep(self.poll_interval_s)
                after = await self._status()

    async def _confirm(self) -> PrintOutcome:
        deadline = time.monotonic() + self.confirm_timeout_s
        while True:
            after = await self._status()
            done = after.formats_in_buffer == 0 and not after.partial_format
            if after.ready and done:
                return PrintOutcome(printed=True)
            gone = {NotReadyReason.NO_RESPONSE, NotReadyReason.LINK_DOWN}
            if gone.intersection(after.reasons):
                return PrintOutcome(printed=False, reasons=after.reasons)
            if not after.ready or time.monotonic() >= deadline:
                # The format waits in the printer and would print once a person fixes it;
                # cancel it so "not printed" stays true and a reprint is the only copy.
                await self._cancel_buffered()
                reasons = after.reasons or [NotReadyReason.NOT_CONFIRMED]
                return PrintOutcome(printed=False, reasons=reasons)
            await asyncio.sleep(self.poll_interval_s)

    async def _cancel_buffered(self) -> None:
        try:
            await self._exchange(lambda: self._line().write(cancel_all_request()))
        except (PrinterLinkDown, TimeoutError):
            self._drop()


__all__ = [
    "LabelsOutcome",
    "MalformedStatus",
    "PrintOutcome",
    "Printer",
    "PrinterLinkDown",
    "Transport",
]
