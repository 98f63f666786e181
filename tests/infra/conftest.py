"""Fixtures for the API tests: a real server on a real Unix socket (and TCP when asked)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from dispenser.api.auth import hash_token
from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.api.server import ApiServer, Caller, MethodRegistry, Outcome
from dispenser.config import ApiConfig, TokenConfig
from dispenser.logs import configure_logging

TOKENS = {
    "order_system": "order-system-token-0123456789",
    "staff": "staff-token-0123456789",
    "technician": "technician-token-0123456789",
}


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """Everything logged during the test, as JSON lines; logging is reset afterwards."""
    out = io.StringIO()
    configure_logging("debug", "json", out)
    yield out
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the 108-byte limit of a Unix socket path.
    path = Path(tempfile.mkdtemp(prefix="dsp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def api_config(sock_dir: Path, **overrides: Any) -> ApiConfig:
    values: dict[str, Any] = {
        "socket": sock_dir / "api.sock",
        "tokens": [
            TokenConfig(role=role, hash=hash_token(token), label=f"{role}-holder")  # type: ignore[arg-type]
            for role, token in TOKENS.items()
        ],
    }
    values.update(overrides)
    return ApiConfig(**values)


class Audit(list[tuple[tuple[str | None, str | None], str, dict[str, Any], Outcome]]):
    """Records (role, principal) as they were at the time of each call."""

    async def __call__(
        self, caller: Caller, method: str, params: dict[str, Any], outcome: Outcome
    ) -> None:
        self.append(((caller.role, caller.principal), method, params, outcome))


def build_registry() -> MethodRegistry:
    registry = MethodRegistry()

    @registry.method("system.info")
    async def info(params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {"product": "dispenser"}

    @registry.method("order.submit", roles={"order_system", "staff"}, mutating=True)
    async def submit(params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        if "order_id" not in params:
            raise ApiError(ErrorCode.INVALID_ORDER, "order refused", {"errors": ["order_id"]})
        return {"order_id": params["order_id"], "by": caller.principal}

    @registry.method("machine.reset", roles={"technician"}, mutating=True)
    async def reset(params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        return {"reset": True}

    @registry.method("test.boom")
    async def boom(params: dict[str, Any], caller: Caller) -> None:
        patient_name = params["who"]
        raise RuntimeError("handler bug " + str(len(patient_name)))

    @registry.method("test.sleep")
    async def sleep(params: dict[str, Any], caller: Caller) -> str:
        await asyncio.sleep(float(params["s"]))
        return "slept"

    @registry.method("test.notify")
    async def notify(params: dict[str, Any], caller: Caller) -> bool:
        return caller.notify("test.progress", {"step": 1})

    @registry.method("test.unjsonable")
    async def unjsonable(params: dict[str, Any], caller: Caller) -> object:
        return object()

    return registry


ServerFactory = Callable[..., Awaitable[ApiServer]]


@pytest.fixture
async def make_server(sock_dir: Path) -> AsyncIterator[ServerFactory]:
    servers: list[ApiServer] = []

    async def make(audit: Any = None, **overrides: Any) -> ApiServer:
        kwargs = {
            k: overrides.pop(k)
            for k in ("inherited", "write_buffer_limit", "reply_backlog", "turn_budget_s")
            if k in overrides
        }
        server = ApiServer(
            api_config(sock_dir, **overrides), build_registry(), on_mutating_call=audit, **kwargs
        )
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> ApiServer:
    return await make_server()


class Raw:
    """A raw line-level connection, to send exactly the bytes a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Raw:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**24)
        return cls(reader, writer)

    async def send(self, data: bytes | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line, "connection closed"
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    async def rpc(self, data: bytes | dict[str, Any]) -> dict[str, Any]:
        await self.send(data)
        return await self.recv()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@pytest.fixture
async def raw(server: ApiServer, sock_dir: Path) -> AsyncIterator[Raw]:
    connection = await Raw.open(sock_dir / "api.sock")
    yield connection
    await connection.close()


def ping(request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "system.ping"}
