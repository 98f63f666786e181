"""The WWKS2 server: pharmacy software connects here and drives the machine.

How the daemon uses it::

    server = Wwks2Server(config.wwks2, backend)   # backend: a Wwks2Backend
    await server.start()
    server.output_finished(outcome)                # the machine reports (Wwks2Events)
    server.stock_changed(["A1"])
    answer = await server.request_input(pack)
    await server.stop()

What callers may rely on (details in docs/wwks2.md):

- **Connections.** One asyncio task per connection. A peer whose address is not in
  ``allowed_clients`` is closed at once and counted (``refused``). The first message must be
  HelloRequest; any other message before it is answered with UnprocessedMessage, and a
  connection without a HelloRequest after :data:`HELLO_TIMEOUT_S` is closed.
- **Answers.** A response goes to the requesting connection only. A message that cannot be
  processed (not XML, not supported, bad data) is answered with UnprocessedMessage and the
  connection goes on; only a message over ``max_message_bytes`` closes it.
- **Unsolicited messages** (OutputMessage, StockInfoMessage, InputRequest, InputMessage)
  go to every handshaken client, each addressed to its own subscriber id; InputRequest
  only to clients that announced Input. An OutputMessage never precedes the OutputResponse
  (or TaskCancelResponse) of its task, and none follows a Rejected OutputResponse.
- **StockInfoMessage** broadcasts are coalesced: the articles changed since the last one,
  at most one message per ``stock_message_interval_s``.
- **Never blocking the loop.** Messages over 64 KiB are parsed, and stock with many packs
  is turned into messages and encoded, in a worker thread.

Size: just over the line. The server holds the connections, and each unsolicited message is
a send over them with an ordering promise kept here (OutputMessages held while their task's
response is made, stock changes coalesced, an InputRequest waiting for its answer). The
per-connection protocol, the message handlers, framing and the messages themselves are
already apart (``connection``, ``handlers``, ``framing``, ``model``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata

from dispenser.logs import get_logger
from dispenser.wwks2.backend import (
    ArticleStock,
    InputAnswer,
    InputOutcome,
    OutputOutcome,
    ScannedPack,
    StockFilter,
    StockQuery,
    TaskKey,
    Wwks2Backend,
    Wwks2Events,
)
from dispenser.wwks2.bulk import no_gc_passes
from dispenser.wwks2.config import Wwks2Config
from dispenser.wwks2.connection import Connection
from dispenser.wwks2.errors import UnprocessedError
from dispenser.wwks2.handlers import MessageHandlers
from dispenser.wwks2.mapping import (
    article_elements,
    input_answer,
    input_message_articles,
    input_request_articles,
    output_message,
)
from dispenser.wwks2.messages import (
    Article,
    Envelope,
    InputMessage,
    InputRequest,
    InputResponse,
    KeepAliveRequest,
    OriginalMessage,
    StockInfoMessage,
    UnprocessedMessage,
    decode_message,
)
from dispenser.wwks2.model import encode
from dispenser.wwks2.xmlio import encode_envelope, parse_envelope, to_wire

__all__ = ["HELLO_TIMEOUT_S", "Wwks2Server", "Wwks2Stats"]

log = get_logger(__name__)

# WWKS2 (M622 3.1.2): a client that has not said Hello 5 s after connecting is closed.
HELLO_TIMEOUT_S = 5.0
# Parse messages this large, and encode responses with this many packs, off the loop.
_PARSE_IN_THREAD_BYTES = 64 * 1024
_ENCODE_IN_THREAD_PACKS = 256
# How much of an unprocessable message is echoed back in UnprocessedMessage.
_ECHO_BYTES = 16 * 1024
_WRITE_BUFFER_LIMIT = 64 * 1024 * 1024
_STOP_WAIT_S = 3.0


@dataclasses.dataclass
class Wwks2Stats:
    """Counters since start, for ``diag stats``; see :meth:`Wwks2Server.snapshot`."""

    accepted: int = 0  # connections let in
    refused: int = 0  # connections from an address not in allowed_clients
    messages_in: int = 0
    messages_out: int = 0
    unprocessed: int = 0  # messages answered with UnprocessedMessage
    oversized_messages: int = 0  # connections closed for a message over the limit
    hello_timeouts: int = 0
    keepalive_timeouts: int = 0
    outputs_queued: int = 0
    outputs_rejected: int = 0


@dataclasses.dataclass
class _Hold:
    """OutputMessages held back while their task's response is being written."""

    queued: bool = True
    outcomes: list[OutputOutcome] = dataclasses.field(default_factory=list)


