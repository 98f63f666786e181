"""TCP loopback, TLS with a self-signed certificate, systemd socket activation, sync client."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dispenser.api.client import ApiClient, SyncApiClient, parse_address
from dispenser.api.server import ApiServer, ApiStartError, systemd_listen_sockets
from dispenser.testing.tools import require_tool

from .conftest import TOKENS, ServerFactory, api_config, build_registry


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "api.crt", directory / "api.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_plain_tcp_loopback(make_server: ServerFactory) -> None:
    server = await make_server(tcp_enabled=True, tcp_port=0)
    assert server.tcp_port
    address = f"127.0.0.1:{server.tcp_port}"
    assert address in server.addresses
    async with await ApiClient.connect(address, token=TOKENS["staff"]) as client:
        assert (await client.call("order.submit", {"order_id": "T1"}))["order_id"] == "T1"


async def test_tls(make_server: ServerFactory, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = await make_server(tcp_enabled=True, tcp_port=0, tls_cert=cert, tls_key=key)
    address = f"127.0.0.1:{server.tcp_port}"
    trusting = ssl.create_default_context(cafile=str(cert))
    async with await ApiClient.connect(address, tls=trusting, token=TOKENS["technician"]) as c:
        assert await c.call("machine.reset") == {"reset": True}
    # A client that does not trust the certificate refuses to talk.
    with pytest.raises(ssl.SSLCertVerificationError):
        await ApiClient.connect(address, tls=True)
    # A plain-text client gets nothing usable from a TLS port.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    writer.write(b'{"jsonrpc": "2.0", "id": 1, "method": "system.ping"}\n')
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 15)
    assert b"pong" not in data
    writer.close()


async def test_bad_tls_files_refuse_to_start(sock_dir: Path) -> None:
    config = api_config(
        sock_dir, tcp_enabled=True, tcp_port=0, tls_cert=sock_dir / "no.crt", tls_key="no.key"
    )
    with pytest.raises(ApiStartError, match="cannot load TLS certificate"):
        await ApiServer(config, build_registry()).start()
    assert not (sock_dir / "api.sock").exists()


async def test_sync_client(server: ApiServer, sock_dir: Path) -> None:
    def work() -> tuple[object, object]:
        with SyncApiClient(sock_dir / "api.sock", token=TOKENS["order_system"]) as client:
            return client.call("system.ping"), client.call("order.submit", {"order_id": "S1"})

    ping, submit = await asyncio.to_thread(work)
    assert ping["pong"]  # type: ignore[index]
    assert submit["order_id"] == "S1"  # type: ignore[index]


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:7460") == ("127.0.0.1", 7460)
    assert parse_address("[::1]:7460") == ("::1", 7460)
    assert parse_address("api.example:7460") == ("api.example", 7460)
    assert parse_address("/run/dispenser/api.sock") == "/run/dispenser/api.sock"
    assert parse_address("var/dispenser.sock") == "var/dispenser.sock"
    assert parse_address(Path("x:1")) == "x:1"


def test_listen_fds_only_for_our_pid() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "api"}
    assert systemd_listen_sockets(env) == []
    assert env == {}  # never passed on to children
    assert systemd_listen_sockets({}) == []
    assert systemd_listen_sockets({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) == []


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from dispenser.api.server import ApiServer
    from dispenser.config import ApiConfig

    async def main() -> None:
        server = ApiServer(ApiConfig(socket=Path(sys.argv[1])))
        await server.start()
        print("serving", server.addresses, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_systemd_socket_activation(sock_dir: Path) -> None:
    """The real activation protocol: systemd-socket-activate passes fd 3 + LISTEN_* vars."""
    activate = require_tool("systemd-socket-activate")
    activated = sock_dir / "activated.sock"
    configured = sock_dir / "configured.sock"
    child = subprocess.Popen(
        [activate, "-l", str(activated), sys.executable, "-c", CHILD, str(configured)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not activated.exists():
            assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
            time.sleep(0.02)
        with SyncApiClient(activated, timeout=20) as client:
            assert client.call("system.ping")["pong"]
        assert not configured.exists()  # the inherited socket replaced the configured one
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        child.communicate(timeout=10)


async def test_inherited_tcp_socket(make_server: ServerFactory) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = await make_server(inherited=[listener])
    assert f"127.0.0.1:{port}" in server.addresses
    async with await ApiClient.connect(f"127.0.0.1:{port}") as client:
        assert (await client.call("system.ping"))["pong"]


async def test_a_missing_tls_file_is_named_by_its_key(sock_dir: Path) -> None:
    config = api_config(
        sock_dir, tcp_enabled=True, tcp_port=0, tls_cert=sock_dir / "no.crt", tls_key="no.key"
    )
    with pytest.raises(ApiStartError, match=f"api.tls_cert: no file 'no.crt' in {sock_dir}"):
        await ApiServer(config, build_registry()).start()
