"""Hash chain of the audit log.

Each row's ``hash`` is sha256 over the canonical JSON array
``[id, time, actor, role, action, subject, before, after, prev_hash]`` (before/after are
the stored canonical JSON texts or null). The first row's ``prev_hash`` is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = "0" * 64

# Built once: ``json.dumps`` with options builds a new encoder on every call, which costs
# as much as encoding a small audit row. Audit values are trees of dicts and lists built
# for the row, never circular, so the encoder does not check (keeping every container's id
# for the check took a third of the encoding). The output is the same.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                              default=str, check_circular=False)
_PAYLOAD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def canonical(value: object) -> str:
    return _CANONICAL.encode(value)


def row_hash(row_id: int, time: str, actor: str, role: str, action: str, subject: str,
             before: str | None, after: str | None, prev_hash: str) -> str:
    payload = _PAYLOAD.encode([row_id, time, actor, role, action, subject, before, after,
                               prev_hash])
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    first_bad_row: int | None = None
    reason: str | None = None


Row = tuple[int, str, str, str, str, str, str | None, str | None, str, str]


def verify_rows(rows: Iterable[Row]) -> VerifyResult:
    prev = GENESIS
    count = 0
    expected_id: int | None = None
    for row in rows:
        row_id, time, actor, role, action, subject, before, after, prev_hash, stored = row
        count += 1
        if expected_id is not None and row_id != expected_id:
            return VerifyResult(False, count, row_id,
                                f"row ids jump from {expected_id - 1} to {row_id}: rows removed")
        expected_id = row_id + 1
        if prev_hash != prev:
            return VerifyResult(False, count, row_id, "prev_hash does not match the previous "
                                                      "row's hash")
        if row_hash(row_id, time, actor, role, action, subject, before, after,
                    prev_hash) != stored:
            return VerifyResult(False, count, row_id, "row content does not match its hash")
        prev = stored
    return VerifyResult(True, count)