def _version() -> str:
    try:
        return metadata.version("dispenser")
    except metadata.PackageNotFoundError:
        return "0"


class Wwks2Server:
    """The storage system's side of WWKS2 over TCP; implements
    :class:`~dispenser.wwks2.backend.Wwks2Events` for the machine."""

    def __init__(self, config: Wwks2Config, backend: Wwks2Backend) -> None:
        self.config = config
        self.backend = backend
        self.version = _version()
        self.stats = Wwks2Stats()
        self.handlers = MessageHandlers(self)
        self._server: asyncio.Server | None = None
        self._connections: dict[int, Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection_ids = itertools.count(1)
        # Numeric message ids (the pharmacy client library parses some as integers),
        # starting from the clock so that a restarted server does not reuse recent ones.
        self._message_ids = itertools.count((int(time.time()) % 2_000_000) * 1000 + 1)
        self._holds: dict[TaskKey, _Hold] = {}
        self._input_waiters: dict[str, tuple[asyncio.Future[InputAnswer], str]] = {}
        self._stock_dirty: set[str] = set()
        self._stock_task: asyncio.Task[None] | None = None
        self._last_stock_message = -1e9

    # -- lifecycle

    async def start(self) -> None:
        """Listen on ``host:port``; raises OSError when that is impossible."""
        self._server = await asyncio.start_server(
            self._serve, self.config.host, self.config.port, reuse_address=True)
        log.info("wwks2 listening", address=f"{self.config.host}:{self.port}",
                 subscriber=self.config.subscriber_id)

    async def stop(self) -> None:
        """Stop listening and close every connection; pending input requests get
        ``NoAnswer``."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.values()):
            connection.close("the storage system is stopping")
        if self._stock_task is not None:
            self._stock_task.cancel()
        for request_id, (future, _) in self._input_waiters.items():
            if not future.done():
                future.set_result(InputAnswer(request_id, "NoAnswer",
                                              "the storage system is stopping"))
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=_STOP_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None

    async def __aenter__(self) -> Wwks2Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int | None:
        """The bound port (useful with ``port = 0``)."""
        if self._server is None:
            return None
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        return None

    def clients(self) -> list[Connection]:
        """Handshaken connections, in the order they connected."""
        return [c for c in self._connections.values() if c.handshaken and not c.closing]

    def snapshot(self) -> dict[str, int]:
        """Counters and current connections, for status and diagnostics."""
        return {"connections": len(self._connections), "clients": len(self.clients()),
                **dataclasses.asdict(self.stats)}

    def next_id(self) -> int:
        return next(self._message_ids)

    # -- connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        host = str(peername[0]) if isinstance(peername, tuple) else "unknown"
        if not self.config.allows(host):
            self.stats.refused += 1
            log.warning("wwks2 connection refused: address not in allowed_clients", peer=host)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        connection = Connection(connection_id=next(self._connection_ids), peer=host,
                                reader=reader, writer=writer, stats=self.stats,
                                max_message_bytes=self.config.max_message_bytes,
                                write_buffer_limit=_WRITE_BUFFER_LIMIT)
        self._connections[connection.id] = connection
        self.stats.accepted += 1
        if task is not None:
            self._tasks.add(task)
        log.info("wwks2 connection opened", connection=connection.id, peer=host)
        try:
            await connection.run(self, HELLO_TIMEOUT_S, self.config.keepalive_interval_s)
        except asyncio.CancelledError:
            pass  # only stop() cancels; nobody awaits this task
        finally:
            self._connections.pop(connection.id, None)
            if task is not None:
                self._tasks.discard(task)
            log.info("wwks2 connection closed", connection=connection.id, peer=host,
                     subscriber=connection.subscriber_id)

    async def on_frame(self, connection: Connection, frame: bytes) -> None:
        message: Envelope | None = None
        try:
            if len(frame) > _PARSE_IN_THREAD_BYTES:
                message = await asyncio.to_thread(self._decode, frame)
            else:
                message = self._decode(frame)
            await self.handlers.handle(connection, message)
        except UnprocessedError as error:
            self._unprocessed(connection, error, frame)
        except Exception:
            # A defect must not cost the client its connection (and its other tasks).
            incident = secrets.token_hex(4)
            log.exception("wwks2 message handling failed", connection=connection.id,
                          incident=incident)
            self._unprocessed(connection, UnprocessedError(
                f"the storage system failed on this message (incident {incident})",
                message_id=message.id if message else None,
                lead=message.TAG if message else None), frame)

    @staticmethod
    def _decode(frame: bytes) -> Envelope:
        return decode_message(parse_envelope(frame))

    def on_oversized(self, connection: Connection, limit: int) -> None:
        self.stats.unprocessed += 1
        connection.send(UnprocessedMessage(
            id=str(self.next_id()), source=self.config.subscriber_id,
            destination=connection.subscriber_id, reason="DataError",
            text=f"message longer than {limit} bytes (max_message_bytes); the connection is "
                 "closed"))

    def keepalive_request(self, connection: Connection) -> bool:
        return connection.send(KeepAliveRequest(
            id=str(self.next_id()), source=self.config.subscriber_id,
            destination=connection.subscriber_id))

    def _unprocessed(self, connection: Connection, error: UnprocessedError,
                     frame: bytes) -> None:
        self.stats.unprocessed += 1
        log.warning("wwks2 message not processed", connection=connection.id,
                    peer=connection.peer, reason=error.reason, message=error.lead,
                    message_id=error.message_id, problem=error.text)
        echo = frame[:_ECHO_BYTES].decode("utf-8", errors="replace")
        if len(frame) > _ECHO_BYTES:
            echo += f" ... ({len(frame)} bytes)"
        connection.send(UnprocessedMessage(
            id=str(self.next_id()), source=self.config.subscriber_id,
            destination=connection.subscriber_id, reason=error.reason, text=error.text,
            message=OriginalMessage(id=error.message_id, text=echo)))

    async def send_stock(self, connections: Sequence[Connection],
                         make: Callable[[Connection, tuple[Article, ...]], Envelope],
                         stock: Sequence[ArticleStock], include_packs: bool,
                         include_details: bool) -> None:
        """Send a stock message (``make`` builds it per connection, from the articles
        and with no others). With many packs to write (packs times connections) the
        articles are built and the messages encoded in a worker thread, so 20,000 packs,
        or a change broadcast to many clients, never hold the loop; the articles' elements
        are then made once and shared by every connection's message."""
        packs = sum(len(a.packs) for a in stock) if include_packs else 0
        if packs * len(connections) <= _ENCODE_IN_THREAD_PACKS:
            articles = article_elements(stock, include_packs, include_details)
            for connection in connections:
                connection.send(make(connection, articles))
            return

        def encode_all() -> list[bytes]:
            with no_gc_passes():
                shared = [encode(a) for a in article_elements(stock, include_packs,
                                                              include_details)]
                out = []
                for c in connections:
                    lead = encode(make(c, ()))
                    lead.extend(shared)
                    out.append(encode_envelope(lead))
                return out

        for connection, data in zip(connections, await asyncio.to_thread(encode_all),
                                    strict=True):
            connection.send_bytes(data)

    def incident(self, what: str, message: Envelope) -> str:
        """Log the current exception as an incident; returns its id. Call in ``except``."""
        incident = secrets.token_hex(4)
        log.exception("wwks2 backend failed", what=what, message=message.TAG,
                      message_id=message.id, incident=incident)
        return incident

    # -- outputs

    @contextlib.contextmanager
    def responding(self, *keys: TaskKey) -> Iterator[_Hold]:
        """While a task's response is being made, hold its OutputMessages; send them after
        the response (when ``queued`` stays True), drop them otherwise."""
        hold = _Hold()
        mine = [k for k in keys if k not in self._holds]
        for key in mine:
            self._holds[key] = hold
        try:
            yield hold
        finally:
            for key in mine:
                del self._holds[key]
            for outcome in hold.outcomes:
                if hold.queued:
                    self._broadcast_outcome(outcome)
                else:
                    log.error("wwks2 outcome of a rejected output dropped",
                              task=outcome.key.task_id if outcome.key else "1")

    def output_finished(self, outcome: OutputOutcome) -> bool:
        if outcome.key is not None and outcome.key in self._holds:
            self._holds[outcome.key].outcomes.append(outcome)
            return True
        return self._broadcast_outcome(outcome)

    def _broadcast_outcome(self, outcome: OutputOutcome) -> bool:
        delivered = False
        for connection in self.clients():
            sent = connection.send(output_message(outcome, self.config.subscriber_id,
                                                  connection.subscriber_id or 0, self.config))
            if sent and (outcome.key is None
                         or connection.subscriber_id == outcome.key.subscriber_id):
                delivered = True
        return delivered

    async def send_pending_outcomes(self, connection: Connection) -> None:
        """After a client's first Hello: the outcomes it missed while away."""
        subscriber = connection.subscriber_id
        if subscriber is None:
            return
        try:
            outcomes = await self.backend.pending_outcomes(subscriber)
            sent = [o.key for o in outcomes if o.key is not None and connection.send(
                output_message(o, self.config.subscriber_id, subscriber, self.config))]
            if sent:
                await self.backend.outcomes_delivered(sent)
        except Exception:
            log.exception("wwks2 pending outcomes not sent", subscriber=subscriber)

    # -- stock

    def stock_changed(self, article_ids: Iterable[str]) -> None:
        self._stock_dirty.update(article_ids)
        if self._stock_dirty and (self._stock_task is None or self._stock_task.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: nobody to tell
                self._stock_task = asyncio.get_running_loop().create_task(self._stock_flush())

    async def _stock_flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._stock_dirty:
            wait = self._last_stock_message + self.config.stock_message_interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            changed = sorted(self._stock_dirty)
            self._stock_dirty.clear()
            if not self.clients():
                continue
            self._last_stock_message = loop.time()
            query = StockQuery(filters=tuple(StockFilter(article_id=a) for a in changed),
                               include_packs=True, include_article_details=True)
            try:
                stock = await self.backend.stock(query)
            except Exception:
                log.exception("wwks2 stock message not sent", articles=len(changed))
                continue
            reported = {a.article_id for a in stock}
            gone = tuple(Article(id=to_wire(a), quantity=0) for a in changed
                         if a not in reported)

            def message(connection: Connection, articles: tuple[Article, ...],
                        gone: tuple[Article, ...] = gone) -> Envelope:
                return StockInfoMessage(
                    id=str(self.next_id()), source=self.config.subscriber_id,
                    destination=connection.subscriber_id, articles=articles + gone)

            await self.send_stock(self.clients(), message, stock, True, True)

    # -- input

    async def request_input(self, pack: ScannedPack, *, request_id: str | None = None,
                            is_new_delivery: bool = False,
                            set_picking_indicator: bool = False) -> InputAnswer:
        request_id = request_id or str(self.next_id())
        clients = [c for c in self.clients() if c.takes("Input")]
        if not clients:
            return InputAnswer(request_id, "NoAnswer",
                               "no pharmacy software that takes InputRequest is connected")
        future: asyncio.Future[InputAnswer] = asyncio.get_running_loop().create_future()
        self._input_waiters[request_id] = (future, pack.scan_code)
        articles = input_request_articles(pack)
        for connection in clients:
            connection.send(InputRequest(
                id=request_id, source=self.config.subscriber_id,
                destination=connection.subscriber_id, is_new_delivery=is_new_delivery,
                set_picking_indicator=set_picking_indicator, articles=articles))
        timeout = self.config.input_timeout_s
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return InputAnswer(request_id, "NoAnswer", f"no answer within {timeout:g} s")
        finally:
            if self._input_waiters.get(request_id, (None,))[0] is future:
                del self._input_waiters[request_id]

    def answer_input(self, response: InputResponse) -> bool:
        """Hand an InputResponse to the request waiting for it; False if none waits."""
        waiter = self._input_waiters.get(response.id)
        if waiter is None or waiter[0].done():
            return False
        future, scan_code = waiter
        future.set_result(input_answer(response, response.id, scan_code))
        return True

    def input_finished(self, outcome: InputOutcome) -> None:
        message_id = outcome.request_id or str(self.next_id())
        articles = input_message_articles(outcome)
        for connection in self.clients():
            connection.send(InputMessage(id=message_id, source=self.config.subscriber_id,
                                         destination=connection.subscriber_id,
                                         articles=articles))




def _implements_events(server: Wwks2Server) -> Wwks2Events:
    """Static check (mypy): the server is what the machine reports to."""
    return server
