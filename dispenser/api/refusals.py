"""Calls refused to callers without a role: counted, never stored one by one.

Anybody who can reach the socket can send calls without logging in; writing each refusal
to the permanent audit trail would let them fill it (and the disk). So such refusals are
only counted: in total since the start (``diag.stats``), and per peer for the current
window, which the daemon turns into one audit row per peer and window
(``take_window``). Neither keeps anything of the calls' params.

Memory is bounded whatever callers send: a method name is either one the server knows or
``"(unknown)"``, a reason is an error code's name, and a window holds at most
``max_peers`` peers (the rest are counted under ``"(other peers)"``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["OTHER_PEERS", "UNKNOWN_METHOD", "RefusalTally", "RefusalWindow"]

UNKNOWN_METHOD = "(unknown)"
OTHER_PEERS = "(other peers)"


@dataclass(frozen=True)
class RefusalWindow:
    """One peer's refused calls between ``started`` and ``ended``."""

    peer: str
    started: datetime
    ended: datetime
    refused: dict[str, dict[str, int]]  # method -> reason -> count

    @property
    def calls(self) -> int:
        return sum(n for reasons in self.refused.values() for n in reasons.values())


class RefusalTally:
    def __init__(self, max_peers: int = 100) -> None:
        self.max_peers = max_peers
        self._totals: Counter[tuple[str, str]] = Counter()
        self._window: dict[str, Counter[tuple[str, str]]] = {}
        self._window_started = datetime.now(UTC)

    def count(self, peer: str, method: str, reason: str) -> None:
        """One refused call; ``method`` must be a known name or :data:`UNKNOWN_METHOD`."""
        key = (method, reason)
        self._totals[key] += 1
        if peer not in self._window and len(self._window) >= self.max_peers:
            peer = OTHER_PEERS
        self._window.setdefault(peer, Counter())[key] += 1

    def totals(self) -> dict[str, dict[str, int]]:
        """Every refusal since the start: method -> reason -> count."""
        return _nested(self._totals)

    @property
    def total(self) -> int:
        return sum(self._totals.values())

    def take_window(self) -> list[RefusalWindow]:
        """The refusals since the last call, one entry per peer; starts a new window."""
        now = datetime.now(UTC)
        window = [RefusalWindow(peer, self._window_started, now, _nested(counts))
                  for peer, counts in sorted(self._window.items())]
        self._window = {}
        self._window_started = now
        return window


def _nested(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (method, reason), n in sorted(counts.items()):
        out.setdefault(method, {})[reason] = n
    return out
