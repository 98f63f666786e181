"""The audit chain: keyed hashes, key files and verification.

Each row's ``hash`` is computed over the canonical JSON array
``[id, time, actor, role, action, subject, before, after, prev_hash]`` (before/after are the
stored canonical JSON texts or null); the first row's ``prev_hash`` is 64 zeros.

- **Keyed rows** (every row a daemon with an audit key writes): HMAC-SHA256 with the key,
  which is kept outside the database (``AuditKey``). Without the key nobody can write a row
  that verifies, so a changed row cannot be hidden by computing the hashes again.
- **Legacy rows**: journals written before the chain was keyed hold plain SHA-256 rows. The
  table ``audit_keys`` records where keyed rows begin (``first_row``) and with which key
  (``key_id``, a fingerprint, never the key); rows before the first epoch are verified as
  SHA-256, rows from it on with the key of their epoch.

``verify_rows`` checks a whole chain and reports each kind of damage separately with its
first bad row: a gap (rows removed in the middle), an altered row, a chain re-hashed from a
row on (without the key or with another key), a wrong key, and, against the checkpoint kept
outside the database (``dispenser.journal.checkpoint``), a missing tail or a rewritten head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispenser.journal.health import JournalError

GENESIS = "0" * 64
# Rows the daemon writes about the chain: what its start-up check found, and that a person
# acknowledged it. Until acknowledged, verify reports what was found.
MISMATCH = "audit.mismatch"
MISMATCH_ACKNOWLEDGED = "audit.mismatch_acknowledged"

__all__ = ["GENESIS", "MISMATCH", "MISMATCH_ACKNOWLEDGED", "AuditKey", "AuditKeyError",
           "Epoch", "Finding", "VerifyResult", "canonical", "payload", "plain_hash",
           "row_hash", "verify_rows"]

# Built once: ``json.dumps`` with options builds a new encoder on every call, which costs
# as much as encoding a small audit row. Audit values are trees of dicts and lists built
# for the row, never circular, so the encoder does not check (keeping every container's id
# for the check took a third of the encoding). The output is the same.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                              default=str, check_circular=False)
_PAYLOAD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def canonical(value: object) -> str:
    return _CANONICAL.encode(value)


def payload(row_id: int, time: str, actor: str, role: str, action: str, subject: str,
            before: str | None, after: str | None, prev_hash: str) -> bytes:
    return _PAYLOAD.encode([row_id, time, actor, role, action, subject, before, after,
                            prev_hash]).encode()


def plain_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def row_hash(row_id: int, time: str, actor: str, role: str, action: str, subject: str,
             before: str | None, after: str | None, prev_hash: str,
             key: AuditKey | None = None) -> str:
    """The row's hash: keyed with ``key``, plain SHA-256 (legacy rows) without."""
    data = payload(row_id, time, actor, role, action, subject, before, after, prev_hash)
    return key.mac(data) if key is not None else plain_hash(data)


class AuditKeyError(JournalError):
    """The audit key file is missing, unsafe or not a key."""


KEY_BYTES = 32


class AuditKey:
    """A secret of 32 bytes, kept in a file of 64 hex digits, mode 0600.

    ``key_id`` is a public fingerprint (HMAC of a fixed text): it names the key in the
    journal and in the checkpoint without revealing it."""

    def __init__(self, secret: bytes, source: str = "(memory)") -> None:
        if len(secret) != KEY_BYTES:
            raise AuditKeyError(f"an audit key is {KEY_BYTES} bytes")
        self._secret = secret
        self.source = source
        self.key_id = hmac.new(secret, b"dispenser audit key id",
                               hashlib.sha256).hexdigest()[:16]
        self._base = hmac.new(secret, digestmod=hashlib.sha256)

    def mac(self, data: bytes) -> str:
        h = self._base.copy()
        h.update(data)
        return h.hexdigest()

    @classmethod
    def generate(cls) -> AuditKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def load(cls, path: str | Path, *, group_readable: bool = False) -> AuditKey:
        """Read a key file. Refused: a missing file, one that others may read or write
        (``group_readable`` allows the group: systemd's credential directory), one that is
        not 64 hex digits."""
        path = str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise AuditKeyError(
                f"no audit key at {path}: create it with `dispenserctl audit init-key "
                f"{path}` (see docs/install.md)") from None
        except OSError as exc:
            raise AuditKeyError(f"the audit key {path} cannot be read: "
                                f"{exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise AuditKeyError(f"the audit key {path} is not a regular file")
            loose = st.st_mode & (0o007 if group_readable else 0o077)
            if loose:
                raise AuditKeyError(
                    f"the audit key {path} may be read or written by others (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}): `chmod 600 {path}`, and make a new "
                    "key if it may have been copied")
            raw = os.read(fd, 256)
        finally:
            os.close(fd)
        text = raw.decode("ascii", errors="replace").strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) != KEY_BYTES:
            raise AuditKeyError(f"the audit key {path} is not a key ({KEY_BYTES * 2} hex "
                                "digits expected): make one with `dispenserctl audit "
                                "init-key`")
        return cls(secret, path)

    @classmethod
    def create(cls, path: str | Path) -> AuditKey:
        """Write a new key to ``path`` (mode 0600, never over an existing file)."""
        key = cls.generate()
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (key._secret.hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key._secret, str(path))


