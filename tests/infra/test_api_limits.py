"""What keeps one client from stalling the others (issue 8): pacing of requests,
backpressure instead of dropping a client that reads, the connection limit, the listen
backlog, and the counting of calls refused to callers without a role."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from dispenser.api.client import ApiClient
from dispenser.api.pacing import Pacer
from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.api.server import ApiServer, Caller, listen_backlog

from .conftest import TOKENS, Raw, ServerFactory, api_config, build_registry, ping

# ---------------------------------------------------------------- pacing


class IterationCounter:
    """Counts event-loop iterations: a callback that schedules itself once per iteration."""

    def __init__(self) -> None:
        self.n = 0
        self._stopped = False
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        if not self._stopped:
            self.n += 1
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


def spin(seconds: float) -> None:
    """Hold the loop like a request that costs ``seconds`` of work."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_pacer_bounds_the_work_started_per_loop_iteration_and_serves_in_turn() -> None:
    pacer = Pacer(budget_s=0.004)
    iterations = IterationCounter()
    started: list[tuple[int, int]] = []  # (iteration, worker)

    async def worker(k: int) -> None:
        for _ in range(10):
            await pacer.turn()
            started.append((iterations.n, k))
            spin(0.001)  # every request costs at least 1 ms
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(k) for k in range(40)))
    iterations.stop()
    per_iteration = Counter(i for i, _ in started)
    # Requests start only in the first 4 ms of an iteration and each takes >= 1 ms: at
    # most 4 start per iteration (5 allows for the iteration's first callback), where
    # unpaced all 40 connections would run one each in every iteration.
    assert max(per_iteration.values()) <= 5, per_iteration.most_common(3)
    # First come, first served: when any worker has had its 10th turn, none is behind by
    # more than one round.
    done_at = next(n for n, (_, k) in enumerate(started)
                   if sum(1 for _, j in started[: n + 1] if j == k) == 10)
    rounds = Counter(k for _, k in started[: done_at + 1])
    assert min(rounds[k] for k in range(40)) >= 9, rounds
    assert pacer.deferred > 0


async def test_a_quiet_pacer_lets_a_request_through_at_once() -> None:
    pacer = Pacer(budget_s=0.004)
    iterations = IterationCounter()
    before = iterations.n
    await pacer.turn()
    assert iterations.n == before  # no loop iteration spent waiting
    assert pacer.deferred == 0
    iterations.stop()


async def test_a_cancelled_waiter_does_not_block_the_others() -> None:
    pacer = Pacer(budget_s=0.004)
    done: list[int] = []

    async def request(k: int) -> None:
        await pacer.turn()
        spin(0.002)
        done.append(k)

    tasks = [asyncio.create_task(request(k)) for k in range(6)]
    await asyncio.sleep(0)  # all six ran in one iteration: one or two started, the rest wait
    assert done in ([0], [0, 1])
    tasks[3].cancel()  # its connection closed while it waited
    await asyncio.gather(*tasks, return_exceptions=True)
    assert done == [0, 1, 2, 4, 5]
    assert tasks[3].cancelled()
    for _ in range(5):
        await asyncio.sleep(0)
    assert pacer._granted == 0 and not pacer._ticking  # idle again: no callback per iteration


async def test_many_pipelining_connections_share_the_loop(sock_dir: Path) -> None:
    """30 connections pipelining requests that cost 1 ms each: all answered in order, and
    no loop iteration starts more than the budget's worth of them (unpaced, every
    connection's buffered requests ran back to back in one iteration)."""
    registry = build_registry()
    iterations = IterationCounter()
    started: list[int] = []

    @registry.method("test.spin")
    async def spin_1ms(params: dict[str, object], caller: Caller) -> bool:
        started.append(iterations.n)
        spin(0.001)
        return True

    per_connection = 20
    async with ApiServer(api_config(sock_dir), registry, turn_budget_s=0.004):

        async def flood() -> list[int]:
            raw = await Raw.open(sock_dir / "api.sock")
            try:
                login = {"jsonrpc": "2.0", "id": "login", "method": "auth.login",
                         "params": {"token": TOKENS["staff"]}}
                assert "result" in await raw.rpc(login)
                await raw.send(b"".join(
                    json.dumps({"jsonrpc": "2.0", "id": i, "method": "test.spin"}).encode()
                    + b"\n" for i in range(per_connection)))
                return [(await raw.recv(60))["id"] for _ in range(per_connection)]
            finally:
                await raw.close()

        results = await asyncio.gather(*(flood() for _ in range(30)))
    iterations.stop()
    assert all(ids == list(range(per_connection)) for ids in results)
    assert len(started) == 30 * per_connection
    assert max(Counter(started).values()) <= 5, Counter(started).most_common(3)


# ---------------------------------------------------------------- backpressure


