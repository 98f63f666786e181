"""Client for the dispenser's socket API (asyncio, plus a small blocking wrapper).

::

    async with await ApiClient.connect("/run/dispenser/api.sock", token=token) as client:
        info = await client.call("system.ping")
        async for event in client.subscribe(["order", "fault"]):
            ...

``address`` is a Unix socket path or ``host:port`` (``[::1]:7460`` for IPv6). ``tls`` is
an :class:`ssl.SSLContext`, ``True`` for the system's default verification, or None.
A refused call raises :class:`~dispenser.api.protocol.ApiError` with the server's
``code``/``message``/``data``; a lost connection raises :class:`ConnectionError`.

:class:`SyncApiClient` offers ``call`` for the CLI and tests that are not async.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

from dispenser.api.protocol import ApiError, encode, notification

__all__ = ["ApiClient", "SyncApiClient", "parse_address"]

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>\d{1,5})$")
_DEFAULT_LIMIT = 64 * 1024 * 1024  # replies (stock lists) may be far larger than requests


def parse_address(address: str | os.PathLike[str]) -> tuple[str, int] | str:
    """``(host, port)`` for a TCP address, the path (str) for a Unix socket."""
    if isinstance(address, os.PathLike):
        return os.fspath(address)
    match = _HOST_PORT.match(address)
    if match and "/" not in address:
        return (match["v6"] or match["host"], int(match["port"]))
    return address


class ApiClient:
    """One connection to the API. Create with :meth:`connect`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # Notifications other than events (a handler's caller.notify): (method, params).
        self.notifications: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._closed = False
        self._reader_task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        address: str | os.PathLike[str],
        *,
        tls: ssl.SSLContext | bool | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        limit: int = _DEFAULT_LIMIT,
    ) -> ApiClient:
        """Open a connection (and log in when ``token`` is given)."""
        target = parse_address(address)
        async with asyncio.timeout(timeout):
            if isinstance(target, tuple):
                host, port = target
                context = ssl.create_default_context() if tls is True else tls or None
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, limit=limit, server_hostname=host if context else None
                )
            else:
                if tls:
                    raise ValueError("TLS is for TCP addresses; a Unix socket is local")
                reader, writer = await asyncio.open_unix_connection(target, limit=limit)
        client = cls(reader, writer)
        if token is not None:
            try:
                await client.login(token, timeout=timeout)
            except BaseException:
                await client.close()
                raise
        return client

    # -- calls

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = 30.0
    ) -> Any:
        """Send a request and wait for its result; raises ApiError on an error reply."""
        if self._closed:
            raise ConnectionError("API connection is closed")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            self._writer.write(encode(message))
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification (no reply, no error even if it fails)."""
        self._writer.write(encode(notification(method, params or {})))
        await self._writer.drain()

    async def login(self, token: str, *, timeout: float | None = 30.0) -> str:
        """Authenticate this connection; returns the role granted."""
        result = await self.call("auth.login", {"token": token}, timeout=timeout)
        return str(result["role"])

    async def subscribe(self, topics: Iterable[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Subscribe, then yield each event's params until the connection closes."""
        params = {"topics": list(topics)} if topics is not None else {}
        await self.call("events.subscribe", params)
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    # -- lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        self._writer.close()  # also after the server closed: our half is still open
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await self._reader_task
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals

    async def _read_loop(self) -> None:
        reason: BaseException = ConnectionError("API connection closed by the server")
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    message = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    reason = ConnectionError("API server sent a malformed message")
                    break
                if isinstance(message, dict):
                    self._dispatch(message)
        except (ConnectionError, OSError, asyncio.LimitOverrunError, ValueError) as exc:
            reason = ConnectionError(f"API connection lost: {exc}")
        finally:
            self._closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(reason)
            self._events.put_nowait(None)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" not in message:
            params = message.get("params")
            if message["method"] == "event" and isinstance(params, dict):
                self._events.put_nowait(params)
            else:
                self.notifications.put_nowait((str(message["method"]), params))
            return
        request_id = message.get("id")
        if request_id is None and "error" in message:
            # Not tied to a request (oversize message, unreadable request): the connection is
            # unusable, so every waiting call learns why.
            error = ApiError.from_error(message["error"])
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_exception(error)
            return
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(ApiError.from_error(message["error"]))
        else:
            future.set_result(message.get("result"))


class SyncApiClient:
    """Blocking wrapper over :class:`ApiClient` with its own event loop (CLI, scripts)."""

    def __init__(
        self,
        address: str | os.PathLike[str],
        *,
        tls: ssl.SSLContext | bool | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._client = self._loop.run_until_complete(
                ApiClient.connect(address, tls=tls, token=token, timeout=timeout)
            )
        except BaseException:
            self._loop.close()
            raise

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = 30.0
    ) -> Any:
        return self._loop.run_until_complete(self._client.call(method, params, timeout=timeout))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def __enter__(self) -> SyncApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
