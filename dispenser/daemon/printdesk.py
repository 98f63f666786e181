"""The print desk: prints each shipment's label and packing slip while the robot picks.

Shipments are printed one at a time in the order they reached labelling. When the printer is
not ready (paper out, head open, paused, unplugged) the shipment waits in labelling and the
desk asks again every ``retry_s``; nothing is lost and nothing prints twice on purpose (the
driver cancels a label it could not confirm). Before a shipment's first document is sent,
``on_starting`` is called (the scheduler journals that printing began); once both are
printed ``on_printed`` is called (the scheduler journals it and queues RELEASE_TOTE). A
shipment submitted with ``copy`` (printing began before a crash, or was not recorded) is
printed marked COPY, so the packer can discard the duplicate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from dispenser.core.formulary import Drug
from dispenser.core.views import ShipmentView
from dispenser.daemon import labels
from dispenser.logs import get_logger
from drivers.printer.client import LabelsOutcome, PrintOutcome
from drivers.printer.status import NotReadyReason, PrinterError

log = get_logger(__name__)


class PrinterLike(Protocol):
    """What the desk needs of the printer driver (``drivers.printer.client.Printer``)."""

    async def print_label(self, zpl: bytes) -> PrintOutcome: ...

    async def print_labels(self, zpls: Sequence[bytes]) -> LabelsOutcome: ...


def reason_names(reasons: Sequence[NotReadyReason]) -> list[str]:
    return [r.value for r in reasons]


class PrintDesk:
    def __init__(self, printer: PrinterLike, drugs: Mapping[str, Drug],
                 get_shipment: Callable[[str], ShipmentView],
                 on_printed: Callable[[str], None],
                 on_waiting: Callable[[str, list[str]], None] | None = None,
                 retry_s: float = 1.0,
                 on_starting: Callable[[str], None] | None = None) -> None:
        self.printer = printer
        self.drugs = drugs
        self._get = get_shipment
        self._on_printed = on_printed
        self._on_waiting = on_waiting
        self._on_starting = on_starting
        self.retry_s = retry_s
        self._copies: set[str] = set()  # shipments to print marked COPY
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._progress: dict[str, int] = {}
        self._wake = asyncio.Event()
        self.waiting_reasons: list[str] = []
        self.printed_count = 0
        self._stopping = False
        self.busy = False

    def submit(self, shipment_id: str, copy: bool = False) -> None:
        """Print a shipment's label and slip (``copy``: marked COPY, the first ones may
        have come out already)."""
        if copy:
            self._copies.add(shipment_id)
        if shipment_id in self._queued:
            return
        self._queued.add(shipment_id)
        self._queue.append(shipment_id)
        self._wake.set()

    @property
    def pending(self) -> list[str]:
        return list(self._queue)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            shipment_id = self._queue[0]
            self.busy = True
            try:
                done = await self._print_one(shipment_id)
            except Exception:
                # Not the printer's fault (a label that cannot be built, say): keep the
                # others printing and come back to this one later.
                log.exception("label could not be printed", shipment_id=shipment_id)
                self._queue.rotate(-1)
                done = False
            finally:
                self.busy = False
            if done:
                self._queue.popleft()
                self._queued.discard(shipment_id)
                self._copies.discard(shipment_id)
                self.waiting_reasons = []
                self.printed_count += 1
                try:
                    self._on_printed(shipment_id)
                except Exception:
                    log.exception("printed label could not be recorded",
                                  shipment_id=shipment_id)
                    # Printed again, marked COPY: better twice than lost.
                    self.submit(shipment_id, copy=True)
            elif not self._stopping:
                try:
                    async with asyncio.timeout(self.retry_s):
                        self._wake.clear()
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _print_one(self, shipment_id: str) -> bool:
        view = self._get(shipment_id)
        copy = shipment_id in self._copies
        docs = (("label", labels.shipping_label(view, copy)),
                ("slip", labels.packing_slip(view, self.drugs, copy)))
        # A label already printed for this shipment is not printed again when only the
        # slip has to be retried.
        first = self._progress.get(shipment_id, 0)
        if first == 0 and self._on_starting is not None:
            self._on_starting(shipment_id)  # journaled before anything can come out
        # The documents still to print go together: one confirmation by the printer's
        # status for the shipment, not one per document.
        try:
            outcome = await self.printer.print_labels([zpl for _, zpl in docs[first:]])
        except PrinterError as exc:  # an answer that does not parse: try again later
            log.warning("printer answer not understood", error=str(exc))
            outcome = LabelsOutcome(0, [NotReadyReason.NO_RESPONSE])
        if first + outcome.printed < len(docs):
            if outcome.printed:
                self._progress[shipment_id] = first + outcome.printed
            reasons = reason_names(outcome.reasons)
            if reasons != self.waiting_reasons:
                log.warning("printer not ready, shipment waits in labelling",
                            shipment_id=shipment_id, document=docs[first + outcome.printed][0],
                            reasons=reasons)
                if self._on_waiting is not None:
                    self._on_waiting(shipment_id, reasons)
            self.waiting_reasons = reasons
            return False
        self._progress.pop(shipment_id, None)
        return True

    async def reprint(self, view: ShipmentView, what: str) -> tuple[bool, list[str]]:
        docs = []
        if what in ("label", "both"):
            docs.append(labels.shipping_label(view))
        if what in ("slip", "both"):
            docs.append(labels.packing_slip(view, self.drugs))
        for zpl in docs:
            outcome = await self.printer.print_label(zpl)
            if not outcome.printed:
                return False, reason_names(outcome.reasons)
        return True, []
