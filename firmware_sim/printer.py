"""Label printer speaking ZPL II on a serial line (a pty).

The byte stream is split into formats (``^XA`` ... ``^XZ``); each is kept as a label.
Tilde commands act at once, wherever they arrive, even inside a format:
``~HS`` host status, ``~PS`` resume, ``~PP`` pause, ``~JA`` cancel all buffered formats.
While the printer is not ready (paper out, head open, paused) formats wait in the buffer
and are printed, in order, when the condition is cleared.
"""

from __future__ import annotations

import datetime
from typing import Any

from firmware_sim.transport import PtyPort

STX = b"\x02"
ETX_CRLF = b"\x03\r\n"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class Printer:
    """The ZPL engine; :meth:`feed` is pure bytes in, bytes out (answers to ``~HS``)."""

    def __init__(self) -> None:
        self.labels: list[dict[str, Any]] = []
        self.buffered: list[dict[str, Any]] = []
        self.paper_out = False
        self.head_open = False
        self.paused = False
        self._pending = bytearray()  # may end with an incomplete "~" command
        self._stream = bytearray()  # data outside tilde commands, being split into formats
        self._in_format = False

    @property
    def ready(self) -> bool:
        return not (self.paper_out or self.head_open or self.paused)

    def state(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "paper_out": self.paper_out,
            "head_open": self.head_open,
            "paused": self.paused,
            "buffered": len(self.buffered),
            "printed": sum(1 for label in self.labels if label["printed"]),
            "received": len(self.labels),
            "partial_format": self._in_format,
        }

    # --- conditions ---------------------------------------------------------------------

    def set_condition(self, name: str, value: bool) -> None:
        if name not in ("paper_out", "head_open", "paused"):
            raise ValueError(f"unknown printer condition {name!r}")
        setattr(self, name, value)
        self._print_buffered()

    def _print_buffered(self) -> None:
        while self.ready and self.buffered:
            label = self.buffered.pop(0)
            label["printed"] = True
            label["printed_at"] = _now()

    def cancel_all(self) -> None:
        for label in self.buffered:
            label["cancelled"] = True
        self.buffered.clear()

    def host_status(self) -> bytes:
        formats = min(len(self.buffered), 999)
        flags = f"{int(self.paper_out)},{int(self.paused)}"
        s1 = f"030,{flags},1218,{formats:03d},0,0,{int(self._in_format)},000,0,0,0"
        s2 = f"001,0,{int(self.head_open)},0,0,2,6,0,00000000,1,000"
        s3 = "1234,0"
        return b"".join(STX + s.encode() + ETX_CRLF for s in (s1, s2, s3))

    # --- the byte stream ----------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the host; return what the printer sends back."""
        pending = self._pending
        pending += data
        replies = bytearray()
        while pending:
            i = pending.find(b"~")
            if i < 0:
                self._data(bytes(pending))
                pending.clear()
                break
            if i:
                self._data(bytes(pending[:i]))
                del pending[:i]
            if len(pending) < 3:
                break  # wait for the rest of the command
            command = bytes(pending[1:3]).upper()
            if command == b"HS":
                replies += self.host_status()
            elif command == b"PS":
                self.set_condition("paused", False)
            elif command == b"PP":
                self.set_condition("paused", True)
            elif command == b"JA":
                self.cancel_all()
            else:
                self._data(b"~")
                del pending[:1]
                continue
            del pending[:3]
        return bytes(replies)

    def _data(self, chunk: bytes) -> None:
        stream = self._stream
        # Search only the new bytes (plus two, for a command split across chunks), so a
        # large format arriving in small pieces costs linear time.
        searched = max(len(stream) - 2, 0)
        stream += chunk
        while True:
            if not self._in_format:
                start = stream.upper().find(b"^XA")
                if start < 0:
                    del stream[: max(len(stream) - 2, 0)]  # keep a possible "^X"
                    return
                del stream[:start]
                self._in_format = True
                searched = 3
                continue
            end = stream[searched:].upper().find(b"^XZ")
            if end < 0:
                return
            end += searched
            body = bytes(stream[: end + 3])
            del stream[: end + 3]
            self._in_format = False
            self._format(body)
            searched = 0

    def _format(self, body: bytes) -> None:
        label: dict[str, Any] = {
            "n": len(self.labels) + 1,
            "zpl": body.decode("utf-8", errors="backslashreplace"),
            "received": _now(),
            "printed": False,
            "printed_at": None,
            "cancelled": False,
        }
        self.labels.append(label)
        self.buffered.append(label)
        self._print_buffered()

    # --- persistence --------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "paper_out": self.paper_out,
            "head_open": self.head_open,
            "paused": self.paused,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.labels = [dict(label) for label in state.get("labels", [])]
        self.buffered = [
            label for label in self.labels if not label["printed"] and not label["cancelled"]
        ]
        self.paper_out = bool(state.get("paper_out", False))
        self.head_open = bool(state.get("head_open", False))
        self.paused = bool(state.get("paused", False))


class PrinterPort:
    """The printer on a pty whose slave is linked at ``link``."""

    def __init__(self, printer: Printer, link: str) -> None:
        self.printer = printer
        self.port = PtyPort(link, self._on_data)

    @property
    def device(self) -> str:
        return self.port.device

    def _on_data(self, data: bytes) -> None:
        reply = self.printer.feed(data)
        if reply:
            self.port.write(reply)

    async def start(self) -> None:
        self.port.open()

    async def stop(self) -> None:
        self.port.close()