@dataclass(frozen=True)
class Epoch:
    """Rows from ``first_row`` on (to the next epoch) are keyed with key ``key_id``."""

    first_row: int
    key_id: str


@dataclass(frozen=True)
class Finding:
    """One kind of damage: ``kind`` is ``gap``, ``missing_tail``, ``rehashed``,
    ``altered``, ``wrong_key`` or ``checkpoint``."""

    kind: str
    first_bad_row: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "first_bad_row": self.first_bad_row,
                "message": self.message}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    first_bad_row: int | None = None
    reason: str | None = None
    findings: tuple[Finding, ...] = ()
    keyed: bool = False
    key_id: str | None = None
    keyed_from: int | None = None
    checkpoint: dict[str, Any] | None = field(default=None, compare=False)


Row = tuple[int, str, str, str, str, str, str | None, str | None, str, str]


class _Scan:
    """State of one pass over the chain; one finding per kind, the first of each."""

    def __init__(self, epochs: Sequence[Epoch], key: AuditKey | None) -> None:
        self.epochs = sorted(epochs, key=lambda e: e.first_row)
        self.key = key
        self.findings: dict[str, Finding] = {}
        self.epoch_index = -1
        self.run_start: int | None = None  # keyed rows failing their MAC with intact links
        self.run_len = 0
        # Findings the daemon recorded in the chain when it started (``audit.mismatch``
        # rows) that nobody has acknowledged yet (``audit.mismatch_acknowledged``).
        self.recorded: list[tuple[str, dict[str, Any]]] = []

    def history(self, action: str, time: str, after: str | None) -> None:
        """An authentic row about the chain itself."""
        if action == MISMATCH_ACKNOWLEDGED:
            self.recorded.clear()
            return
        try:
            findings = json.loads(after or "{}").get("findings") or []
        except (ValueError, AttributeError):
            return
        self.recorded += [(time, f) for f in findings if isinstance(f, dict)]

    def note(self, kind: str, row: int | None, message: str) -> None:
        self.findings.setdefault(kind, Finding(kind, row, message))

    def epoch_of(self, row_id: int) -> Epoch | None:
        while (self.epoch_index + 1 < len(self.epochs)
               and self.epochs[self.epoch_index + 1].first_row <= row_id):
            self.epoch_index += 1
            e = self.epochs[self.epoch_index]
            if self.key is None or e.key_id != self.key.key_id:
                held = "no key" if self.key is None else f"key {self.key.key_id}"
                self.note("wrong_key", e.first_row,
                          f"rows from {e.first_row} on are keyed with key {e.key_id}, this "
                          f"check holds {held}: they cannot be authenticated (give the "
                          "daemon the journal's key)")
        return self.epochs[self.epoch_index] if self.epoch_index >= 0 else None

    def end_run(self) -> None:
        if self.run_start is None:
            return
        if self.run_len == 1:
            self.note("altered", self.run_start,
                      f"row {self.run_start}'s content does not match its keyed hash: the "
                      "row was changed")
        else:
            self.note("rehashed", self.run_start,
                      f"rows from {self.run_start} on carry hashes made with another key: "
                      "the chain was re-hashed from there")
        self.run_start, self.run_len = None, 0


