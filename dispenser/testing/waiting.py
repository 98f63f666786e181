"""Waiting for a condition, and reading a paged list whole."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dispenser.api.client import ApiClient

__all__ = ["list_all", "wait_for", "wait_until"]


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float = 30.0,
                   interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something true; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """``wait_for`` without an event loop (for tests that run commands)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


async def list_all(client: ApiClient, method: str, params: dict[str, Any] | None = None,
                   key: str = "") -> list[dict[str, Any]]:
    """Every item of a paged list method (``order.list``, ``stock.list`` ...)."""
    out: list[dict[str, Any]] = []
    after: Any = None
    while True:
        p = {**(params or {}), "limit": 1000}
        if after is not None:
            p["after"] = after
        page = await client.call(method, p, timeout=120)
        out += page["items"]
        after = page["next"]
        if after is None:
            return out
