"""A client that floods one API connection: it logs in (or not), writes ``n`` pipelined
requests at once and reads every reply.

Run it as its own process, so that reading the replies does not slow down whoever
measures meanwhile::

    python dispenser/testing/flood.py SOCKET TOKEN|none METHOD N

(run as a file it imports nothing but the standard library: it starts quickly on a busy
host). It prints one JSON line: ``replies``, ``in_order`` (every request answered, in the order
sent), ``seconds`` and ``outcomes`` (``result`` or the error code, counted).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

__all__ = ["flood", "pipeline_lines"]


def pipeline_lines(method: str, n: int, params: dict[str, Any] | None = None) -> bytes:
    """``n`` requests of ``method``, ids 0..n-1, one per line."""
    extra = {"params": params} if params is not None else {}
    return b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, **extra}).encode()
                    + b"\n" for i in range(n))


async def flood(socket_path: str, token: str | None, payload: bytes,
                n: int) -> dict[str, Any]:
    """Log in with ``token`` (None: no login), write ``payload`` (``n`` requests) at once,
    read the ``n`` replies (events are skipped)."""
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=64 * 1024 * 1024)
    if token is not None:
        login = {"jsonrpc": "2.0", "id": "login", "method": "auth.login",
                 "params": {"token": token}}
        writer.write(json.dumps(login).encode() + b"\n")
        await writer.drain()
        await reader.readline()
    outcomes: Counter[str] = Counter()
    in_order = True
    got = 0
    t0 = time.perf_counter()

    async def read() -> None:
        nonlocal got, in_order
        while got < n:
            line = await reader.readline()
            if not line:
                return
            message = json.loads(line)
            if "id" not in message:
                continue  # an event
            in_order = in_order and message["id"] == got
            got += 1
            outcomes["result" if "result" in message else str(message["error"]["code"])] += 1

    writer.write(payload)
    await asyncio.gather(writer.drain(), read())
    seconds = time.perf_counter() - t0
    writer.close()
    return {"replies": got, "in_order": in_order and got == n, "seconds": seconds,
            "outcomes": dict(outcomes)}


def main(argv: list[str]) -> int:
    socket_path, token, method, n = argv
    result = asyncio.run(flood(socket_path, None if token == "none" else token,
                               pipeline_lines(method, int(n)), int(n)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
