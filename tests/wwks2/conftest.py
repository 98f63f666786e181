"""Fixtures for the WWKS2 tests: a real server on loopback TCP, the in-memory protocol
fixture behind it, and IMS test clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import pytest

from dispenser.testing.ims_client import ImsClient
from dispenser.wwks2.config import Wwks2Config
from dispenser.wwks2.server import Wwks2Server

from .memory_backend import MemoryBackend

ServerFactory = Callable[..., Awaitable[Wwks2Server]]
ClientFactory = Callable[..., Awaitable[ImsClient]]


@pytest.fixture
def backend() -> MemoryBackend:
    machine = MemoryBackend()
    machine.add_pack("A1", 501, batch="B7", expiry=date(2027, 3, 31),
                     scan_code="0104150123456789\x1d10B7")
    machine.add_pack("A1", 502, batch="B8", expiry=date(2026, 1, 31))
    machine.add_pack("A2", 601, batch="C1", expiry=date(2028, 6, 30), name="Insulin pen")
    return machine


@pytest.fixture
async def make_server(backend: MemoryBackend) -> AsyncIterator[ServerFactory]:
    started: list[Wwks2Server] = []

    async def make(**overrides: Any) -> Wwks2Server:
        values: dict[str, Any] = {"enabled": True, "port": 0, "input_mode": "wwks2",
                                  "input_timeout_s": 5.0}
        values.update(overrides)
        server = Wwks2Server(Wwks2Config(**values), backend)
        backend.events = server
        await server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> Wwks2Server:
    return await make_server()


@pytest.fixture
async def connect(server: Wwks2Server) -> AsyncIterator[ClientFactory]:
    clients: list[ImsClient] = []

    async def open_client(*, hello: bool = True, target: Wwks2Server | None = None,
                          **options: Any) -> ImsClient:
        port = (target or server).port
        assert port is not None
        client = await ImsClient.connect(port, **options)
        clients.append(client)
        if hello:
            await client.hello()
        return client

    yield open_client
    for client in clients:
        await client.close()


@pytest.fixture
async def client(connect: ClientFactory) -> ImsClient:
    return await connect()