async def test_a_client_that_reads_late_is_paused_not_dropped(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    """Far more replies than the drop limit, pipelined by a client that reads nothing for
    a while: the server stops reading its requests instead of dropping it; once it reads,
    every reply comes, in order, and the connection stays usable."""
    server = await make_server(write_buffer_limit=64 * 1024)
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setblocking(False)
    await loop.sock_connect(client, str(sock_dir / "api.sock"))
    big = "r" * 1000
    n = 2000  # about 2 MB of replies, 30 times the limit
    requests = b"".join(json.dumps({"jsonrpc": "2.0", "id": f"{big}{i}",
                                    "method": "system.ping"}).encode() + b"\n"
                        for i in range(n))
    sending = asyncio.create_task(loop.sock_sendall(client, requests))
    try:
        for _ in range(500):  # the client reads nothing meanwhile
            if server.reads_paused:
                break
            await asyncio.sleep(0.01)
        assert server.reads_paused > 0, "reading never paused"
        async with await ApiClient.connect(sock_dir / "api.sock") as other:
            assert (await other.call("system.ping"))["pong"] is True
        received = b""
        while received.count(b"\n") < n:
            chunk = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 30)
            assert chunk, "dropped before every reply came"
            received += chunk
        await sending
        ids = [json.loads(line)["id"] for line in received.splitlines()]
        assert ids == [f"{big}{i}" for i in range(n)]
        await loop.sock_sendall(client, json.dumps(ping(7)).encode() + b"\n")
        assert json.loads(await asyncio.wait_for(loop.sock_recv(client, 4096), 10))["id"] == 7
    finally:
        sending.cancel()
        client.close()


# ---------------------------------------------------------------- connection limit


async def test_a_connection_over_the_limit_is_told_why_and_closed(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    server = await make_server(max_connections=3)
    path = sock_dir / "api.sock"
    served = [await Raw.open(path) for _ in range(3)]
    for raw in served:
        assert (await raw.rpc(ping()))["result"]["pong"] is True
    extra = await Raw.open(path)
    refusal = await extra.recv()
    assert refusal["id"] is None
    assert refusal["error"]["code"] == ErrorCode.TOO_MANY_CONNECTIONS == -32020
    assert refusal["error"]["data"] == {"max_connections": 3}
    assert "at most 3 connections" in refusal["error"]["message"]
    assert await extra.reader.read() == b""  # closed
    await extra.close()
    assert server.connections_refused == 1
    await served[0].close()
    for _ in range(100):  # the server notices the close
        if server.connection_count < 3:
            break
        await asyncio.sleep(0.01)
    again = await Raw.open(path)
    assert (await again.rpc(ping(2)))["result"]["pong"] is True
    for raw in [*served[1:], again]:
        await raw.close()


def test_listen_backlog_is_the_system_maximum() -> None:
    backlog = listen_backlog()
    assert backlog >= socket.SOMAXCONN
    proc = Path("/proc/sys/net/core/somaxconn")
    if proc.exists():
        assert backlog >= int(proc.read_text())


async def test_a_burst_of_connects_finds_room_in_the_backlog(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    """500 non-blocking connects at once, before the server accepts any: with the old
    backlog of 100 the rest failed at once with EAGAIN."""
    server = await make_server(max_connections=1000)
    assert server.backlog >= 500 or pytest.skip(f"the system's backlog is {server.backlog}")
    sockets = []
    try:
        for _ in range(500):  # no await in between: the server accepts nothing meanwhile
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            sockets.append(s)
            s.connect(str(sock_dir / "api.sock"))  # raises BlockingIOError if no room
        readers = [await asyncio.open_unix_connection(sock=s) for s in sockets]
        for _, writer in readers:
            writer.write(json.dumps(ping(1)).encode() + b"\n")
        replies = [json.loads(await asyncio.wait_for(r.readline(), 30)) for r, _ in readers]
        assert all(r["result"]["pong"] is True for r in replies)
        for _, writer in readers:
            writer.close()
    finally:
        for s in sockets:
            s.close()


# ---------------------------------------------------------------- refusals without a role


async def test_calls_without_a_role_are_counted_by_method_and_reason(
    make_server: ServerFactory, sock_dir: Path
) -> None:
    server = await make_server()
    async with await ApiClient.connect(sock_dir / "api.sock") as anonymous:
        for _ in range(3):
            with pytest.raises(ApiError):
                await anonymous.call("order.submit", {"order_id": "X", "note": "n" * 100_000})
        with pytest.raises(ApiError):
            await anonymous.call("events.subscribe")
        with pytest.raises(ApiError):
            await anonymous.call("no.such.method")
        with pytest.raises(ApiError):
            await anonymous.call("auth.login", {"token": "wrong"})
        assert (await anonymous.call("system.ping"))["pong"] is True
    assert server.refusals.totals() == {
        "(unknown)": {"method_not_found": 1},
        "auth.login": {"unauthenticated": 1},
        "events.subscribe": {"unauthenticated": 1},
        "order.submit": {"unauthenticated": 3},
    }
    window = server.refusals.take_window()
    assert [w.peer for w in window] == [f"uid:{os.getuid()}"]
    assert window[0].calls == 6
    assert server.refusals.take_window() == []  # a new window starts empty
    assert server.stats()["refused_without_role"]["order.submit"] == {"unauthenticated": 3}


async def test_refusals_of_many_peers_stay_bounded() -> None:
    from dispenser.api.refusals import OTHER_PEERS, RefusalTally

    assert RefusalTally().max_peers == 100  # as docs/api.md, Limits, says
    tally = RefusalTally(max_peers=10)
    for k in range(1000):
        tally.count(f"tcp:10.0.{k // 256}.{k % 256}", "order.cancel", "unauthenticated")
    window = tally.take_window()
    assert len(window) == 11
    assert next(w for w in window if w.peer == OTHER_PEERS).calls == 990
    assert tally.total == 1000
