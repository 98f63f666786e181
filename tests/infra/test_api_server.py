"""The API server over real sockets: framing, auth, roles, failures, slow clients, events."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from dispenser.api.client import ApiClient
from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.api.server import ApiServer, ApiStartError

from .conftest import TOKENS, Audit, Raw, ServerFactory, api_config, build_registry, ping


def call(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


# ---------------------------------------------------------------- listening


async def test_socket_file_mode_and_ping(server: ApiServer, sock_dir: Path, raw: Raw) -> None:
    mode = stat.S_IMODE(os.stat(sock_dir / "api.sock").st_mode)
    assert mode == 0o660
    reply = await raw.rpc(ping(7))
    assert reply["id"] == 7
    assert reply["result"]["pong"] is True
    assert reply["result"]["time"].endswith("+00:00")


async def test_stale_socket_removed_live_or_foreign_refused(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    path = sock_dir / "api.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    server = await make_server()
    async with await ApiClient.connect(path) as client:
        assert (await client.call("system.ping"))["pong"]
    with pytest.raises(ApiStartError, match="already serving"):
        await ApiServer(api_config(sock_dir), build_registry()).start()
    await server.stop()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ApiStartError, match="not a socket"):
        await ApiServer(api_config(sock_dir), build_registry()).start()
    assert path.read_text() == "not a socket"


async def test_inherited_socket_is_served(make_server: ServerFactory, sock_dir: Path) -> None:
    path = sock_dir / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    server = await make_server(inherited=[listener])
    assert not (sock_dir / "api.sock").exists()  # the configured path is not bound
    assert str(path) in server.addresses
    async with await ApiClient.connect(path) as client:
        assert (await client.call("system.ping"))["pong"]


# ---------------------------------------------------------------- framing


async def test_malformed_json_then_same_connection_works(raw: Raw) -> None:
    reply = await raw.rpc(b'{"jsonrpc": "2.0", "id": 1, "method": \n')
    assert reply["error"]["code"] == ErrorCode.PARSE_ERROR
    assert reply["id"] is None
    assert (await raw.rpc(ping(2)))["result"]["pong"]


async def test_invalid_utf8_is_a_parse_error(raw: Raw) -> None:
    reply = await raw.rpc(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}\n')
    assert reply["error"]["code"] == ErrorCode.PARSE_ERROR
    assert "UTF-8" in reply["error"]["message"]
    assert (await raw.rpc(ping(2)))["result"]["pong"]


@pytest.mark.parametrize(
    ("line", "reply_id"),
    [
        (b"42\n", None),
        (b'"system.ping"\n', None),
        (b"null\n", None),
        (b'[{"jsonrpc": "2.0", "id": 1, "method": "system.ping"}]\n', None),
        (b'{"id": 5, "method": "system.ping"}\n', 5),
        (b'{"jsonrpc": "2.0", "id": 6, "method": 3}\n', 6),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "system.ping"}\n', None),
    ],
)
async def test_invalid_requests(raw: Raw, line: bytes, reply_id: Any) -> None:
    reply = await raw.rpc(line)
    assert reply["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert reply["id"] == reply_id
    assert (await raw.rpc(ping(2)))["result"]["pong"]


async def test_batches_are_refused_with_a_reason(raw: Raw) -> None:
    reply = await raw.rpc(b"[]\n")
    assert "batches are not supported" in reply["error"]["message"]


async def test_positional_params_refused(raw: Raw) -> None:
    reply = await raw.rpc(b'{"jsonrpc": "2.0", "id": 3, "method": "system.ping", "params": [1]}\n')
    assert reply == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32602, "message": reply["error"]["message"]},
    }


async def test_notifications_get_no_reply(raw: Raw) -> None:
    await raw.send({"jsonrpc": "2.0", "method": "system.ping"})
    await raw.send({"jsonrpc": "2.0", "method": "no.such.method"})
    await raw.send({"jsonrpc": "2.0", "method": "order.submit", "params": {}})  # unauthenticated
    await raw.send(b"\n\r\n")  # blank lines are ignored
    reply = await raw.rpc(ping(9))
    assert reply["id"] == 9


async def test_pipelined_requests_answered_in_order(raw: Raw) -> None:
    await raw.send(b"".join(json.dumps(ping(i)).encode() + b"\n" for i in range(50)))
    ids = [(await raw.recv())["id"] for _ in range(50)]
    assert ids == list(range(50))


async def test_oversize_line_gets_error_and_close(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    await make_server(max_message_bytes=1024)
    conn = await Raw.open(sock_dir / "api.sock")
    # Exactly at the limit is still accepted.
    message = call("system.info", {"pad": ""}, 1)
    message["params"]["pad"] = "x" * (1024 - len(json.dumps(message)))
    line = json.dumps(message).encode()
    assert len(line) == 1024
    assert (await conn.rpc(line + b"\n"))["result"] == {"product": "dispenser"}
    # One byte more is refused and the connection is closed.
    reply = await conn.rpc(b"x" * 1025 + b"\n")
    assert reply["id"] is None
    assert reply["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert reply["error"]["data"] == {"max_message_bytes": 1024}
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""
    await conn.close()


async def test_oversize_without_newline_closes(make_server: ServerFactory, sock_dir: Path) -> None:
    await make_server(max_message_bytes=1024)
    conn = await Raw.open(sock_dir / "api.sock")
    await conn.send(b"{" * 4000)  # never a newline
    reply = await conn.recv()
    assert reply["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""
    await conn.close()


# ---------------------------------------------------------------- auth and roles


async def test_unauthenticated_calls_refused(raw: Raw) -> None:
    assert (await raw.rpc(call("system.info")))["result"] == {"product": "dispenser"}
    for method in ("order.submit", "events.subscribe", "test.sleep"):
        reply = await raw.rpc(call(method, {"order_id": "A"}))
        assert reply["error"]["code"] == ErrorCode.UNAUTHENTICATED, method
    reply = await raw.rpc(call("no.such.method"))
    assert reply["error"]["code"] == ErrorCode.METHOD_NOT_FOUND


async def test_login_and_roles(server: ApiServer, sock_dir: Path) -> None:
    path = sock_dir / "api.sock"
    async with await ApiClient.connect(path) as client:
        with pytest.raises(ApiError) as refused:
            await client.login("wrong-token")
        assert refused.value.code == ErrorCode.UNAUTHENTICATED
        with pytest.raises(ApiError) as bad:
            await client.call("auth.login", {"token": 5})
        assert bad.value.code == ErrorCode.INVALID_PARAMS
        assert await client.login(TOKENS["staff"]) == "staff"
        result = await client.call("order.submit", {"order_id": "ORD-1"})
        assert result == {"order_id": "ORD-1", "by": "staff-holder"}
        with pytest.raises(ApiError) as forbidden:
            await client.call("machine.reset")
        assert forbidden.value.code == ErrorCode.FORBIDDEN
        assert forbidden.value.data == {"role": "staff", "allowed_roles": ["technician"]}
        with pytest.raises(ApiError) as invalid:
            await client.call("order.submit", {})
        assert invalid.value.code == ErrorCode.INVALID_ORDER
        assert invalid.value.data == {"errors": ["order_id"]}
    async with await ApiClient.connect(path, token=TOKENS["technician"]) as tech:
        assert await tech.call("machine.reset") == {"reset": True}


async def test_peer_uid_is_authenticated_at_connect(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    await make_server(peer_uids={os.getuid(): "technician"})
    async with await ApiClient.connect(sock_dir / "api.sock") as client:
        assert await client.call("machine.reset") == {"reset": True}


# ---------------------------------------------------------------- failures and audit


async def test_handler_crash_is_internal_error_without_leak(
    server: ApiServer, sock_dir: Path, captured_log: io.StringIO
) -> None:
    secret = "Zq" + os.urandom(8).hex()
    async with await ApiClient.connect(sock_dir / "api.sock", token=TOKENS["staff"]) as c:
        with pytest.raises(ApiError) as crash:
            await c.call("test.boom", {"who": secret})
        assert crash.value.code == ErrorCode.INTERNAL_ERROR
        assert "Traceback" not in crash.value.message
        assert "handler bug" not in crash.value.message
        incident = crash.value.data["incident"]
        with pytest.raises(ApiError) as unjsonable:
            await c.call("test.unjsonable")
        assert unjsonable.value.code == ErrorCode.INTERNAL_ERROR
        assert (await c.call("system.ping"))["pong"]  # connection survives
    logged = captured_log.getvalue()
    assert incident in logged
    assert "handler bug" in logged  # the traceback is in the log...
    assert secret not in logged  # ...without the frame's locals


async def test_audit_hook_sees_every_mutating_call_of_a_caller_with_a_role(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    audit = Audit()
    server = await make_server(audit)
    async with await ApiClient.connect(sock_dir / "api.sock") as client:
        with pytest.raises(ApiError):
            await client.call("order.submit", {"order_id": "X"})  # not logged in
        await client.login(TOKENS["order_system"])
        await client.call("order.submit", {"order_id": "ORD-2"})
        with pytest.raises(ApiError):
            await client.call("machine.reset")  # forbidden
        await client.call("system.ping")  # not mutating: not audited
    outcomes = [(m, p, o.as_dict()) for _, m, p, o in audit]
    # A caller without a role is only counted (docs/api.md, Limits): anybody can send
    # such calls, and writing each one would let them fill the audit trail.
    assert outcomes == [
        ("order.submit", {"order_id": "ORD-2"}, {"ok": True}),
        (
            "machine.reset",
            {},
            {"ok": False, "error": {"code": -32005, "message": outcomes[1][2]["error"]["message"]}},
        ),
    ]
    assert [who for who, *_ in audit] == [
        ("order_system", "order_system-holder"),
        ("order_system", "order_system-holder"),
    ]
    assert audit[0][3].result == {"order_id": "ORD-2", "by": "order_system-holder"}
    assert server.refusals.totals() == {"order.submit": {"unauthenticated": 1}}


async def test_failing_audit_hook_does_not_lose_the_reply(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    def broken(*_: Any) -> None:
        raise OSError("audit disk full")

    await make_server(broken)
    async with await ApiClient.connect(sock_dir / "api.sock", token=TOKENS["staff"]) as c:
        assert (await c.call("order.submit", {"order_id": "A"}))["order_id"] == "A"


# ---------------------------------------------------------------- concurrency


async def test_slow_reader_is_dropped_without_blocking_others(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    server = await make_server(write_buffer_limit=64 * 1024)
    path = sock_dir / "api.sock"
    # A blocking socket that subscribes and then never reads.
    lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lazy.connect(str(path))
    lazy.sendall(
        json.dumps(call("auth.login", {"token": TOKENS["staff"]})).encode()
        + b"\n"
        + json.dumps(call("events.subscribe", {}, 2)).encode()
        + b"\n"
    )
    async with await ApiClient.connect(path) as other:
        for _ in range(100):
            if server.publish({"topic": "stock"}) == 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("subscriber never registered")
        event = {"topic": "stock", "detail": "x" * 1024}
        worst = 0.0
        dropped = False
        for _ in range(200):
            for _ in range(50):
                if server.publish(event) == 0:
                    dropped = True
            started = time.monotonic()
            assert (await other.call("system.ping"))["pong"]
            worst = max(worst, time.monotonic() - started)
            if dropped:
                break
        assert dropped, "a client that does not read must be dropped"
        assert worst < 0.5
        assert (await other.call("system.ping"))["pong"]
    lazy.close()


async def test_hundred_concurrent_connections(server: ApiServer, sock_dir: Path) -> None:
    path = sock_dir / "api.sock"

    async def one(i: int) -> tuple[Any, Any]:
        async with await ApiClient.connect(path, token=TOKENS["order_system"]) as client:
            await asyncio.sleep(0.01)  # keep all hundred open at once
            return await client.call("order.submit", {"order_id": f"O{i}"}), await client.call(
                "system.ping"
            )

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert [r[0]["order_id"] for r in results] == [f"O{i}" for i in range(100)]
    assert all(r[1]["pong"] for r in results)


async def test_slow_handler_does_not_block_other_connections(
    server: ApiServer, sock_dir: Path
) -> None:
    path = sock_dir / "api.sock"
    async with (
        await ApiClient.connect(path, token=TOKENS["staff"]) as slow,
        await ApiClient.connect(path) as fast,
    ):
        pending = asyncio.create_task(slow.call("test.sleep", {"s": 1.0}))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await fast.call("system.ping")
        assert time.monotonic() - started < 0.5
        assert await pending == "slept"


# ---------------------------------------------------------------- events and notify


async def test_events_reach_subscribers_only(server: ApiServer, sock_dir: Path) -> None:
    path = sock_dir / "api.sock"
    async with (
        await ApiClient.connect(path, token=TOKENS["staff"]) as everything,
        await ApiClient.connect(path, token=TOKENS["technician"]) as faults,
        await ApiClient.connect(path, token=TOKENS["staff"]) as bystander,
    ):
        all_events = everything.subscribe()
        fault_events = faults.subscribe(["fault"])
        # The first __anext__ performs the subscription; publish only after both returned.
        first_all = asyncio.create_task(anext(all_events))
        first_fault = asyncio.create_task(anext(fault_events))
        for _ in range(100):
            if server.publish({"topic": "probe-none"}) == 1:  # only the all-topics one
                break
            await asyncio.sleep(0.01)
        assert (await first_all) == {"topic": "probe-none"}
        server.publish({"topic": "order", "order_id": "O1", "state": "picked"})
        server.publish({"topic": "fault", "code": "JAM"})
        assert await asyncio.wait_for(first_fault, 5) == {"topic": "fault", "code": "JAM"}
        assert await asyncio.wait_for(anext(all_events), 5) == {
            "topic": "order",
            "order_id": "O1",
            "state": "picked",
        }
        assert await asyncio.wait_for(anext(all_events), 5) == {"topic": "fault", "code": "JAM"}
        # The bystander got nothing: its next line is the reply to its own call.
        assert (await bystander.call("system.ping"))["pong"]
        assert bystander._events.empty()
        with pytest.raises(ApiError) as bad:
            await bystander.call("events.subscribe", {"topics": ["weather"]})
        assert bad.value.code == ErrorCode.INVALID_PARAMS
        await all_events.aclose()
        await fault_events.aclose()


async def test_unsubscribe_and_caller_notify(server: ApiServer, sock_dir: Path) -> None:
    async with await ApiClient.connect(sock_dir / "api.sock", token=TOKENS["staff"]) as c:
        assert await c.call("events.subscribe", {"topics": ["order"]}) == {"topics": ["order"]}
        assert server.publish({"topic": "order"}) == 1
        assert await c.call("events.unsubscribe") == {"topics": []}
        assert server.publish({"topic": "order"}) == 0
        assert await c.call("test.notify") is True
        assert await asyncio.wait_for(c.notifications.get(), 5) == ("test.progress", {"step": 1})


async def test_stop_closes_connections(make_server: ServerFactory, sock_dir: Path) -> None:
    server = await make_server()
    client = await ApiClient.connect(sock_dir / "api.sock")
    await client.call("system.ping")
    await server.stop()
    with pytest.raises(ConnectionError):
        await client.call("system.ping", timeout=5)
    await client.close()
    assert not (sock_dir / "api.sock").exists()


# ---------------------------------------------------------------- robustness and privacy


async def test_random_lines_never_break_the_connection(raw: Raw) -> None:
    rng = random.Random(20261128)
    samples = [b'{"jsonrpc":"2.0","id":', b'{"jsonrpc":"2.0","method":"system.ping"', b"\xc3"]
    for i in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
        line = rng.choice(samples) + junk if i % 2 else junk
        await raw.send(line.replace(b"\n", b" ") + b"\n")
        await raw.send(ping(100_000 + i))
        while True:  # junk may or may not be answered; the ping always is
            reply = await raw.recv()
            if reply.get("id") == 100_000 + i:
                assert reply["result"]["pong"]
                break
            assert reply["error"]["code"] in {-32700, -32600, -32601, -32602, -32007}


async def test_no_patient_data_or_token_in_the_log(
    server: ApiServer, sock_dir: Path, captured_log: io.StringIO
) -> None:
    secret = "Zq" + os.urandom(8).hex()
    async with await ApiClient.connect(sock_dir / "api.sock") as client:
        with pytest.raises(ApiError):
            await client.login("wrong-" + secret)
        await client.login(TOKENS["order_system"])
        await client.call(
            "order.submit",
            {"order_id": "O-7", "patient_name": secret, "address": secret, "phone": secret},
        )
    logged = captured_log.getvalue()
    assert "api login refused" in logged and "api login" in logged
    assert secret not in logged
    assert TOKENS["order_system"] not in logged


@pytest.mark.parametrize("line", [
    b'{"jsonrpc":"2.0","id":"\\ud800","method":"system.ping"}\n',
    b'{"jsonrpc":"2.0","id":' + b"7" * 5000 + b',"method":"system.ping"}\n',
])
async def test_an_id_that_cannot_be_echoed_is_a_parse_error_not_a_dropped_connection(
        raw: Raw, line: bytes) -> None:
    # Before, encoding the reply (or converting the number) raised in the connection's task
    # and the client saw the connection close without an answer.
    reply = await raw.rpc(line)
    assert reply["error"]["code"] == -32700 and reply["id"] is None
    assert (await raw.rpc(ping(2)))["result"]["pong"]


@pytest.mark.parametrize(("message", "path"), [
    (call("system.ping", {"extra": 1}, 1), "extra"),
    (call("events.unsubscribe", {"topics": []}, 1), "topics"),
    (call("events.subscribe", {"topics": ["order"], "x": 1}, 1), "x"),
    (call("events.subscribe", {"topics": "order"}, 1), "topics"),
    (call("auth.login", {"token": 5}, 1), "token"),
    (call("auth.login", {"token": "t", "role": "technician"}, 1), "role"),
])
async def test_built_in_methods_refuse_bad_params_listing_them(
        raw: Raw, message: dict[str, Any], path: str) -> None:
    # Before, system.ping and events.unsubscribe ignored unknown params, and the -32602 of
    # auth.login and events.subscribe had no data.errors (docs/api.md promises both).
    await raw.rpc(call("auth.login", {"token": TOKENS["staff"]}, 0))
    reply = await raw.rpc(message)
    assert reply["error"]["code"] == ErrorCode.INVALID_PARAMS
    assert [e["path"] for e in reply["error"]["data"]["errors"]] == [path]
