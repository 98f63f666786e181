"""One client connection: reading and framing, a write queue, the handshake state.

What the server may rely on:

- **Reading.** Bytes are framed with :class:`~dispenser.wwks2.framing.FrameSplitter`; each
  complete message goes to ``on_frame`` in order, one at a time (a connection's requests
  are answered in the order they came). A message over ``max_message_bytes`` gets one
  UnprocessedMessage and the connection is closed: framing is lost.
- **Writing.** Every connection has its own queue; :meth:`send` never waits. A client that
  leaves more than ``write_buffer_limit`` bytes unread is disconnected, others are not
  affected.
- **Handshake.** Until :meth:`handshake` the connection is not a client: it receives no
  unsolicited message and no keep-alive. A connection with no handshake
  ``hello_timeout_s`` after it opened is closed.
- **Keep-alive.** After the handshake, every ``keepalive_interval_s`` a KeepAliveRequest
  is sent to a client that announced KeepAlive; if nothing at all came from it since the
  previous one, the connection is closed (the peer is gone). TCP keep-alive is on too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import TYPE_CHECKING, Protocol

from dispenser.logs import get_logger
from dispenser.wwks2.errors import FrameTooLarge
from dispenser.wwks2.framing import FrameSplitter
from dispenser.wwks2.messages import Envelope, Subscriber, encode_message

if TYPE_CHECKING:
    from dispenser.wwks2.server import Wwks2Stats

__all__ = ["Connection", "ConnectionHandler"]

log = get_logger(__name__)

_READ_CHUNK = 64 * 1024
_FLUSH_ON_CLOSE_S = 2.0


def _tcp_keepalive(sock: socket.socket | None) -> None:
    """Let the kernel notice a dead peer too (the pharmacy client library relies on it)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


class ConnectionHandler(Protocol):
    """What a connection calls back (the server)."""

    async def on_frame(self, connection: Connection, frame: bytes) -> None:
        """One complete message arrived."""
        ...

    def on_oversized(self, connection: Connection, limit: int) -> None:
        """A message passed the limit; the connection closes after this."""
        ...

    def keepalive_request(self, connection: Connection) -> bool:
        """Send a KeepAliveRequest; False when it could not be queued."""
        ...


class Connection:
    """A connected peer; ``subscriber`` is its Hello's Subscriber once handshaken."""

    def __init__(self, *, connection_id: int, peer: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, stats: Wwks2Stats, max_message_bytes: int,
                 write_buffer_limit: int) -> None:
        self.id = connection_id
        self.peer = peer
        self.reader = reader
        self.writer = writer
        self.stats = stats
        self.subscriber: Subscriber | None = None
        # Capability names the client announced; None when it listed none (= all).
        self.capabilities: frozenset[str] | None = None
        self._splitter = FrameSplitter(max_message_bytes)
        self._write_buffer_limit = write_buffer_limit
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._aborted = False
        self._heard = True  # something arrived since the last keep-alive check
        _tcp_keepalive(writer.get_extra_info("socket"))

    # -- state

    @property
    def handshaken(self) -> bool:
        return self.subscriber is not None

    @property
    def subscriber_id(self) -> int | None:
        return self.subscriber.id if self.subscriber is not None else None

    @property
    def closing(self) -> bool:
        return self._closing

    def takes(self, capability: str) -> bool:
        """Whether the client announced ``capability`` (a client that listed none takes
        everything, as WWKS2 says)."""
        return self.capabilities is None or capability in self.capabilities

    def handshake(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        names = frozenset(c.name for c in subscriber.capabilities)
        self.capabilities = names or None

    # -- writing

    def send(self, message: Envelope) -> bool:
        """Queue ``message``; False when the connection is closing."""
        return self.send_bytes(encode_message(message))

    def send_bytes(self, data: bytes) -> bool:
        if self._closing:
            return False
        if self._pending and self._pending_bytes + len(data) > self._write_buffer_limit:
            self.abort("client does not read its messages")
            return False
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.stats.messages_out += 1
        self._wakeup.set()
        return True

    def close(self, reason: str) -> None:
        """Close once what is queued has been written."""
        if not self._closing:
            log.info("wwks2 closing connection", connection=self.id, peer=self.peer,
                     reason=reason)
        self._closing = True
        self._wakeup.set()
        self.reader.feed_eof()

    def abort(self, reason: str) -> None:
        """Drop the connection now, discarding what is queued."""
        if self._aborted:
            return
        log.warning("wwks2 connection dropped", connection=self.id, peer=self.peer,
                    reason=reason)
        self._closing = self._aborted = True
        self._pending.clear()
        self._pending_bytes = 0
        self.writer.transport.abort()
        self.reader.feed_eof()
        self._wakeup.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._pending and not self._aborted:
                    batch = b"".join(self._pending)
                    self._pending.clear()
                    self._pending_bytes = 0
                    self.writer.write(batch)
                    await self.writer.drain()
                if self._closing and not self._pending:
                    return
        except (ConnectionError, OSError):
            self._aborted = True

    # -- reading

    async def run(self, handler: ConnectionHandler, hello_timeout_s: float,
                  keepalive_interval_s: float) -> None:
        """Serve until the peer leaves or the connection is closed."""
        loop = asyncio.get_running_loop()
        writer_task = asyncio.create_task(self._write_loop())
        hello_timer = loop.call_later(hello_timeout_s, self._hello_expired)
        keepalive_task = (asyncio.create_task(self._keepalive_loop(handler,
                                                                   keepalive_interval_s))
                          if keepalive_interval_s > 0 else None)
        try:
            await self._read_loop(handler)
        finally:
            hello_timer.cancel()
            if keepalive_task is not None:
                keepalive_task.cancel()
            self._closing = True
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(writer_task), _FLUSH_ON_CLOSE_S)
            except (TimeoutError, asyncio.CancelledError):
                writer_task.cancel()
                self.writer.transport.abort()
            self.writer.close()

    async def _read_loop(self, handler: ConnectionHandler) -> None:
        while not self._closing:
            try:
                data = await self.reader.read(_READ_CHUNK)
            except (ConnectionError, OSError):
                return
            if not data:
                if self._splitter.pending:
                    log.warning("wwks2 connection ended inside a message", connection=self.id,
                                peer=self.peer, bytes=self._splitter.pending)
                return
            try:
                frames = self._splitter.feed(data)
            except FrameTooLarge as too_large:
                for frame in too_large.frames:
                    await self._deliver(handler, frame)
                self.stats.oversized_messages += 1
                handler.on_oversized(self, too_large.limit)
                self.close(f"message longer than {too_large.limit} bytes")
                return
            for frame in frames:
                await self._deliver(handler, frame)

    async def _deliver(self, handler: ConnectionHandler, frame: bytes) -> None:
        if self._closing:
            return
        self._heard = True
        self.stats.messages_in += 1
        await handler.on_frame(self, frame)

    def _hello_expired(self) -> None:
        if not self.handshaken and not self._closing:
            self.stats.hello_timeouts += 1
            self.abort("no HelloRequest within the time WWKS2 allows")

    async def _keepalive_loop(self, handler: ConnectionHandler, interval_s: float) -> None:
        waiting = False
        while not self._closing:
            await asyncio.sleep(interval_s)
            if not self.handshaken or not self.takes("KeepAlive"):
                continue
            if waiting and not self._heard:
                self.stats.keepalive_timeouts += 1
                self.abort("no answer to the keep-alive: the client is gone")
                return
            self._heard = False
            waiting = handler.keepalive_request(self)
