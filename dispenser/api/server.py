"""The daemon's socket API: JSON-RPC 2.0, one JSON object per line, over Unix socket and TCP.

How the daemon uses it::

    registry = MethodRegistry()

    @registry.method("order.submit", roles={"order_system", "staff"}, mutating=True)
    async def submit(params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        ...  # raise ApiError(ErrorCode.INVALID_ORDER, "...", data) to refuse

    server = ApiServer(config.api, registry, on_mutating_call=audit)
    await server.start()          # listening: now call sdnotify.ready()
    server.publish({"topic": "order", "order_id": "...", "state": "picked"})
    await server.stop()

What callers may rely on:

- **Listening.** The Unix socket at ``config.socket`` (a stale socket file is removed, a live
  one or a non-socket file is an error; mode ``config.socket_mode`` is set before
  ``listen()``). TCP only when ``tcp_enabled``, with TLS when ``tls_cert``/``tls_key`` are
  set. Sockets inherited from systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``,
  from fd 3) replace the configured socket of the same family. Every listening socket
  gets the system's largest backlog (:func:`listen_backlog`), so a burst of connects
  waits in the kernel instead of failing.
- **Connection limit.** At most ``max_connections`` connections are served at once; one
  more gets a single -32020 error line (id null, ``data.max_connections``) and is closed.
- **Framing.** A line longer than ``max_message_bytes`` gets one -32600 error (id null) and
  the connection is closed. Invalid UTF-8 or JSON gets -32700 and the connection stays
  usable. Requests on one connection are handled one at a time, in order (so ``auth.login``
  followed at once by a call works); open more connections for parallel calls.
- **Sharing the loop.** After each request a connection hands the event loop back, and a
  :class:`~dispenser.api.pacing.Pacer` lets requests start only in the first
  ``turn_budget_s`` of each loop iteration, oldest waiting first: a pipelined flood on one
  connection or many never holds the loop for more than that plus one request, so the
  scheduler's cycle and the robot's watchdog refresh keep their pace.
- **Backpressure.** While more than ``reply_backlog`` bytes of replies wait to be read by
  a connection's client, the server reads no further requests from it (the kernel's
  buffers then make the client wait). A client that reads is never dropped for sending
  faster than it reads.
- **Auth.** A new connection has no role unless its Unix peer uid is mapped in
  ``peer_uids``. Without a role only ``system.ping``, ``system.info`` and ``auth.login``
  may be called (-32007 otherwise). A method declared with ``roles`` refuses other roles
  with -32005. ``roles=None`` admits every authenticated caller. Calls refused to a caller
  without a role are counted in ``refusals`` (:class:`RefusalTally`: method, reason, peer)
  and never passed to the audit hook.
- **Failures.** ``ApiError`` raised by a handler becomes the error reply. Any other
  exception is logged (without locals) and answered with -32603 and an incident id in
  ``data``; the connection survives.
- **Slow clients.** Each connection has its own write queue; ``publish`` and
  ``Caller.notify`` never wait. A client whose unread output (events included) exceeds
  ``write_buffer_limit`` bytes is disconnected (only events can get it there: replies
  stop at ``reply_backlog``); others are unaffected.
- **Events.** ``events.subscribe {"topics": [...]}`` (any of ``EVENT_TOPICS``; omitted =
  all) makes ``publish(event)`` send ``{"jsonrpc":"2.0","method":"event","params":event}``
  to that connection when ``event["topic"]`` is one of its topics (an event without a
  topic goes to every subscriber).
- **Audit.** After every call of a method declared ``mutating=True`` by a caller with a
  role — refused ones included — ``on_mutating_call(caller, method, params, outcome)`` is
  called (and awaited if it returns an awaitable) before the reply is queued. If the hook
  raises, the failure is logged and the reply is still sent: the action has already
  happened.

Size: the docstring above is the socket API's whole contract for callers, kept next to the
code that keeps it. The code is a connection (framing, the write queue, backpressure, one
request at a time) and the server (listening, the connection limit, roles, dispatch, events,
the audit hook); the promises cross that line (a reply backlog stops reading, a caller
without a role is counted, not audited), so they are read together. What has rules of its
own already lives beside it (``auth``, ``pacing``, ``protocol``, ``refusals``,
``registry``). The listening sockets (systemd activation, binding the Unix socket, TLS, the
backlog) are the part that could move out if the module grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import socket
import ssl
import stat
import time
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispenser.api.auth import Authenticator, peer_uid
from dispenser.api.pacing import DEFAULT_BUDGET_S, Pacer
from dispenser.api.protocol import (
    ApiError,
    ErrorCode,
    MessageError,
    Request,
    encode,
    error_response,
    notification,
    parse_request,
    result_response,
)
from dispenser.api.refusals import UNKNOWN_METHOD, RefusalTally
from dispenser.api.registry import (
    AuditHook,
    Caller,
    Handler,
    Method,
    MethodRegistry,
    Outcome,
    Transport,
)
from dispenser.config import ApiConfig, missing_file
from dispenser.logs import get_logger

__all__ = [
    "EVENT_TOPICS",
    "PUBLIC_METHODS",
    "ApiServer",
    "ApiStartError",
    "AuditHook",
    "Caller",
    "Handler",
    "Method",
    "MethodRegistry",
    "Outcome",
    "RefusalTally",
    "listen_backlog",
    "systemd_listen_sockets",
]

log = get_logger(__name__)

PUBLIC_METHODS = frozenset({"system.ping", "system.info", "auth.login"})
EVENT_TOPICS = frozenset({"order", "shipment", "machine", "fault", "stock", "task"})
DEFAULT_WRITE_BUFFER_LIMIT = 16 * 1024 * 1024
# Replies queued for a client beyond this pause reading its requests (one reply of any
# size is always queued).
DEFAULT_REPLY_BACKLOG = 256 * 1024
_SOMAXCONN_FILE = Path("/proc/sys/net/core/somaxconn")
_REFUSAL_LOG_EVERY_S = 10.0
_SD_LISTEN_FDS_START = 3
_FLUSH_ON_CLOSE_S = 2.0
_TLS_HANDSHAKE_S = 10.0


class ApiStartError(RuntimeError):
    """The API cannot listen (socket in use, bad TLS files, path too long ...)."""


# --------------------------------------------------------------------------- connection


class _Connection:
    def __init__(
        self,
        server: ApiServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transport: Transport,
        connection_id: int,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.id = connection_id
        uid = peer_uid(writer.get_extra_info("socket")) if transport == "unix" else None
        self.caller = Caller(connection_id, transport, uid, self.send, _peer(transport, uid,
                                                                             writer))
        self.topics: frozenset[str] | None = None
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()  # set by the writer when output has drained
        # drain() then waits until the client has taken all but a quarter of the backlog;
        # whenever the writer is idle, at most ``reply_backlog`` bytes are unread.
        writer.transport.set_write_buffer_limits(high=server.reply_backlog)
        self._closing = False
        self._aborted = False

    # -- writing: a queue per connection so one slow client never holds up another

    def send(self, message: dict[str, Any]) -> bool:
        return self.send_bytes(encode(message))

    def queued_bytes(self) -> int:
        """Output not yet taken by the client: our queue and the transport's buffer."""
        return self._pending_bytes + self.writer.transport.get_write_buffer_size()

    def send_bytes(self, data: bytes) -> bool:
        if self._closing:
            return False
        # One message is always accepted (a reply may be large); beyond that the unread
        # backlog is bounded. Replies never get here (reading pauses at reply_backlog):
        # only events for a subscriber that does not read.
        queued = self.queued_bytes()
        if queued and queued + len(data) > self.server.write_buffer_limit:
            self.abort("client does not read its messages")
            return False
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._wakeup.set()
        return True

    def close_after_flush(self) -> None:
        self._closing = True
        self._wakeup.set()

    def abort(self, reason: str) -> None:
        if self._aborted:
            return
        log.warning("api connection dropped", connection=self.id, reason=reason)
        self._closing = True
        self._aborted = True
        self._pending.clear()
        self._pending_bytes = 0
        self.writer.transport.abort()
        self.server._subscribers.discard(self)
        self._wakeup.set()
        self._room.set()

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
                self._room.set()
                if self._closing and not self._pending:
                    return
        except (ConnectionError, OSError):
            # The client is gone: nothing more will be read from it either.
            self._aborted = True
            self._closing = True
            self._room.set()

    # -- reading

    async def run(self) -> None:
        writer_task = asyncio.create_task(self._write_loop())
        log.info(
            "api connection opened",
            connection=self.id,
            transport=self.caller.transport,
            peer_uid=self.caller.peer_uid,
            role=self.caller.role,
        )
        try:
            await self._read_loop()
        finally:
            self.server._subscribers.discard(self)
            self.close_after_flush()
            try:
                await asyncio.wait_for(asyncio.shield(writer_task), _FLUSH_ON_CLOSE_S)
            except (TimeoutError, asyncio.CancelledError):
                writer_task.cancel()
                self.writer.transport.abort()
            self.writer.close()
            log.info("api connection closed", connection=self.id)

    async def _wait_for_room(self) -> None:
        """Backpressure: no further request is read while the client leaves more than
        ``reply_backlog`` bytes unread."""
        if self.queued_bytes() <= self.server.reply_backlog:
            return
        self.server.reads_paused += 1
        while not self._closing and self.queued_bytes() > self.server.reply_backlog:
            self._room.clear()
            await self._room.wait()

    async def _read_loop(self) -> None:
        limit = self.server.config.max_message_bytes
        while not self._closing:
            await self._wait_for_room()
            if self._closing:
                return
            try:
                line = await self.reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                log.warning("api message too long", connection=self.id, limit=limit)
                self.send(
                    error_response(
                        None,
                        ApiError(
                            ErrorCode.INVALID_REQUEST,
                            f"message longer than {limit} bytes; connection closed",
                            {"max_message_bytes": limit},
                        ),
                    )
                )
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():  # last message without a newline
                    await self._handle_line(exc.partial)
                return
            except (ConnectionError, OSError):
                return
            if line.strip():
                await self._handle_line(line)
            # Hand the loop back between requests: lines already buffered would otherwise
            # be handled back to back, holding up the scheduler and every other client.
            await asyncio.sleep(0)

    async def _handle_line(self, line: bytes) -> None:
        await self.server.pacer.turn()
        try:
            request = parse_request(line)
        except MessageError as error:
            if not error.notification:
                self.send(error_response(error.request_id, error))
            return
        reply = await self.server._dispatch(self.caller, request)
        if request.has_id:
            self.send_bytes(reply)