def verify_rows(rows: Iterable[Row], epochs: Sequence[Epoch] = (),
                key: AuditKey | None = None,
                checkpoint: dict[str, Any] | None = None,
                checkpoint_expected: bool = False, *, first_id: int = 1,
                prev: str = GENESIS) -> VerifyResult:
    """Check a chain (rows in id order) and, if given, its checkpoint (already read and
    authenticated by ``dispenser.journal.checkpoint.read``; ``checkpoint_expected`` says
    one should exist). ``first_id`` and ``prev`` start the check in the middle of the
    chain: at that row, which must link to ``prev``."""
    scan = _Scan(epochs, key)
    count = 0
    expected_id = first_id
    last_id = first_id - 1
    cp_row = int(checkpoint["last_id"]) if checkpoint else None
    hash_at_cp: str | None = None
    for row in rows:
        row_id, time, actor, role, action, subject, before, after, prev_hash, stored = row
        count += 1
        if row_id != expected_id:
            scan.end_run()
            scan.note("gap", row_id, f"rows {expected_id}..{row_id - 1} are missing: row ids "
                                     f"jump from {expected_id - 1} to {row_id}")
            prev = prev_hash  # judge the rest of the chain on its own
        elif prev_hash != prev:
            scan.end_run()
            scan.note("altered", row_id, f"row {row_id} does not link to row {row_id - 1}: "
                                         "a row was replaced, inserted or changed")
        data = payload(row_id, time, actor, role, action, subject, before, after, prev_hash)
        epoch = scan.epoch_of(row_id)
        if epoch is None:
            if plain_hash(data) != stored:
                scan.note("altered", row_id,
                          f"row {row_id}'s content does not match its hash: the row was "
                          "changed")
        elif key is not None and epoch.key_id == key.key_id:
            if key.mac(data) == stored:
                scan.end_run()
                if action in (MISMATCH, MISMATCH_ACKNOWLEDGED):
                    scan.history(action, time, after)
            elif plain_hash(data) == stored:
                scan.end_run()
                scan.note("rehashed", row_id,
                          f"rows from {row_id} on carry plain SHA-256 hashes instead of keyed "
                          "ones: the chain was re-hashed without the key from there")
            elif scan.run_start is None:
                scan.run_start, scan.run_len = row_id, 1
            else:
                scan.run_len += 1
        # (a row of an epoch whose key this check does not hold: only its link is checked)
        if row_id == cp_row:
            hash_at_cp = stored
        prev = stored
        expected_id = row_id + 1
        last_id = row_id
    scan.end_run()
    for when, f in scan.recorded:
        bad = f.get("first_bad_row")
        scan.note(str(f.get("kind", "checkpoint")), bad if isinstance(bad, int) else None,
                  f"{f.get('message')} (found when the daemon started at {when}; "
                  "acknowledge the audit fault once a person has looked)")
    if checkpoint is not None:
        assert cp_row is not None
        if cp_row > last_id:
            scan.note("missing_tail", last_id + 1,
                      f"rows {last_id + 1}..{cp_row} are missing at the end: the checkpoint "
                      f"of {checkpoint.get('written_at')} records {cp_row} rows, the journal "
                      f"ends at row {last_id}")
        elif hash_at_cp is not None and hash_at_cp != checkpoint["head"]:
            scan.note("checkpoint", cp_row,
                      f"row {cp_row} is not the row the checkpoint recorded: the chain up to "
                      "it was rewritten or the journal replaced")
        first_keyed = scan.epochs[0].first_row if scan.epochs else None
        if checkpoint.get("first_keyed_row") != first_keyed:
            scan.note("checkpoint", first_keyed,
                      f"the journal says keyed rows begin at {first_keyed}, the checkpoint "
                      f"at {checkpoint.get('first_keyed_row')}: the keying record was changed")
    elif checkpoint_expected:
        scan.note("checkpoint", None, "the checkpoint file is missing: the end of the chain "
                                      "cannot be checked")
    findings = tuple(sorted(scan.findings.values(),
                            key=lambda f: (f.first_bad_row is None, f.first_bad_row or 0)))
    first = findings[0] if findings else None
    rows_with_id = [f.first_bad_row for f in findings if f.first_bad_row is not None]
    return VerifyResult(
        ok=not findings, rows=count, first_bad_row=min(rows_with_id) if rows_with_id else None,
        reason=first.message if first else None, findings=findings,
        keyed=bool(scan.epochs), key_id=key.key_id if key is not None else None,
        keyed_from=scan.epochs[0].first_row if scan.epochs else None, checkpoint=checkpoint)
