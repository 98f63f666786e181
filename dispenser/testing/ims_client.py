"""An IMS (pharmacy software) test client for WWKS2, written from the protocol digest.

It shares no code with the server (``dispenser.wwks2`` is never imported): it frames on
``</WWKS>`` itself, builds and reads XML with the standard library, and behaves like the
client library embedded in most pharmacy software: HelloRequest first, then requests with
``Source``/``Destination``, and it answers the storage system's KeepAliveRequest (same Id,
Source and Destination swapped) unless told not to.

Every received message is kept as raw bytes (``frames``) as well as parsed, so tests can
check exact spellings and the envelope byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

END = b"</WWKS>"
CDATA_OPEN, CDATA_CLOSE = b"<![CDATA[", b"]]>"
DEFAULT_CAPABILITIES = ("KeepAlive", "Status", "Input", "ArticleMaster", "StockInfo",
                        "Output", "TaskInfo", "TaskCancel")


def E(tag: str, *children: ET.Element, **attributes: Any) -> ET.Element:
    """An element: ``E("Criteria", ArticleId="A1", Quantity=1)``; values become text,
    booleans ``True``/``False``; ``None`` values are left out."""
    element = ET.Element(tag)
    for name, value in attributes.items():
        if value is not None:
            element.set(name, str(value))
    element.extend(children)
    return element


def envelope(lead: ET.Element) -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = ET.Element("WWKS", {"Version": "2.0", "TimeStamp": stamp})
    root.append(lead)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return data


def split_messages(buffer: bytearray) -> list[bytes]:
    """Take the complete messages off the front of ``buffer`` (CDATA skipped)."""
    found: list[bytes] = []
    while True:
        start = 0
        while start < len(buffer) and buffer[start] in b" \t\r\n":
            start += 1
        del buffer[:start]
        pos, end = 0, -1
        while True:
            close = buffer.find(END, pos)
            cdata = buffer.find(CDATA_OPEN, pos)
            if close < 0:
                break
            if 0 <= cdata < close:
                after = buffer.find(CDATA_CLOSE, cdata)
                if after < 0:
                    break
                pos = after + len(CDATA_CLOSE)
                continue
            end = close + len(END)
            break
        if end < 0:
            return found
        found.append(bytes(buffer[:end]))
        del buffer[:end]


@dataclass
class Received:
    """One message from the storage system: raw bytes and the lead element."""

    raw: bytes
    lead: ET.Element

    @property
    def tag(self) -> str:
        return self.lead.tag

    @property
    def id(self) -> str | None:
        return self.lead.get("Id")


class ImsClient:
    """One IMS connection. A background task reads everything the storage system sends
    (answering its KeepAliveRequests, like the client library) into an inbox."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 subscriber_id: int = 100, answer_keepalive: bool = True) -> None:
        self.reader = reader
        self.writer = writer
        self.subscriber_id = subscriber_id
        self.answer_keepalive = answer_keepalive
        self.robot_id: int | None = None
        self.frames: list[Received] = []  # everything received, in order
        self._inbox: list[Received] = []  # not yet taken by expect()
        self._buffer = bytearray()
        self._ids = itertools.count(2)
        self._arrived = asyncio.Event()
        self.eof = False
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1", **options: Any) -> ImsClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, **options)

    def next_id(self) -> str:
        return str(next(self._ids))

    # -- sending

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, lead: ET.Element) -> None:
        await self.send_raw(envelope(lead))

    def routed(self, tag: str, *children: ET.Element, **attributes: Any) -> ET.Element:
        """A request from this IMS to the storage system, with a fresh Id unless given."""
        attributes.setdefault("Id", self.next_id())
        attributes.setdefault("Source", self.subscriber_id)
        attributes.setdefault("Destination", self.robot_id if self.robot_id else 999)
        ordered = {"Id": attributes.pop("Id"), "Source": attributes.pop("Source"),
                   "Destination": attributes.pop("Destination"), **attributes}
        return E(tag, *children, **ordered)

    async def hello(self, message_id: str = "1",
                    capabilities: tuple[str, ...] | None = DEFAULT_CAPABILITIES) -> Received:
        subscriber = E("Subscriber", Id=self.subscriber_id, Type="IMS",
                       Manufacturer="Test Pharmacy Systems", ProductInfo="IMS test client",
                       VersionInfo="1.0")
        for name in capabilities or ():
            subscriber.append(E("Capability", Name=name))
        await self.send(E("HelloRequest", subscriber, Id=message_id))
        response = await self.expect("HelloResponse")
        self.robot_id = int(response.lead.find("Subscriber").get("Id"))  # type: ignore[union-attr,arg-type]
        return response

    async def request(self, tag: str, *children: ET.Element, **attributes: Any) -> Received:
        """Send a request and wait for the response of the same Id."""
        lead = self.routed(tag, *children, **attributes)
        await self.send(lead)
        return await self.expect(tag.replace("Request", "Response"), lead.get("Id"))

    # -- receiving

    async def _read_loop(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self._buffer += data
                for raw in split_messages(self._buffer):
                    root = ET.fromstring(raw)
                    assert root.tag == "WWKS" and len(root) == 1, raw[:200]
                    received = Received(raw, root[0])
                    self.frames.append(received)
                    if received.tag == "KeepAliveRequest" and self.answer_keepalive:
                        await self.send(E("KeepAliveResponse", Id=received.id,
                                          Source=received.lead.get("Destination"),
                                          Destination=received.lead.get("Source")))
                    self._inbox.append(received)
                self._arrived.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self._arrived.set()

    async def _wait(self, deadline: float) -> bool:
        """Wait for news until ``deadline``; False when the time is up."""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), left)
        except TimeoutError:
            return False
        return True

    async def expect(self, tag: str, message_id: str | None = None,
                     timeout: float = 10.0) -> Received:
        """The next message with this tag (and Id); others stay in the inbox."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, received in enumerate(self._inbox):
                if received.tag == tag and (message_id is None or received.id == message_id):
                    return self._inbox.pop(i)
            if self.eof:
                raise ConnectionResetError(f"closed by the storage system; no {tag} came")
            if not await self._wait(deadline):
                raise TimeoutError(f"no {tag} {message_id or ''} within {timeout} s; inbox: "
                                   f"{[r.tag for r in self._inbox]}")

    async def collect(self, seconds: float) -> list[Received]:
        """Everything that arrives within ``seconds`` (taken off the inbox)."""
        await asyncio.sleep(seconds)
        taken, self._inbox = self._inbox, []
        return taken

    def inbox(self, tag: str) -> list[Received]:
        return [r for r in self._inbox if r.tag == tag]

    async def closed_by_server(self, timeout: float = 15.0) -> bool:
        """True when the storage system closes the connection within ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.eof:
            if not await self._wait(deadline):
                return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