def _peer(transport: Transport, uid: int | None, writer: asyncio.StreamWriter) -> str:
    if transport == "unix":
        return f"uid:{uid}" if uid is not None else "unix"
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and address:
        return f"tcp:{address[0]}"
    return "tcp"


def listen_backlog() -> int:
    """The largest listen backlog the system allows: ``socket.SOMAXCONN`` or
    ``net.core.somaxconn``, whichever is larger (the kernel caps it anyway)."""
    try:
        configured = int(_SOMAXCONN_FILE.read_text().strip())
    except (OSError, ValueError):
        configured = 0
    return max(socket.SOMAXCONN, configured)


# --------------------------------------------------------------------------- systemd


def systemd_listen_sockets(
    environ: MutableMapping[str, str] | None = None, *, unset: bool = True
) -> list[socket.socket]:
    """Listening sockets passed by systemd socket activation (``sd_listen_fds``).

    Empty unless ``LISTEN_PID`` is this process. The variables are removed (``unset``) so
    child processes do not believe the sockets are theirs.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if not pid or not count:
        return []
    try:
        if int(pid) != os.getpid():
            return []
        n = int(count)
    except ValueError:
        return []
    sockets = []
    for fd in range(_SD_LISTEN_FDS_START, _SD_LISTEN_FDS_START + n):
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            log.warning("ignoring inherited non-stream socket", fd=fd)
            sock.detach()
            continue
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


# --------------------------------------------------------------------------- server


class ApiServer:
    """Serves a :class:`MethodRegistry` on the configured sockets; see the module docstring.

    ``inherited``: listening sockets to serve instead of binding (tests); by default the
    ones systemd passed, if any. The built-in methods ``system.ping``, ``auth.login``,
    ``events.subscribe`` and ``events.unsubscribe`` are added to ``registry``.
    """

    def __init__(
        self,
        config: ApiConfig,
        registry: MethodRegistry | None = None,
        *,
        on_mutating_call: AuditHook | None = None,
        inherited: Sequence[socket.socket] | None = None,
        write_buffer_limit: int = DEFAULT_WRITE_BUFFER_LIMIT,
        reply_backlog: int = DEFAULT_REPLY_BACKLOG,
        turn_budget_s: float = DEFAULT_BUDGET_S,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else MethodRegistry()
        self.write_buffer_limit = write_buffer_limit
        # Below the drop limit, so that replies alone never get a reading client dropped.
        self.reply_backlog = min(reply_backlog, write_buffer_limit // 2)
        self.pacer = Pacer(turn_budget_s)
        self.refusals = RefusalTally()
        self.backlog = listen_backlog()
        self.reads_paused = 0  # times a connection's reading waited for its client
        self.connections_refused = 0  # connections turned away at max_connections
        self._refusal_logged = 0.0
        self._on_mutating_call = on_mutating_call
        # Told of every call answered: (method, error code or None, seconds) (metrics).
        self.on_request: Callable[[str, int | None, float], None] | None = None
        self._inherited = list(inherited) if inherited is not None else None
        self._auth = Authenticator(config.tokens, config.peer_uids)
        self._ids = itertools.count(1)
        self._servers: list[asyncio.Server] = []
        self._connections: dict[int, _Connection] = {}
        self._subscribers: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._own_socket: tuple[Path, int] | None = None  # path and inode we created
        self._register_builtins()

    # -- lifecycle

    async def start(self) -> None:
        """Start listening; raises :class:`ApiStartError` when that is impossible."""
        inherited = self._inherited if self._inherited is not None else systemd_listen_sockets()
        tls = self._tls_context()
        limit = self.config.max_message_bytes
        backlog = self.backlog
        tcp_options: dict[str, Any] = {"limit": limit, "backlog": backlog}
        if tls is not None:
            tcp_options.update(ssl=tls, ssl_handshake_timeout=_TLS_HANDSHAKE_S)
        unix_cb = functools.partial(self._serve, "unix")
        tcp_cb = functools.partial(self._serve, "tcp")
        try:
            have_unix = have_inet = False
            for sock in inherited:
                if sock.family == socket.AF_UNIX:
                    have_unix = True
                    server = await asyncio.start_unix_server(unix_cb, sock=sock, limit=limit,
                                                             backlog=backlog)
                else:
                    have_inet = True
                    server = await asyncio.start_server(tcp_cb, sock=sock, **tcp_options)
                self._servers.append(server)
            if not have_unix:
                sock = self._bind_unix(self.config.socket, self.config.socket_mode)
                self._servers.append(
                    await asyncio.start_unix_server(unix_cb, sock=sock, limit=limit,
                                                    backlog=backlog)
                )
            if self.config.tcp_enabled and not have_inet:
                if tls is None and self.config.tcp_host not in {"127.0.0.1", "::1", "localhost"}:
                    log.warning("api tcp without tls: tokens cross the network in clear text")
                try:
                    server = await asyncio.start_server(
                        tcp_cb,
                        self.config.tcp_host,
                        self.config.tcp_port,
                        reuse_address=True,
                        **tcp_options,
                    )
                except OSError as exc:
                    raise ApiStartError(
                        f"cannot listen on {self.config.tcp_host}:{self.config.tcp_port}: "
                        f"{exc.strerror or exc}"
                    ) from None
                self._servers.append(server)
        except BaseException:
            await self.stop()
            raise
        log.info("api listening", addresses=self.addresses, tls=tls is not None)

    async def stop(self) -> None:
        """Stop listening, close every connection, remove the socket file we created."""
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.reader.feed_eof()  # ends idle connections the normal way
        await asyncio.sleep(0)
        for task in list(self._tasks):
            task.cancel()  # the rest: a handler is still running
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_FLUSH_ON_CLOSE_S + 1)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
        self._servers.clear()
        if self._own_socket is not None:
            path, inode = self._own_socket
            with contextlib.suppress(OSError):
                if os.lstat(path).st_ino == inode:
                    path.unlink()
            self._own_socket = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def addresses(self) -> list[str]:
        """What we listen on: socket paths and ``host:port`` strings."""
        found = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    host = f"[{name[0]}]" if ":" in name[0] else name[0]
                    found.append(f"{host}:{name[1]}")
                else:
                    found.append(name if isinstance(name, str) else name.decode(errors="replace"))
        return found

    @property
    def tcp_port(self) -> int | None:
        """The bound TCP port (useful with ``tcp_port = 0``)."""
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    return int(name[1])
        return None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def stats(self) -> dict[str, Any]:
        """Connections and refusals since the start, for ``diag.stats``."""
        return {
            "connections": len(self._connections),
            "max_connections": self.config.max_connections,
            "connections_refused": self.connections_refused,
            "listen_backlog": self.backlog,
            "reads_paused": self.reads_paused,
            "requests_deferred": self.pacer.deferred,
            "refused_without_role": self.refusals.totals(),
        }

    # -- events

    def publish(self, event: dict[str, Any]) -> int:
        """Queue an event to every matching subscriber; returns how many got it. Never waits."""
        topic = event.get("topic")
        data = encode(notification("event", event))
        sent = 0
        for connection in list(self._subscribers):
            if connection.topics is None or topic is None or topic in connection.topics:
                sent += connection.send_bytes(data)
        return sent

    # -- internals

    def _tls_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is None or key is None:
            return None
        for name, path in (("api.tls_cert", cert), ("api.tls_key", key)):
            if not os.path.exists(path):
                raise ApiStartError(f"cannot load TLS certificate {cert} / key {key}: "
                                    f"{missing_file(name, Path(path))}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ApiStartError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from None
        return context

    def _bind_unix(self, path: Path, mode: int) -> socket.socket:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ApiStartError(f"{path} exists and is not a socket; not replacing it")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1)
                try:
                    probe.connect(str(path))
                except (ConnectionRefusedError, FileNotFoundError):
                    path.unlink(missing_ok=True)  # stale: left by a process that died
                except OSError as exc:
                    raise ApiStartError(f"cannot check socket {path}: {exc}") from None
                else:
                    raise ApiStartError(f"another process is already serving {path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            # Before listen(): nobody can connect while the mode is still the umask's.
            os.chmod(path, mode)
            sock.listen(self.backlog)
        except OSError as exc:
            sock.close()
            raise ApiStartError(f"cannot listen on {path}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self._own_socket = (path, os.lstat(path).st_ino)
        return sock

    async def _serve(
        self, transport: Transport, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self._connections) >= self.config.max_connections:
            await self._refuse_connection(writer)
            return
        task = asyncio.current_task()
        connection = _Connection(self, reader, writer, transport, next(self._ids))
        identity = self._auth.check_uid(connection.caller.peer_uid)
        if identity is not None:
            connection.caller.authenticate(identity)
        self._connections[connection.id] = connection
        if task is not None:
            self._tasks.add(task)
        try:
            await connection.run()
        except asyncio.CancelledError:
            # Only stop() cancels a connection; nobody awaits this task, and asyncio's
            # done-callback would report a cancelled one as an unhandled error.
            pass
        finally:
            self._connections.pop(connection.id, None)
            if task is not None:
                self._tasks.discard(task)

    async def _refuse_connection(self, writer: asyncio.StreamWriter) -> None:
        """One error line saying why, then close: the client knows it was not a fault."""
        self.connections_refused += 1
        limit = self.config.max_connections
        now = time.monotonic()
        if now - self._refusal_logged >= _REFUSAL_LOG_EVERY_S:
            self._refusal_logged = now
            log.warning("api connection refused: limit reached", max_connections=limit,
                        refused_so_far=self.connections_refused)
        error = ApiError(
            ErrorCode.TOO_MANY_CONNECTIONS,
            f"the dispenser serves at most {limit} connections at once; "
            "close one or try again later",
            {"max_connections": limit},
        )
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(encode(error_response(None, error)))
            await asyncio.wait_for(writer.drain(), _FLUSH_ON_CLOSE_S)
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), _FLUSH_ON_CLOSE_S)

    async def _dispatch(self, caller: Caller, request: Request) -> bytes:
        started = time.perf_counter()
        method = self.registry.get(request.method)
        if method is None:
            error = ApiError(ErrorCode.METHOD_NOT_FOUND, f"no such method: {request.method!r}")
            if caller.role is None:
                self.refusals.count(caller.peer, UNKNOWN_METHOD, _reason(error))
            self._told(request.method, error, started)
            return encode(error_response(request.id, error))
        try:
            self._authorize(method, caller)
            result = await method.handler(dict(request.params), caller)
            reply = encode(result_response(request.id, result))
            outcome = Outcome(ok=True, result=result)
        except ApiError as exc:
            reply = encode(error_response(request.id, exc))
            outcome = Outcome(ok=False, error=exc)
        except Exception:
            incident = secrets.token_hex(4)
            log.exception(
                "api handler failed",
                method=method.name,
                connection=caller.connection_id,
                incident=incident,
            )
            error = ApiError(
                ErrorCode.INTERNAL_ERROR,
                f"internal error; the dispenser logged it as incident {incident}",
                {"incident": incident},
            )
            reply = encode(error_response(request.id, error))
            outcome = Outcome(ok=False, error=error)
        if caller.role is None:
            # Anybody can send these: counted, never written one by one (see refusals.py).
            if not outcome.ok and outcome.error is not None:
                self.refusals.count(caller.peer, method.name, _reason(outcome.error))
        elif method.mutating and self._on_mutating_call is not None:
            await self._audit(caller, method.name, request.params, outcome)
        self._told(method.name, outcome.error, started)
        return reply

    def _told(self, method: str, error: ApiError | None, started: float) -> None:
        if self.on_request is None:
            return
        try:
            self.on_request(method, None if error is None else int(error.code),
                            time.perf_counter() - started)
        except Exception:
            log.exception("request hook failed", method=method)

    def _authorize(self, method: Method, caller: Caller) -> None:
        if method.name in PUBLIC_METHODS:
            return
        if caller.role is None:
            raise ApiError(
                ErrorCode.UNAUTHENTICATED,
                f"{method.name} needs a login: call auth.login with your token first",
            )
        if method.roles is not None and caller.role not in method.roles:
            raise ApiError(
                ErrorCode.FORBIDDEN,
                f"role {caller.role!r} may not call {method.name}",
                {"role": caller.role, "allowed_roles": sorted(method.roles)},
            )

    async def _audit(
        self, caller: Caller, method: str, params: dict[str, Any], outcome: Outcome
    ) -> None:
        assert self._on_mutating_call is not None
        try:
            pending = self._on_mutating_call(caller, method, params, outcome)
            if pending is not None:
                await pending
        except Exception:
            log.exception("audit hook failed", method=method, connection=caller.connection_id)

    # -- built-in methods

    def _register_builtins(self) -> None:
        self.registry.add("system.ping", self._ping)
        self.registry.add("auth.login", self._login)
        self.registry.add("events.subscribe", self._subscribe)
        self.registry.add("events.unsubscribe", self._unsubscribe)

    async def _ping(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _no_other_params("system.ping", params, set())
        return {"pong": True, "time": datetime.now(UTC).isoformat(timespec="milliseconds")}

    async def _login(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _no_other_params("auth.login", params, {"token"})
        token = params.get("token")
        if not isinstance(token, str) or not token:
            raise _invalid_params('auth.login takes exactly {"token": "..."}', "token",
                                  "must be a non-empty string")
        identity = self._auth.check_token(token)
        if identity is None:
            log.warning("api login refused", connection=caller.connection_id)
            raise ApiError(ErrorCode.UNAUTHENTICATED, "token not accepted")
        caller.authenticate(identity)
        log.info(
            "api login",
            connection=caller.connection_id,
            role=identity.role,
            principal=identity.principal,
        )
        return {"role": identity.role}

    async def _subscribe(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _no_other_params("events.subscribe", params, {"topics"})
        topics = params.get("topics")
        if topics is None:
            chosen = None
        elif (
            isinstance(topics, list)
            and topics
            and all(isinstance(t, str) and t in EVENT_TOPICS for t in topics)
        ):
            chosen = frozenset(topics)
        else:
            raise _invalid_params(
                f'"topics" must be a non-empty list of: {", ".join(sorted(EVENT_TOPICS))}',
                "topics",
                f"must be a non-empty list of: {', '.join(sorted(EVENT_TOPICS))}",
                topics=sorted(EVENT_TOPICS),
            )
        connection = self._connections[caller.connection_id]
        connection.topics = chosen
        self._subscribers.add(connection)
        return {"topics": sorted(chosen if chosen is not None else EVENT_TOPICS)}

    async def _unsubscribe(self, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _no_other_params("events.unsubscribe", params, set())
        self._subscribers.discard(self._connections[caller.connection_id])
        return {"topics": []}


def _reason(error: ApiError) -> str:
    """A refusal's reason code: the error code's name (``unauthenticated`` ...)."""
    code = error.code
    return code.name.lower() if isinstance(code, ErrorCode) else str(int(code))


def _invalid_params(message: str, path: str, problem: str, **data: Any) -> ApiError:
    """-32602 in the documented form: ``data.errors`` lists ``{path, message}``."""
    return ApiError(ErrorCode.INVALID_PARAMS, message,
                    {"errors": [{"path": path, "message": problem}], **data})


def _no_other_params(method: str, params: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        takes = ", ".join(f'"{k}"' for k in sorted(known)) or "no params"
        raise ApiError(
            ErrorCode.INVALID_PARAMS,
            f"{method} takes {takes}; unknown: {', '.join(unknown)}",
            {"errors": [{"path": k, "message": "unknown parameter"} for k in unknown]},
        )
