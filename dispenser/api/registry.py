"""API methods as declared by the daemon, and the caller a handler sees.

Each method is declared once: name, async handler ``(params, caller) -> JSON-able``, the
roles allowed to call it (``None``: any authenticated caller) and whether it changes
anything (``mutating``: such calls go to the audit hook). Declarations are checked when
made: an unknown role, a duplicate name or a non-async handler is a programming error.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from dispenser.api.auth import Identity
from dispenser.api.protocol import ApiError, notification
from dispenser.config import ROLES, Role

__all__ = ["AuditHook", "Caller", "Handler", "Method", "MethodRegistry", "Outcome", "Transport"]

Transport = Literal["unix", "tcp"]


class Caller:
    """The connection a call arrived on, as a handler sees it.

    ``role`` and ``principal`` are None until the connection authenticates.
    ``peer`` names the other end for counting refusals: ``uid:N`` on a Unix socket (or
    ``unix`` when the kernel does not tell), the address on TCP (``tcp:127.0.0.1``).
    ``notify(method, params)`` queues a notification to this connection only (never
    blocks; False if the connection is gone).
    """

    def __init__(
        self,
        connection_id: int,
        transport: Transport,
        uid: int | None,
        send: Callable[[dict[str, Any]], bool],
        peer: str = "",
    ) -> None:
        self._send = send
        self.connection_id = connection_id
        self.transport: Transport = transport
        self.peer_uid = uid
        self.peer = peer or (f"uid:{uid}" if uid is not None else transport)
        self.role: Role | None = None
        self.principal: str | None = None

    def notify(self, method: str, params: dict[str, Any]) -> bool:
        return self._send(notification(method, params))

    def authenticate(self, identity: Identity) -> None:
        """Set the role (the server calls this; handlers have no reason to)."""
        self.role = identity.role
        self.principal = identity.principal

    def __repr__(self) -> str:
        return (
            f"Caller(connection_id={self.connection_id}, role={self.role!r}, "
            f"principal={self.principal!r}, transport={self.transport!r}, "
            f"peer_uid={self.peer_uid!r})"
        )


Handler = Callable[[dict[str, Any], Caller], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    roles: frozenset[Role] | None  # None: any authenticated caller
    mutating: bool


class MethodRegistry:
    """Every API method, declared once: name, handler, allowed roles, whether it mutates."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def method(
        self, name: str, *, roles: Iterable[str] | None = None, mutating: bool = False
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler, roles=roles, mutating=mutating)
            return handler

        return register

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        roles: Iterable[str] | None = None,
        mutating: bool = False,
    ) -> None:
        if name in self._methods:
            raise ValueError(f"API method {name!r} is already registered")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"handler of {name!r} must be an async function")
        allowed: frozenset[Role] | None = None
        if roles is not None:
            wanted = frozenset(roles)
            unknown = wanted - set(ROLES)
            if unknown or not wanted:
                raise ValueError(
                    f"API method {name!r}: roles must be a non-empty subset of {ROLES}, "
                    f"got {sorted(wanted)}"
                )
            allowed = frozenset(r for r in ROLES if r in wanted)
        self._methods[name] = Method(name, handler, allowed, mutating)

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods


@dataclass(frozen=True)
class Outcome:
    """What a call ended in: ``result`` when ``ok``, else the ``error`` that was replied."""

    ok: bool
    result: Any = None
    error: ApiError | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.ok or self.error is None:
            return {"ok": True}
        return {"ok": False, "error": {"code": int(self.error.code), "message": self.error.message}}


AuditHook = Callable[[Caller, str, dict[str, Any], Outcome], Awaitable[None] | None]
