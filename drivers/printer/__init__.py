"""Driver for the label printer (ZPL II over a serial line), in three layers that never mix:
``zpl`` builds bytes, ``transport`` moves them, ``status`` reads the printer's answer;
``client.Printer`` puts them together for the daemon."""

from drivers.printer.client import Printer, PrintOutcome
from drivers.printer.status import (
    MalformedStatus,
    NotReadyReason,
    PrinterError,
    PrinterStatus,
    parse_host_status,
)
from drivers.printer.transport import PrinterLinkDown, SerialTransport
from drivers.printer.zpl import Label, LabelError, field_data, host_status_request

__all__ = [
    "Label",
    "LabelError",
    "MalformedStatus",
    "NotReadyReason",
    "PrintOutcome",
    "Printer",
    "PrinterError",
    "PrinterLinkDown",
    "PrinterStatus",
    "SerialTransport",
    "field_data",
    "host_status_request",
    "parse_host_status",
]
