"""Who is calling: bearer tokens and Unix peer credentials.

Tokens are never stored: the configuration holds ``sha256:<hex>`` of each token
(``hash_token``), with the role it grants. A presented token is hashed and compared with
``hmac.compare_digest`` against **every** configured hash, without stopping at a match, so
the time taken does not tell which entry (or which prefix) matched.

On a Unix socket the kernel tells us the peer's uid (``SO_PEERCRED``); a uid listed in
``[api.peer_uids]`` is authenticated as that role when it connects, without a token.

Roles: ``order_system`` (submits orders), ``staff`` (warehouse work), ``technician``
(diagnostics).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dispenser.config import Role, TokenConfig

__all__ = ["Authenticator", "Identity", "hash_token", "new_token", "peer_uid"]

_PREFIX = "sha256:"


def hash_token(token: str) -> str:
    """The configured form of a token: ``sha256:<64 hex digits>``."""
    if not token:
        raise ValueError("a token must not be empty")
    return _PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text) to hand to a client."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: the role, and a principal naming the holder for the audit."""

    role: Role
    principal: str


class Authenticator:
    """Checks tokens and peer uids against the configuration."""

    def __init__(self, tokens: Iterable[TokenConfig], peer_uids: Mapping[int, Role]) -> None:
        self._tokens = [
            (bytes.fromhex(t.hash.removeprefix(_PREFIX)), t.role, t.label or f"token#{i}")
            for i, t in enumerate(tokens)
        ]
        self._peer_uids = dict(peer_uids)

    def check_token(self, token: str) -> Identity | None:
        """The identity a token grants, or None. Constant time over the configured tokens."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Identity | None = None
        for expected, role, principal in self._tokens:
            # Compare against every entry; never break early.
            if hmac.compare_digest(digest, expected) and found is None:
                found = Identity(role, principal)
        return found

    def check_uid(self, uid: int | None) -> Identity | None:
        """The identity a Unix peer uid is mapped to, or None."""
        if uid is None:
            return None
        role = self._peer_uids.get(uid)
        return Identity(role, f"uid:{uid}") if role is not None else None


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux), else None.

    ``sock`` is a socket or asyncio's ``TransportSocket`` (``get_extra_info("socket")``).
    """
    if sock is None or sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)
