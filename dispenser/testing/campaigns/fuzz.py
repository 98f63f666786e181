"""Fuzz dispenserd's socket API over its live Unix socket and check what docs/api.md promises.

::

    .venv/bin/python bench/fuzz_api.py --cases 20000 --seed 1
    .venv/bin/python bench/fuzz_api.py --cases 500 --seed 7 --only envelope,hostile_params

Starts ``dispenser-sim`` and ``dispenserd`` (a temporary journal and configuration, tokens
for every role), then sends generated and mutated messages (see ``CATEGORIES``) on
connections of every role while a watcher connection pings the daemon throughout. Each
message line is checked against docs/api.md: the documented error code and id, one reply per
request, none for a notification or a blank line, and a close only after a line over the
size limit. ``-32603`` (a fault in the dispenser), a close or a silence where a reply was
due, a malformed reply and a watcher ping slower than ``--max-latency`` are failures. At the
end the daemon must still be running and ``audit.verify`` must report an intact chain.

Prints the number of cases and outcomes per category, the watcher's latencies and every
failure with the exact bytes sent (all of them also go to ``--failures FILE`` as JSON lines;
``--replay FILE`` sends them again). The same ``--seed`` and ``--cases`` generate the same
messages. Exit status: 0 when nothing failed, 1 otherwise.

Size: long for no reason a reader needs. The sections (the docs it reads, valid calls and
their fields, the oracle, reply checks, connections, generators, the target, the run) could
be three modules: the oracle (``ApiDocs``, ``expect_line``, ``judge``: what docs/api.md
promises, which ``tests/fuzz/test_oracle.py`` checks without a daemon), the generators (the
hypothesis strategies and the hostile cases) and the runner (``Conn``, ``Watcher``,
``Fuzzer``, ``run``, ``main``). Not yet done: it moved here whole from ``bench/`` when the
test stack became one package (issue 9), and has not been split since.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from dispenser.testing import FORMULARY, TOKENS
from dispenser.testing.data import ROOT

DOCS = ROOT / "docs" / "api.md"

ROLES = ("order_system", "staff", "technician")
DEFAULT_LIMIT = 1024 * 1024
DOCUMENTED_CODES = frozenset({-32700, -32600, -32601, -32602, -32603, *range(-32010, -32000),
                              -32020})
INTERNAL = -32603
SENTINEL = "~fuzz-sentinel"


# ============================================================================ the docs


@dataclass(frozen=True)
class ApiDocs:
    """What docs/api.md says about methods: who may call each and which ones mutate."""

    methods: tuple[str, ...]
    anyone: frozenset[str]
    allowed: dict[str, frozenset[str]]  # method -> roles (all roles for "anyone")
    mutating: frozenset[str]

    @classmethod
    def load(cls, path: Path = DOCS) -> ApiDocs:
        text = path.read_text(encoding="utf-8")
        methods = re.findall(r"^### ([a-z_]+\.[a-z_]+)", text, re.M)
        mutating = re.findall(r"^### ([a-z_]+\.[a-z_]+) — mutating", text, re.M)
        table = text.split("| role | may call |", 1)[1].split("\n\n", 1)[0]
        anyone: set[str] = set()
        allowed: dict[str, set[str]] = defaultdict(set)
        cumulative: set[str] = set()
        for row in table.splitlines():
            match = re.match(r"^\| (anyone|`([a-z_]+)`) \| (.*) \|$", row)
            if not match:
                continue
            names = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", match.group(3)))
            if match.group(1) == "anyone":
                anyone |= names
                continue
            if match.group(3).startswith("only "):  # a role outside the cumulative order
                for name in names:
                    allowed[name].add(match.group(2))
                continue
            cumulative |= names
            for name in cumulative:
                allowed[name].add(match.group(2))
        for name in anyone:
            allowed[name] = set(ROLES)
        missing = set(methods) - set(allowed)
        if missing:
            raise ValueError(f"{path}: no roles documented for {sorted(missing)}")
        return cls(tuple(sorted(set(methods) | set(allowed))), frozenset(anyone),
                   {k: frozenset(v) for k, v in allowed.items()}, frozenset(mutating))


# ============================================================================ valid calls


def _drugs() -> list[str]:
    with open(FORMULARY, newline="", encoding="utf-8") as fh:
        return [r["drug_code"] for r in csv.DictReader(fh)
                if r["fridge"] == "false" and r["manual"] == "false"]


DRUGS = _drugs()


def sample_order(order_id: str, drug: str | None = None, quantity: int = 1) -> dict[str, Any]:
    """An order as docs/orders.md describes it (it may still be held by a check)."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    return {
        "order_id": order_id,
        "patient": {"id": "P-FUZZ", "name": "Fuzz Patient", "phone": "+86 22 5550000"},
        "prescription": {"id": f"RX-{order_id}",
                         "issued_on": (date.today() - timedelta(days=5)).isoformat(),
                         "institution": "Test Clinic", "prescriber": "Dr Test",
                         "diagnoses": ["E11.9"]},
        "items": [{"drug_code": drug or DRUGS[0], "quantity": quantity, "days_supply": 30}],
        "delivery": {"address": "Fuzz Street 1, Tianjin", "window_start": start.isoformat(),
                     "window_end": (start + timedelta(hours=3)).isoformat()},
        "priority": "normal",
    }


SCAN = f"]d201{DRUGS[0]}17300630102311\x1d21FUZZ0001"

# Params that make a call of each method well formed (the call may still be refused for
# the state it finds: not found, wrong state ...). Methods left out take no params.
VALID_PARAMS: dict[str, dict[str, Any]] = {
    "auth.login": {"token": "not-a-token"},
    "events.subscribe": {"topics": ["order", "fault"]},
    "order.submit": {"order": sample_order("FZ-1")},
    "order.submit_batch": {"orders": [sample_order("FZ-2"), sample_order("FZ-3")]},
    "order.cancel": {"order_id": "FZ-1", "reason": "fuzz"},
    "order.release": {"order_id": "FZ-1"},
    "order.reject": {"order_id": "FZ-404", "reason": "fuzz"},
    "order.get": {"order_id": "FZ-1"},
    "order.list": {"state": "held", "limit": 10},
    "shipment.get": {"shipment_id": "SH-00000001"},
    "shipment.list": {"limit": 5, "after": None},
    "task.get": {"task_id": "OT-00000001"},
    "task.list": {"state": "queued", "purpose": "wwks2_output", "limit": 5},
    "shipment.confirm_manual": {"shipment_id": "SH-00000404", "scan": SCAN},
    "stock.list": {"drug_code": DRUGS[0], "state": None, "limit": 3},
    "stock.load": {"scan": SCAN.replace(DRUGS[0], "0" * 14)},
    "stock.quarantine": {"drug_code": "0" * 14, "batch": "FUZZ", "reason": "fuzz"},
    "stock.discrepancies": {"limit": 2},
    "stock.sweep": {"output": 1},
    "machine.pause": {"reason": "fuzz"},
    "machine.maintenance": {"on": False},
    "fault.list": {"active": True, "limit": 5},
    "fault.ack": {"fault_id": 999999, "note": "fuzz"},
    "robot.adopt": {"note": "fuzz"},
    "label.reprint": {"shipment_id": "SH-00000404", "what": "label"},
    "diag.registers": {"address": 0, "count": 4},
    "diag.selftest": {"slot": 0},
    "records.import": {"records": [{
        "record_id": "FZ-R1", "source": {"code": "FUZZ", "name": "Fuzz Hospital"},
        "patient_id": "P-FUZZ", "dispensed_on": date.today().isoformat(),
        "drug_code": DRUGS[0], "quantity": 1, "days_supply": 30}]},
    "prescriptions.register": {"prescriptions": [{
        "id": "RX-FZ-1", "institution": "FUZZ", "prescriber": "Dr Test",
        "patient_id": "P-FUZZ", "issued_on": date.today().isoformat(),
        "diagnoses": ["E11.9"], "items": [{"drug_code": DRUGS[0], "quantity": 1,
                                           "days_supply": 30}]}]},
    "patient.get": {"patient_id": "P-FUZZ"},
    "patient.renewals": {"within_days": 14, "limit": 5},
}

# The params each method documents: name -> (kind, required). Kinds: str, int, bool,
# object, objects (a list of objects), topics, enum:<a|b>, and "?" for "null allowed".
FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "system.ping": {}, "system.info": {}, "events.unsubscribe": {}, "machine.status": {},
    "machine.resume": {}, "diag.printer": {}, "diag.stats": {}, "audit.verify": {},
    "auth.login": {"token": ("str", True)},
    "events.subscribe": {"topics": ("topics?", False)},  # null: all topics
    "order.submit": {"order": ("object", True)},
    "order.submit_batch": {"orders": ("objects", True)},
    "order.cancel": {"order_id": ("str", True), "reason": ("str", False)},
    "order.release": {"order_id": ("str", True), "reason": ("str", False)},
    "order.reject": {"order_id": ("str", True), "reason": ("str", False)},
    "order.get": {"order_id": ("str", True)},
    "order.list": {"state": ("enum?", False), "limit": ("int", False), "after": ("str?", False)},
    "shipment.get": {"shipment_id": ("str", True)},
    "shipment.list": {"state": ("enum?", False), "limit": ("int", False),
                      "after": ("str?", False)},
    "shipment.confirm_manual": {"shipment_id": ("str", True), "scan": ("str", True)},
    "task.get": {"task_id": ("str", True)},
    "task.list": {"state": ("enum?", False), "purpose": ("enum?", False),
                  "limit": ("int", False), "after": ("str?", False)},
    "stock.list": {"drug_code": ("str?", False), "state": ("enum?", False),
                   "slot": ("int?", False), "limit": ("int", False), "after": ("int?", False)},
    "stock.load": {"scan": ("str", True), "wait": ("bool", False)},
    # ``gtin``: the old name of ``drug_code`` (accepted until 0.3.0); any value other than
    # the drug code beside it is refused.
    "stock.quarantine": {"drug_code": ("str", True), "gtin": ("str", False),
                         "batch": ("str", True), "reason": ("str", True)},
    "stock.discrepancies": {"limit": ("int", False), "after": ("int?", False)},
    "stock.sweep": {"output": ("int", True)},
    "machine.pause": {"reason": ("str", False)},
    "machine.maintenance": {"on": ("bool", True)},
    "fault.list": {"active": ("bool?", False), "limit": ("int", False), "after": ("int?", False)},
    "fault.ack": {"fault_id": ("int", True), "note": ("str?", False)},
    "robot.adopt": {"note": ("str?", False)},
    "label.reprint": {"shipment_id": ("str", True), "what": ("enum", False)},
    "diag.registers": {"address": ("int", True), "count": ("int", True)},
    "diag.selftest": {"slot": ("int", False)},
    "records.import": {"records": ("objects", True)},
    "prescriptions.register": {"prescriptions": ("objects", True)},
    "patient.get": {"patient_id": ("str", True)},
    "patient.renewals": {"within_days": ("int", False), "limit": ("int", False),
                         "after": ("str?", False)},
}
# Documented bounds: a value outside them is invalid_params.
BOUNDS: dict[str, tuple[int, int]] = {"limit": (1, 1000), "count": (1, 125),
                                      "within_days": (0, 365)}

# Calls that move the machine out of the state the other fuzzing needs; the role matrix
# calls them once each and then puts the machine back.
DISRUPTIVE = frozenset({"machine.pause", "machine.maintenance", "diag.selftest"})


def request(method: str, params: dict[str, Any] | None = None, rid: Any = 1) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg).encode()


# ============================================================================ the oracle


ANY = object()  # any reply id / code is fine


@dataclass(frozen=True)
class Expect:
    """What docs/api.md promises for one line.

    ``reply``: "one" (exactly one reply), "none" (no reply), "close" (one error reply, then
    the connection is closed), "maybe" (zero or one reply: the docs leave it open).
    ``codes``: the acceptable error codes; None allows a result or any documented code
    except -32603. ``ids``: the acceptable reply ids (a list, ``[ANY]`` for any).
    """

    reply: str
    codes: frozenset[int] | None = None
    ids: tuple[Any, ...] = (ANY,)
    why: str = ""
    data: dict[str, Any] | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def expect_line(line: bytes, role: str | None, docs: ApiDocs, limit: int,
                params_codes: frozenset[int] | None = None) -> Expect:
    """The documented answer to one line (without its newline) on a connection of ``role``.

    ``params_codes`` narrows the answer to a well-formed, permitted call (the hostile
    params category knows it, e.g. -32602 for a wrong type).
    """
    if len(line) > limit:
        return Expect("close", frozenset({-32600}), (None,), "line over the limit",
                      {"max_message_bytes": limit})
    if not line.strip():
        return Expect("none", why="blank line")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Expect("one", frozenset({-32700}), (None,), "not UTF-8")
    if _nesting(text) > 500:
        # Valid JSON, but nested deeper than a parser may be asked to go.
        return Expect("maybe", why="deep nesting")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # Valid JSON, but nested deeper than a parser may be asked to go.
        return Expect("maybe", why="nesting deeper than the parser's stack")
    except json.JSONDecodeError:
        return Expect("one", frozenset({-32700}), (None,), "not JSON")
    except ValueError as exc:
        if "NaN" in str(exc) or "Infinity" in str(exc):
            return Expect("one", frozenset({-32700}), (None,), "NaN/Infinity are not JSON")
        # An integer of thousands of digits: JSON allows it, the docs set no bound.
        return Expect("maybe", why="integer with thousands of digits")
    if _has_lone_surrogate(obj):
        # A \\ud800 escape: JSON's grammar allows it, but it stands for no character and
        # cannot be written as UTF-8. Refused or passed through, never a fault.
        return Expect("maybe", why="lone surrogate escape")
    if isinstance(obj, list):
        return Expect("one", frozenset({-32600}), (None,), "batch")
    if not isinstance(obj, dict):
        return Expect("one", frozenset({-32600}), (None,), "not an object")
    rid = obj.get("id") if _valid_id(obj.get("id")) else None
    if obj.get("jsonrpc") != "2.0" or type(obj.get("jsonrpc")) is not str:
        return Expect("one", frozenset({-32600}), (rid, None), "jsonrpc is not \"2.0\"")
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return Expect("one", frozenset({-32600}), (rid, None), "method is not a string")
    has_id = "id" in obj
    if has_id and not _valid_id(obj["id"]):
        return Expect("one", frozenset({-32600}), (None,), "id of a wrong type")
    if "params" in obj and not isinstance(obj["params"], dict):
        if not has_id:
            return Expect("none", why="notification")
        return Expect("one", frozenset({-32602}), (rid,), "params not an object")
    if not has_id:
        return Expect("none", why="notification")
    if method not in docs.allowed:
        codes = {-32601} if role is not None else {-32601, -32007}
        return Expect("one", frozenset(codes), (rid,), "unknown method")
    if role is None and method not in docs.anyone:
        return Expect("one", frozenset({-32007}), (rid,), "no role")
    if role is not None and role not in docs.allowed[method]:
        return Expect("one", frozenset({-32005}), (rid,), "forbidden",
                      {"role": role, "allowed_roles": sorted(docs.allowed[method])})
    return Expect("one", params_codes, (rid,), "permitted call")


def _nesting(text: str) -> int:
    """How deep brackets nest (brackets inside strings counted too: an upper bound)."""
    if text.count("[") + text.count("{") <= 500:
        return 0
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def expect_payload(payload: bytes, role: str | None, docs: ApiDocs, limit: int,
                   params_codes: frozenset[int] | None = None) -> list[tuple[bytes, Expect]]:
    """The expectation of each line of ``payload`` (a payload may hold several lines).

    Nothing is expected after a line that closes the connection.
    """
    out = []
    for line in payload.split(b"\n"):
        exp = expect_line(line, role, docs, limit, params_codes)
        out.append((line, exp))
        if exp.reply == "close":
            break
    return out


# ============================================================================ checking


@dataclass
class Observed:
    replies: list[Any]  # decoded replies (or the raw bytes of a line that is not JSON)
    closed: bool = False
    timed_out: bool = False
    elapsed: float = 0.0


def check_reply(reply: Any) -> str | None:
    """What is wrong with a reply's shape (JSON-RPC 2.0 and the error table), or None."""
    if not isinstance(reply, dict):
        return f"reply is not a JSON object: {reply!r:.200}"
    if reply.get("jsonrpc") != "2.0" or "id" not in reply:
        return f"reply without jsonrpc 2.0 or id: {reply!r:.200}"
    if ("result" in reply) == ("error" in reply) or set(reply) - {"jsonrpc", "id", "result",
                                                                  "error"}:
        return f"reply must have exactly one of result/error: {reply!r:.200}"
    if "error" in reply:
        err = reply["error"]
        if not isinstance(err, dict) or not isinstance(err.get("code"), int) or not (
                isinstance(err.get("message"), str) and err["message"]):
            return f"malformed error object: {err!r:.200}"
        if set(err) - {"code", "message", "data"}:
            return f"error object with unknown keys: {sorted(err)}"
        if err["code"] not in DOCUMENTED_CODES:
            return f"undocumented error code {err['code']}"
    return None


def _lists_errors(error: dict[str, Any]) -> bool:
    errors = error.get("data", {}).get("errors") if isinstance(error.get("data"), dict) else None
    return isinstance(errors, list) and bool(errors) and all(
        isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(
            e.get("message"), str) for e in errors)


def outcome_of(reply: Any) -> str:
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        return str(reply["error"].get("code"))
    return "result"


def judge(expects: list[tuple[bytes, Expect]], seen: Observed) -> tuple[list[str], list[str]]:
    """(outcomes, problems) of one payload: outcome names per line, and every broken promise."""
    outcomes: list[str] = []
    problems: list[str] = []
    replies = list(seen.replies)
    closes = any(e.reply == "close" for _, e in expects)
    for _line, exp in expects:
        if exp.reply == "none":
            outcomes.append("no reply")
            continue
        if exp.reply == "maybe" and not replies:
            outcomes.append("no reply")
            continue
        if not replies:
            if seen.timed_out:
                problems.append(f"no reply within the timeout ({exp.why})")
            else:
                problems.append(f"connection closed without a reply ({exp.why})")
            outcomes.append("FAIL")
            break
        reply = replies.pop(0)
        shape = check_reply(reply)
        if shape:
            problems.append(shape)
            outcomes.append("FAIL")
            continue
        outcome = outcome_of(reply)
        code = reply["error"]["code"] if "error" in reply else None
        if code == INTERNAL:
            problems.append(f"internal error ({exp.why}): {reply['error']!r:.300}")
        elif exp.codes is not None and code not in exp.codes:
            problems.append(f"expected {sorted(exp.codes)} ({exp.why}), got "
                            f"{'a result' if code is None else code}: {reply!r:.300}")
        if ANY not in exp.ids and reply.get("id") not in exp.ids:
            problems.append(f"reply id {reply.get('id')!r:.80} instead of {exp.ids!r:.80}")
        if code == -32602 and exp.why == "permitted call" and not _lists_errors(reply["error"]):
            problems.append(f"-32602 without data.errors [{{path, message}}]: {reply!r:.300}")
        if exp.data is not None and code is not None and reply["error"].get("data") != exp.data:
            problems.append(f"error data {reply['error'].get('data')!r:.200}, documented "
                            f"{exp.data!r:.200}")
        outcomes.append(outcome)
        if exp.reply == "close":
            outcomes.append("closed")
            if not seen.closed:
                problems.append("connection stayed open after a line over the limit")
    if replies:
        problems.append(f"{len(replies)} reply(ies) more than requests: {replies[0]!r:.200}")
    if not closes and seen.closed:
        problems.append("the daemon closed the connection")
    if not closes and seen.timed_out:
        problems.append("the connection stopped answering")
    return outcomes, problems


# ============================================================================ connections


class Conn:
    """A blocking connection to the API, logged in as ``role`` (or none)."""

    def __init__(self, path: str, role: str | None = None, timeout: float = 10.0) -> None:
        self.path = path
        self.role = role
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.closed = False
        self._n = 0
        if role is not None:
            reply = self.call("auth.login", {"token": TOKENS[role]})
            if reply.get("result") != {"role": role}:
                raise RuntimeError(f"login as {role} failed: {reply}")

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def read_message(self, deadline: float) -> Any:
        """The next reply (events skipped); None on close; raises TimeoutError."""
        while True:
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(1 << 20)
                except TimeoutError:
                    raise
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                if not chunk:
                    self.closed = True
                    return None
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                return line
            if isinstance(msg, dict) and "id" not in msg and msg.get("method") == "event":
                continue  # an event on a connection the fuzzing subscribed
            return msg

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._n += 1
        if not self.send(request(method, params, f"~call-{self._n}") + b"\n"):
            raise ConnectionError("connection closed")
        reply = self.read_message(time.monotonic() + self.timeout)
        if reply is None:
            raise ConnectionError("connection closed")
        return reply

    def exchange(self, payload: bytes) -> Observed:
        """Send ``payload`` as line(s), then a ping; collect every reply before the ping's."""
        self._n += 1
        sentinel = f"{SENTINEL}-{self._n}"
        started = time.monotonic()
        ok = self.send(payload + b"\n")
        if ok:
            self.send(request("system.ping", None, sentinel) + b"\n")
        seen = Observed([])
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                msg = self.read_message(deadline)
            except TimeoutError:
                seen.timed_out = True
                break
            if msg is None:
                seen.closed = True
                break
            if isinstance(msg, dict) and msg.get("id") == sentinel:
                break
            seen.replies.append(msg)
        seen.elapsed = time.monotonic() - started
        if seen.closed or seen.timed_out:
            self.close()
        return seen


# ============================================================================ generators


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
ANY_METHOD = st.sampled_from([*sorted(FIELDS), "no.such", "", "SYSTEM.PING", "system.ping ",
                              "rpc.discover", "system.ping\x00", "__init__", "events",
                              "\ud800"])


def _dumps(value: Any, *, ensure_ascii: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True).encode(
        "utf-8", "surrogatepass")


def corpus() -> list[bytes]:
    """A well-formed call of every documented method, plus a few notifications."""
    out = [request(m, VALID_PARAMS.get(m)) for m in sorted(FIELDS)]
    out += [b'{"jsonrpc":"2.0","method":"system.ping"}',
            b'{"jsonrpc":"2.0","id":"x","method":"system.info","params":{}}']
    return out


CORPUS = corpus()


@st.composite
def malformed_json(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "truncated", "tokens", "constants"]))
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=200))
    if kind == "text":
        return draw(st.text(min_size=1, max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "truncated":
        base = draw(st.sampled_from(CORPUS))
        return base[: draw(st.integers(1, len(base) - 1))]
    if kind == "constants":
        value = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        where = draw(st.sampled_from(["id", "params"]))
        if where == "id":
            return f'{{"jsonrpc":"2.0","id":{value},"method":"system.ping"}}'.encode()
        return (f'{{"jsonrpc":"2.0","id":1,"method":"order.list",'
                f'"params":{{"limit":{value}}}}}').encode()
    tokens = draw(st.lists(st.sampled_from(
        ['{', '}', '[', ']', ',', ':', '"jsonrpc"', '"2.0"', '"id"', '1', '-1', 'null', 'true',
         '"method"', '"system.ping"', '"params"', '{}', '"', '\\', '"\\u12"', "'x'", '01',
         '1.', '.5', '+1', '0x10', 'tru', '/*c*/', '\t', ' ', '\r']), min_size=1, max_size=30))
    return "".join(tokens).encode()


INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xe2\x82",
                b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xc3"]


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(CORPUS))
    out = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(out)))
        out[pos:pos] = draw(st.sampled_from(INVALID_UTF8))
    return bytes(out)


@st.composite
def envelope(draw: st.DrawFn) -> bytes:
    """Request objects with each member missing, of every JSON type, or odd; and non-objects."""
    if draw(st.integers(0, 9)) == 0:
        top = draw(st.one_of(JSON_VALUES, st.lists(st.builds(lambda: {"jsonrpc": "2.0",
                                                                      "id": 1,
                                                                      "method": "system.ping"}),
                                                   max_size=3)))
        return _dumps(top)
    msg: dict[str, Any] = {}
    jsonrpc = draw(st.sampled_from(["2.0", "2.0", "2.0", "2", "1.0", "2.00", 2.0, 2, None,
                                    "missing", ["2.0"]]))
    if jsonrpc != "missing":
        msg["jsonrpc"] = jsonrpc
    msg["method"] = draw(st.one_of(ANY_METHOD, ANY_METHOD, JSON_VALUES))
    rid = draw(st.sampled_from(["missing", "null", "int", "str", "float", "bool", "list",
                                "object", "bigint", "negative", "surrogate"]))
    ids = {"null": None, "int": draw(st.integers(0, 2**31)), "str": draw(st.text(max_size=30)),
           "float": draw(st.floats(allow_nan=False, allow_infinity=False)),
           "bool": draw(st.booleans()), "list": [1], "object": {"id": 1},
           "bigint": 2**64 + draw(st.integers(0, 10**30)), "negative": -draw(st.integers(1)),
           "surrogate": draw(st.sampled_from(["\ud800", "x\udc00", "\udbff\udbff"]))}
    if rid != "missing":
        msg["id"] = ids[rid]
    params = draw(st.sampled_from(["missing", "object", "list", "null", "scalar", "valid"]))
    if params == "object":
        msg["params"] = draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4))
    elif params == "list":
        msg["params"] = draw(st.lists(JSON_VALUES, max_size=3))
    elif params == "null":
        msg["params"] = None
    elif params == "scalar":
        msg["params"] = draw(JSON_SCALARS)
    elif params == "valid" and isinstance(msg["method"], str):
        msg["params"] = VALID_PARAMS.get(msg["method"], {})
    if draw(st.booleans()):
        msg[draw(st.text(max_size=8))] = draw(JSON_VALUES)  # an unknown member
    items = list(msg.items())
    order = draw(st.permutations(range(len(items))))
    return _dumps(dict(items[i] for i in order), ensure_ascii=draw(st.booleans()))


@st.composite
def huge_values(draw: st.DrawFn) -> bytes:
    """Huge numbers and strings in every position; thousands of keys."""
    kind = draw(st.sampled_from(["int", "float", "string", "keys", "list"]))
    where = draw(st.sampled_from(["id", "method", "param", "key"]))
    if kind == "int":
        digits = draw(st.sampled_from([19, 20, 40, 300, 4300, 4301, 5000, 20000]))
        lead = draw(st.integers(1, 9))
        value = ("-" if draw(st.booleans()) else "") + str(lead) + "7" * (digits - 1)
    elif kind == "float":
        value = draw(st.sampled_from(["1e308", "1e309", "-1e400", "5e-324", "1e-400", "-0.0",
                                      "0.1e99999", "1" * 400 + ".5", "123456789.0e-99999"]))
    elif kind == "string":
        size = draw(st.sampled_from([1000, 65536, 500_000, DEFAULT_LIMIT - 200]))
        unit = draw(st.sampled_from(["x", "é", "\u4e2d", "\U0001f48a", "\\n", "\\u0000"]))
        value = '"' + unit * (size // max(1, len(unit.encode()))) + '"'
    elif kind == "keys":
        n = draw(st.sampled_from([1000, 20000]))
        value = "{" + ",".join(f'"k{i}":{i}' for i in range(n)) + "}"
    else:
        n = draw(st.sampled_from([1000, 100_000]))
        value = "[" + ",".join(["0"] * n) + "]"
    method = draw(st.sampled_from(["system.ping", "order.get", "order.list", "fault.ack",
                                   "stock.list", "machine.pause", "diag.registers"]))
    if where == "id":
        return f'{{"jsonrpc":"2.0","id":{value},"method":"{method}"}}'.encode()
    if where == "method":
        return f'{{"jsonrpc":"2.0","id":1,"method":{value}}}'.encode()
    if where == "key":
        return f'{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{{value}:1}}}}'.encode()
    field_name = draw(st.sampled_from(sorted(FIELDS[method]) or ["x"]))
    return (f'{{"jsonrpc":"2.0","id":1,"method":"{method}",'
            f'"params":{{"{field_name}":{value}}}}}').encode()


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([10, 100, 500, 990, 1000, 5000, 100_000, 400_000]))
    shape = draw(st.sampled_from(["array", "object", "mixed"]))
    if shape == "array":
        opener, closer = "[", "]"
    elif shape == "object":
        opener, closer = '{"a":', "}"
    else:
        opener, closer = '[{"a":', "}]"
    balanced = draw(st.booleans())
    inner = opener * depth + "1" + (closer * depth if balanced else "")
    where = draw(st.sampled_from(["top", "params", "id", "order"]))
    if where == "top":
        return inner.encode()
    if where == "id":
        return f'{{"jsonrpc":"2.0","id":{inner},"method":"system.ping"}}'.encode()
    if where == "order":
        return (f'{{"jsonrpc":"2.0","id":1,"method":"order.submit",'
                f'"params":{{"order":{{"order_id":"FZ-DEEP","items":{inner}}}}}}}').encode()
    return f'{{"jsonrpc":"2.0","id":1,"method":"system.info","params":{{"x":{inner}}}}}'.encode()


def _wrong_values(kind: str) -> list[Any]:
    base = kind.rstrip("?")
    values: list[Any] = [[], {}, [1, 2], {"a": 1}, 1.5]
    if base != "str" and not base.startswith("enum"):
        values += ["1", "true", ""]
    if base != "int":
        values += [0, 1, -1]
    if base != "bool":
        values += [True, False]
    if not kind.endswith("?"):
        values.append(None)
    if base == "str":
        values += [12345678901234567890]
    if base in ("object",):
        values = [v for v in values if not isinstance(v, dict)] + ["{}"]
    if base in ("objects", "topics"):
        values = [v for v in values if v != []] + [[1], [None], "order"]
    if base == "topics":
        values = [v for v in values if not (isinstance(v, list) and not v)] + [[], ["nope"]]
    return values


HOSTILE_STRINGS = ["", " ", "\x00", "\ud800", "a\udfffb", "a\x00b", "\u202e\u0644",
                   "\U0001f48a" * 10, "x" * 65, "x" * 501, "x" * 100_000, "' OR 1=1 --",
                   "%s%n", "../../etc/passwd",
                   "\\u0000", "SH-00000001", "ORD-1", "null", "\ufeff", "\r\n"]
HOSTILE_INTS = [0, -1, -(2**31), 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30,
                10**300, 1000, 1001, 125, 126, 65535, 65536]


@dataclass(frozen=True)
class HostileCase:
    method: str
    params: dict[str, Any]
    codes: frozenset[int] | None  # exactly these, or None for "any but -32603"
    why: str


@st.composite
def hostile_params(draw: st.DrawFn) -> HostileCase:
    """A permitted method with one documented promise put to the test."""
    method = draw(st.sampled_from(sorted(set(FIELDS) - {"auth.login"} - DISRUPTIVE)))
    fields = FIELDS[method]
    params = dict(VALID_PARAMS.get(method, {}))
    bad = frozenset({-32602})
    kinds = ["unknown", "huge_list"] + (["wrong_type", "null", "hostile"] if fields else [])
    if any(req for _, req in fields.values()):
        kinds.append("missing")
    kind = draw(st.sampled_from(kinds))
    if kind == "unknown":
        key = draw(st.sampled_from(["extra", "ORDER_ID", "limit ", "__proto__", "", "id"]))
        if key in fields:
            key += "_x"
        params[key] = draw(JSON_SCALARS)
        return HostileCase(method, params, bad, f"unknown param {key!r}")
    if kind == "missing":
        name = draw(st.sampled_from(sorted(n for n, (_, req) in fields.items() if req)))
        params.pop(name, None)
        return HostileCase(method, params, bad, f"missing {name}")
    if kind == "huge_list":
        n = draw(st.sampled_from([1001, 10_000, 100_000]))
        if method == "order.submit_batch":
            params["orders"] = [sample_order(f"FZ-L{i}") for i in range(min(n, 1500))]
            return HostileCase(method, params, bad, f"{len(params['orders'])} orders")
        name = draw(st.sampled_from(sorted(fields) or ["extra"]))
        params[name] = [0] * n  # no documented param is a list of numbers
        return HostileCase(method, params, bad, f"{name}: list of {n} zeros")
    name = draw(st.sampled_from(sorted(fields)))
    kind_of, _ = fields[name]
    if kind == "wrong_type":
        params[name] = draw(st.sampled_from(_wrong_values(kind_of)))
        return HostileCase(method, params, bad, f"{name} ({kind_of}) = {params[name]!r:.40}")
    if kind == "null":
        params[name] = None
        return HostileCase(method, params, None if kind_of.endswith("?") else bad,
                           f"{name} = null")
    base = kind_of.rstrip("?")
    if base == "int":
        value = draw(st.sampled_from(HOSTILE_INTS))
        params[name] = value
        lo, hi = BOUNDS.get(name, (None, None))
        if method == "diag.registers" and name == "address":
            lo, hi = 0, 65535
        outside = lo is not None and hi is not None and not lo <= value <= hi
        return HostileCase(method, params, bad if outside else None, f"{name} = {value}")
    if base == "str" or base.startswith("enum"):
        text = draw(st.sampled_from(HOSTILE_STRINGS))
        params[name] = text
        codes = bad if base.startswith("enum") else None
        return HostileCase(method, params, codes, f"{name} = {text!r:.30}")
    params[name] = draw(JSON_VALUES)
    return HostileCase(method, params, None, f"{name} = {params[name]!r:.40}")


# docs/orders.md, field by field: values its rules refuse (invalid_order, -32001).
_BAD_IDS = ["", "x" * 65, "-abc", "a b", "\u00fc1", "a/b", 5, None, ["a"]]
_BAD_TEXT_200 = ["", "x" * 201, 5, None, {"a": 1}]
BAD_ORDER_FIELDS: dict[str, list[Any]] = {
    "order_id": _BAD_IDS, "patient.id": _BAD_IDS, "patient.name": _BAD_TEXT_200,
    "patient.phone": ["abc", "1234", "1" * 21, 13800000000, "++1234567"],
    "patient.insurance_id": ["abc", "x" * 33, "!!!!", 1234],
    "prescription.id": _BAD_IDS,
    "prescription.issued_on": ["2026-13-01", "yesterday", 20261101, "", "2026-02-30", None,
                               1764288000],
    "prescription.institution": _BAD_TEXT_200, "prescription.prescriber": _BAD_TEXT_200,
    "prescription.diagnoses": [[], ["X"], ["E11.9"] * 21, "E11.9", [11], None],
    "items": [[], "items", None, {"drug_code": DRUGS[0]}],
    "items.0.drug_code": ["123", 6900000010006, "0690000001000X", None, ""],
    "items.0.quantity": [0, 1001, "2", 2.5, True, -1, 2**64, None, 1e300],
    "items.0.days_supply": [0, 3651, "30", -30, 1.5, None, False],
    "delivery.address": ["", "x" * 501, None, 7],
    "delivery.window_start": ["2026-11-24T09:00:00", "tomorrow", 1, None, "2026-11-24",
                              "1764288000", 1764288000.5],
    "delivery.window_end": ["2020-01-01T00:00:00+00:00", "2026-11-24T09:00:00", None],
    "priority": ["URGENT", "", 1, None, "asap"],
}


@dataclass(frozen=True)
class OrderCase:
    path: str  # dotted; "+name" adds an unknown field there, "-name" removes it
    value: Any
    codes: frozenset[int] | None
    batch: bool


@st.composite
def hostile_orders(draw: st.DrawFn) -> OrderCase:
    """An order with one field broken the way docs/orders.md refuses, or hostile but legal."""
    batch = draw(st.booleans())
    kind = draw(st.sampled_from(["bad", "bad", "unknown", "missing", "too_many", "duplicate",
                                 "not_in_formulary", "legal"]))
    invalid = frozenset({-32001})
    if kind == "bad":
        path = draw(st.sampled_from(sorted(BAD_ORDER_FIELDS)))
        return OrderCase(path, draw(st.sampled_from(BAD_ORDER_FIELDS[path])), invalid, batch)
    if kind == "unknown":
        where = draw(st.sampled_from(["", "patient.", "prescription.", "items.0.", "delivery."]))
        return OrderCase(where + "+colour", "red", invalid, batch)
    if kind == "missing":
        path = draw(st.sampled_from(["order_id", "patient", "patient.id", "patient.name",
                                     "prescription", "prescription.issued_on", "items",
                                     "items.0.quantity", "delivery", "delivery.window_end"]))
        return OrderCase("-" + path, None, invalid, batch)
    if kind == "too_many":
        items = [{"drug_code": DRUGS[i % len(DRUGS)], "quantity": 1, "days_supply": 30}
                 for i in range(51)]
        return OrderCase("items", items, invalid, batch)
    if kind == "duplicate":
        item = {"drug_code": DRUGS[0], "quantity": 1, "days_supply": 30}
        return OrderCase("items", [item, dict(item)], invalid, batch)
    if kind == "not_in_formulary":
        return OrderCase("items.0.drug_code", "06999999999994", frozenset({-32002}), batch)
    path = draw(st.sampled_from(["patient.name", "delivery.address", "prescription.prescriber"]))
    text = draw(st.sampled_from(["\u202e\u0644\u0627", "\U0001f48a" * 50, "a\x00b", "'; DROP",
                                 "\\u0000", "x" * 200]))
    return OrderCase(path, text, None, batch)


def broken_order(order_id: str, case: OrderCase) -> dict[str, Any]:
    order: dict[str, Any] = json.loads(json.dumps(sample_order(order_id, DRUGS[0])))
    *parents, last = case.path.lstrip("+-").split(".")
    node: Any = order
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if case.path.startswith("-"):
        node.pop(last, None)
    elif case.path.startswith("+") or last.startswith("+"):
        node[last.lstrip("+")] = case.value
    elif isinstance(node, list):
        node[int(last)] = case.value
    else:
        node[last] = case.value
    return order


MUTATIONS = ("flip", "insert", "delete", "duplicate", "truncate", "newline", "swap_quote",
             "splice")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A well-formed call with a few byte-level mutations."""
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(MUTATIONS))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos: pos + draw(st.integers(1, 8))]
        elif op == "duplicate":
            data[pos:pos] = data[pos: pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "newline":
            data[pos:pos] = b"\n"
        elif op == "swap_quote":
            data = bytearray(bytes(data).replace(b'"', b"'", 1))
        elif op == "splice":
            other = draw(st.sampled_from(CORPUS))
            data[pos:] = other[draw(st.integers(0, len(other) - 1)):]
    return bytes(data)


# ============================================================================ the target


@dataclass
class Target:
    """A running daemon: its socket, message limit and a way to tell whether it still runs."""

    socket: str
    limit: int
    alive: Callable[[], bool]
    log_path: Path | None = None
    invariant: Callable[[], list[str]] | None = None  # journal vs ledger problems


@contextlib.contextmanager
def live_stack(workdir: Path | None = None) -> Iterator[Target]:
    """``dispenser-sim`` and ``dispenserd`` as processes (``bench.stack.Stack``), machine
    ready. On leaving, the journal is checked against the simulator's ledger pack by pack
    (``Target.invariant``) before both stop."""
    import asyncio

    from dispenser.testing import Stack

    tmp = Path(workdir or tempfile.mkdtemp(prefix="fz", dir="/tmp"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-stack", daemon=True)
    thread.start()

    def sync(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(300)

    stack = Stack(tmp, instant=True)
    try:
        sync(stack.start())

        def invariant() -> list[str]:
            report = sync(stack.check_invariant(require_final=False))
            return list(report.problems)

        yield Target(str(stack.daemon.socket), DEFAULT_LIMIT, stack.daemon.alive,
                     stack.daemon_log, invariant)
    finally:
        with contextlib.suppress(Exception):
            sync(stack.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


# ============================================================================ the run


@dataclass
class Failure:
    category: str
    role: str | None
    payload: bytes
    problems: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"category": self.category, "role": self.role,
                "payload_b64": base64.b64encode(self.payload).decode(),
                "problems": self.problems}


@dataclass
class Report:
    seed: int
    cases: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[Failure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, category: str, outcomes: Iterable[str], failure: Failure | None,
            new_case: bool = True) -> None:
        """Count a case's outcomes (``new_case=False``: more outcomes of the last case)."""
        with self.lock:
            self.cases[category] += new_case
            self.outcomes[category].update(outcomes)
            if failure is not None:
                self.failures.append(failure)

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        lines = [f"seed {self.seed}: {sum(self.cases.values())} cases, "
                 f"{len(self.failures)} failed"]
        width = max([len(c) for c in self.cases] + [8])
        for category in self.cases:
            outs = ", ".join(f"{k} {v}" for k, v in sorted(
                self.outcomes[category].items(), key=lambda kv: (-kv[1], kv[0])) if v)
            failed = sum(1 for f in self.failures if f.category == category)
            lines.append(f"  {category:<{width}} {self.cases[category]:>6} cases  "
                         f"{failed:>4} failed  | {outs}")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


class Watcher(threading.Thread):
    """Pings the daemon on its own connection throughout and records each latency."""

    def __init__(self, path: str, interval: float = 0.05) -> None:
        super().__init__(name="fuzz-watcher", daemon=True)
        self.path = path
        self.interval = interval
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        conn = Conn(self.path, None, timeout=30)
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                reply = conn.call("system.ping")
                if not isinstance(reply, dict) or reply.get("result", {}).get("pong") is not True:
                    self.errors.append(f"bad ping reply {reply!r:.100}")
            except (OSError, ConnectionError) as exc:
                self.errors.append(f"ping failed: {exc!r}")
                conn.close()
                try:
                    conn = Conn(self.path, None, timeout=30)
                except OSError:
                    time.sleep(0.5)
                continue
            self.latencies.append(time.monotonic() - started)
            self._halt.wait(self.interval)
        conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(60)

    def summary(self) -> str:
        lat = sorted(self.latencies) or [math.nan]

        def p(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
        return (f"watcher: {len(self.latencies)} pings, p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} "
                f"ms, max {lat[-1] * 1000:.1f} ms, {len(self.errors)} failed")


class Fuzzer:
    def __init__(self, target: Target, seed: int, report: Report, docs: ApiDocs,
                 timeout: float = 10.0) -> None:
        self.t = target
        self.seed = seed
        self.report = report
        self.docs = docs
        self.timeout = timeout
        self.conns: dict[str | None, Conn] = {}
        self.last_seen = Observed([])

    # -- plumbing

    def conn(self, role: str | None) -> Conn:
        c = self.conns.get(role)
        if c is None or c.closed:
            c = self.conns[role] = Conn(self.t.socket, role, self.timeout)
        return c

    def send_checked(self, category: str, role: str | None, payload: bytes,
                     params_codes: frozenset[int] | None = None,
                     conn: Conn | None = None, already_sent: bytes = b"") -> list[str]:
        """Send ``payload`` and check the replies; ``already_sent``: line(s) the caller
        sent before on ``conn`` whose replies are still to come."""
        c = conn or self.conn(role)
        expects = expect_payload(already_sent + payload, role, self.docs, self.t.limit,
                                 params_codes)
        seen = self.last_seen = c.exchange(payload)
        outcomes, problems = judge(expects, seen)
        if not self.t.alive():
            problems.append("the daemon is no longer running")
        failure = Failure(category, role, payload, problems) if problems else None
        self.report.add(category, outcomes, failure)
        return problems

    def hypothesis_run(self, category: str, strategy: st.SearchStrategy[Any], n: int,
                       body: Callable[[Any], object]) -> None:
        if n <= 0:
            return
        offset = sum(map(ord, category))

        @hypothesis_seed(self.seed * 1000 + offset)
        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=False)
        @given(strategy, st.sampled_from([None, *ROLES]))
        def run(case: Any, role: str | None) -> None:
            body((case, role))

        run()

    # -- categories

    def lines(self, category: str, strategy: st.SearchStrategy[bytes], n: int) -> None:
        self.hypothesis_run(category, strategy, n,
                            lambda cr: self.send_checked(category, cr[1], cr[0]))

    def hostile(self, n: int) -> None:
        def body(cr: tuple[HostileCase, str | None]) -> None:
            case, _ = cr
            # The roles the fuzz has a connection for (the records feed's role it has not).
            roles = sorted(r for r in self.docs.allowed.get(case.method, ROLES) if r in ROLES)
            if not roles:  # only the records feed may call it: the role matrix covers it
                return
            role = roles[len(case.why) % len(roles)]
            payload = request(case.method, case.params, len(case.why))
            self.send_checked("hostile_params", role, payload, case.codes)
        self.hypothesis_run("hostile_params", hostile_params(), n, body)

    def orders(self, n: int) -> None:
        """Orders broken one field at a time (docs/orders.md), alone and inside a batch."""
        counter = iter(range(10**9))

        def body(cr: tuple[OrderCase, str | None]) -> None:
            case, _ = cr
            role = ("order_system", "staff", "technician")[len(case.path) % 3]
            oid = f"FZ-O{self.seed}-{next(counter)}"
            order = broken_order(oid, case)
            if not case.batch:
                self.send_checked("hostile_orders", role,
                                  _dumps({"jsonrpc": "2.0", "id": oid, "method": "order.submit",
                                          "params": {"order": order}}), case.codes)
                return
            # In a batch the broken order gets its own error; the good one goes through.
            good = sample_order(oid + "-ok", DRUGS[1])
            payload = _dumps({"jsonrpc": "2.0", "id": oid, "method": "order.submit_batch",
                              "params": {"orders": [order, good]}})
            seen = self.conn(role).exchange(payload)
            outcomes, problems = judge(expect_payload(payload, role, self.docs, self.t.limit),
                                       seen)
            results = (seen.replies[0].get("result") or {}).get("results") if (
                seen.replies and isinstance(seen.replies[0], dict)) else None
            if not problems:
                if not isinstance(results, list) or len(results) != 2:
                    problems.append(f"order.submit_batch without two results: "
                                    f"{seen.replies[0]!r:.300}")
                else:
                    code = (results[0].get("error") or {}).get("code")
                    if code == INTERNAL or (case.codes is not None and code not in case.codes):
                        problems.append(f"broken order in a batch got {code}, documented "
                                        f"{sorted(case.codes or [])}: {results[0]!r:.300}")
                    if "error" in results[1]:
                        problems.append(f"the good order of the batch was refused: "
                                        f"{results[1]!r:.300}")
                    outcomes = [f"batch item {code if code is not None else 'accepted'}"]
            self.report.add("hostile_orders", outcomes,
                            Failure("hostile_orders", role, payload, problems)
                            if problems else None)

        self.hypothesis_run("hostile_orders", hostile_orders(), n, body)

    def ids(self) -> None:
        """Request ids of every JSON type, echoed or refused as JSON-RPC says."""
        for rid in [None, 0, -1, 2**53 + 1, 2**64, "", "a", "\U0001f48a", "x" * 10000,
                    True, False, 1.0, 1.5, [], [1], {}, {"a": 1}]:
            for role in (None, "technician"):
                payload = json.dumps({"jsonrpc": "2.0", "id": rid,
                                      "method": "machine.status"}).encode()
                self.send_checked("ids", role, payload)

    def oversize(self, rng_sizes: list[int]) -> None:
        """Lines at and around ``max_message_bytes``: the limit itself passes, more closes."""
        limit = self.t.limit
        head = b'{"jsonrpc":"2.0","id":1,"method":"system.ping","params":{"pad":"'
        tail = b'"}}'
        for size in [limit - 1, limit, limit + 1, 2 * limit, *rng_sizes]:
            payload = head + b"x" * (size - len(head) - len(tail)) + tail
            assert len(payload) == size
            conn = Conn(self.t.socket, None, self.timeout)
            try:
                self.send_checked("oversize", None, payload, conn=conn)
            finally:
                conn.close()
        # No newline at all, just more and more bytes: closed once past the limit.
        conn = Conn(self.t.socket, None, self.timeout)
        try:
            conn.send(b"x" * (limit + 10))
            seen = Observed([])
            with contextlib.suppress(TimeoutError):
                while (msg := conn.read_message(time.monotonic() + self.timeout)) is not None:
                    seen.replies.append(msg)
            seen.closed = conn.closed
            expects = [(b"", expect_line(b"x" * (limit + 10), None, self.docs, limit))]
            outcomes, problems = judge(expects, seen)
            self.report.add("oversize", outcomes,
                            Failure("oversize", None, b"x" * 64 + b"...", problems)
                            if problems else None)
        finally:
            conn.close()

    def half_written(self, n: int) -> None:
        """A line without its newline and then: the write side shut, a hang-up, or the rest
        in small pieces with pauses (a slow client); or a whole request, then a hang-up
        before the reply."""
        def body(cr: tuple[tuple[bytes, str, int], str | None]) -> None:
            (payload, ending, cut), role = cr
            payload = payload.replace(b"\n", b" ")
            conn = Conn(self.t.socket, role, self.timeout)
            try:
                if ending == "slow":
                    for i in range(0, len(payload), max(1, cut)):
                        conn.send(payload[i: i + max(1, cut)])
                        time.sleep(0.002)
                    conn.send(b"\n")
                    self.send_checked("half_written", role, b"", conn=conn,
                                      already_sent=payload + b"\n")
                    return
                if ending in ("hangup", "gone"):
                    # Mid-line, or a whole request and gone before its reply.
                    conn.send(payload[:cut] if ending == "hangup" else payload + b"\n")
                    conn.close()
                    self.report.add("half_written", [f"{ending}: hung up"], None)
                    return
                conn.send(payload)
                conn.sock.shutdown(socket.SHUT_WR)
                seen = Observed([])
                with contextlib.suppress(TimeoutError):
                    while (msg := conn.read_message(time.monotonic() + self.timeout)) is not None:
                        seen.replies.append(msg)
                seen.closed = conn.closed
                exp = expect_line(payload, role, self.docs, self.t.limit)
                outcomes, problems = judge([(payload, exp)], seen)
                outcomes.append("closed")
                problems = [p for p in problems if p != "the daemon closed the connection"]
                if not seen.closed:
                    problems.append("connection not closed after the client's end of file")
                self.report.add("half_written", outcomes,
                                Failure("half_written", role, payload, problems)
                                if problems else None)
            finally:
                conn.close()

        strategy = st.tuples(st.sampled_from(CORPUS) | mutated(),
                             st.sampled_from(["eof", "hangup", "gone", "slow"]),
                             st.integers(1, 40))
        self.hypothesis_run("half_written", strategy, n, body)

    def non_reader(self, watcher: Watcher) -> None:
        """A client that sends but never reads: once its unread replies pass the bound the
        daemon reads no more of its requests (api.md, Limits), so its sending stalls; the
        watcher's pings carry on."""
        conn = Conn(self.t.socket, "technician", self.timeout)
        big_id = "i" * 900_000
        sent = 0
        started = time.monotonic()
        before = len(watcher.latencies)
        try:
            conn.sock.settimeout(5)
            while time.monotonic() - started < 30:
                line = request("system.ping", None, f"{big_id}{sent}") + b"\n"
                try:
                    conn.sock.sendall(line)
                except (TimeoutError, BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
        finally:
            conn.close()
        took = time.monotonic() - started
        pings = len(watcher.latencies) - before
        self.report.notes.append(
            f"non-reading client: {sent} requests with 900 KB ids (~{sent * 0.9:.0f} MB of "
            f"replies) sent in {took:.1f} s before the daemon stopped taking them; "
            f"{pings} watcher pings meanwhile")
        self.report.add("slow_client", ["stopped reading" if took < 30 else "still reading"],
                        None if took < 30 else Failure("slow_client", "technician", b"", [
                            "the daemon kept reading the requests of a client that never "
                            "reads its replies for 30 s"]))

    def concurrent(self, n_conns: int, per_conn: int) -> None:
        """``n_conns`` connections at once, each with fuzz lines and well-formed calls."""
        import random

        rng = random.Random(self.seed)
        plans = []
        for i in range(n_conns):
            role = rng.choice([None, *ROLES])
            plan = []
            for _ in range(per_conn):
                if rng.random() < 0.5:
                    plan.append(rng.choice(CORPUS))
                else:
                    base = bytearray(rng.choice(CORPUS))
                    pos = rng.randrange(len(base))
                    base[pos:pos + rng.randint(0, 3)] = rng.choice(
                        [b"", b"\xff", b"}", b'"', b"1e999", b"null", b"[", b"\x00"])
                    plan.append(bytes(base).replace(b"\n", b" "))
            plans.append((i, role, plan))
        barrier = threading.Barrier(n_conns)

        def client(i: int, role: str | None, plan: list[bytes]) -> None:
            try:
                conn = Conn(self.t.socket, role, 60)
            except (OSError, RuntimeError) as exc:
                self.report.add("concurrent", ["FAIL"],
                                Failure("concurrent", role, b"", [f"connect: {exc!r}"]))
                barrier.abort()
                return
            try:
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait(60)
                for payload in plan:
                    if conn.closed:
                        conn = Conn(self.t.socket, role, 60)
                    self.send_checked("concurrent", role, payload, conn=conn)
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=p) for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)

    def role_matrix(self) -> None:
        """Every documented method called by every role (and none). A refusal must be the
        documented code and change nothing; a refused mutating call of a caller with a role
        adds one audit record; a refused call without a role adds none and is counted once
        in ``diag.stats`` (api.md, Limits: such calls are only summarized per peer)."""
        tech = Conn(self.t.socket, "technician", 30)
        try:
            for method in self.docs.methods:
                for role in (None, *ROLES):
                    allowed = method in self.docs.anyone or (
                        role is not None and role in self.docs.allowed[method])
                    params = VALID_PARAMS.get(method)
                    if method == "auth.login":
                        params = {"token": "wrong"}
                    payload = request(method, params, f"m-{method}-{role}")
                    if allowed:
                        self.send_checked("role_matrix", role, payload)
                        continue
                    wanted = 1 if method in self.docs.mutating and role is not None else 0
                    self.refusal_changes_nothing("role_matrix", role, payload, wanted, tech,
                                                 self.snapshot,
                                                 refused_without_role=int(role is None))
            self.restore(tech)
        finally:
            tech.close()

    def refusal_changes_nothing(self, category: str, role: str | None, payload: bytes,
                                audit_records: int, tech: Conn,
                                snapshot: Callable[[Conn], dict[str, Any]],
                                codes: frozenset[int] | None = None,
                                refused_without_role: int = 0) -> None:
        """Send a call that must be refused and check that it added exactly
        ``audit_records`` audit records, ``refused_without_role`` to the count of calls
        refused for want of a role (when ``snapshot`` reads it), and changed nothing else
        ``snapshot`` sees. The daemon keeps working meanwhile (merging, picking): a
        difference is measured again once, with the same call, before it counts."""
        problems: list[str] = []
        for _attempt in (1, 2):
            before = snapshot(tech)
            if self.send_checked(category, role, payload, codes):
                return  # the reply itself was wrong: already reported
            after = snapshot(tech)
            added = after.pop("audit_records") - before.pop("audit_records")
            # A line refused before it names a call (not JSON, not a request) is no call.
            no_call = any(outcome_of(r) in ("-32700", "-32600") for r in self.last_seen.replies)
            wanted = 0 if no_call else audit_records
            problems = [f"{added} audit records added, documented {wanted}"] if (
                added != wanted) else []
            if "refused_without_role" in before:
                counted = after.pop("refused_without_role") - before.pop(
                    "refused_without_role")
                wanted_count = 0 if no_call else refused_without_role
                if counted != wanted_count:
                    problems.append(f"{counted} refusals without a role counted in diag.stats,"
                                    f" documented {wanted_count}")
            problems += [f"changed {key}" for key in before if before[key] != after[key]]
            if not problems:
                break
        self.report.add(category, ["unchanged" if not problems else "FAIL"],
                        Failure(category, role, payload, problems) if problems else None,
                        new_case=False)

    def audited_refusals(self) -> None:
        """A mutating call refused for its params is audited too: one record each, whatever
        the params hold."""
        tech = Conn(self.t.socket, "technician", 30)
        try:
            variants: list[dict[str, Any]] = [
                {"bogus": 1}, {"reason": 7, "note": []}, {"order_id": "\ud800", "bogus": 1},
                {"reason": "\udfff", "bogus": 1}, {"note": "\ud800\u0000", "bogus": 1},
                {"batch": 1e308, "bogus": 1}, {"order_id": "x" * 100_000, "bogus": 1}]
            for method in sorted(self.docs.mutating):
                for i, params in enumerate(variants):
                    payload = _dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                      "params": params})
                    self.refusal_changes_nothing("audited_refusals", "technician", payload, 1,
                                                 tech, self.audit_count, frozenset({-32602}))
        finally:
            tech.close()

    def audit_count(self, tech: Conn) -> dict[str, Any]:
        return {"audit_records": tech.call("audit.verify")["result"]["records"]}

    def snapshot(self, tech: Conn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        status = tech.call("machine.status")["result"]
        out["machine"] = (status["state"], status["active_faults"], status["orders"],
                          status["shipments"], status["loads_waiting"])
        for method, params in (("order.list", {"limit": 1000}),
                               ("shipment.list", {"limit": 1000}),
                               ("stock.list", {"state": None, "limit": 1000}),
                               ("fault.list", {"limit": 1000}),
                               ("stock.discrepancies", {"limit": 1000})):
            out[method] = tech.call(method, params).get("result")
        out["audit_records"] = tech.call("audit.verify")["result"]["records"]
        refused = tech.call("diag.stats")["result"]["api"]["refused_without_role"]
        out["refused_without_role"] = sum(n for reasons in refused.values()
                                          for n in reasons.values())
        return out

    def restore(self, tech: Conn) -> None:
        """Back to ``ready`` after calls that pause or maintain the machine."""
        for method, params in (("machine.maintenance", {"on": False}),
                               ("machine.resume", None)):
            tech.call(method, params)

    def disruptive(self) -> None:
        """Hostile params for the methods that move the machine, then back to ready."""
        tech = Conn(self.t.socket, "technician", 30)
        try:
            cases: list[tuple[str, dict[str, Any] | None, set[int] | None]] = [
                ("machine.pause", {"reason": 5}, {-32602}),
                ("machine.pause", {"reason": "x" * 501}, {-32602}),
                ("machine.pause", {"extra": 1}, {-32602}),
                ("machine.maintenance", {"on": "true"}, {-32602}),
                ("machine.maintenance", {"on": 1}, {-32602}),
                ("machine.maintenance", {"on": None}, {-32602}),
                ("machine.maintenance", {}, {-32602}),
                ("machine.maintenance", {"on": True, "x": 1}, {-32602}),
                ("diag.selftest", {"slot": -1}, {-32602}),
                ("diag.selftest", {"slot": "0"}, {-32602}),
                ("diag.selftest", {"slot": 2**64}, None),
                ("machine.maintenance", {"on": True}, None),
                ("diag.selftest", {"slot": 10**30}, None),
                ("diag.selftest", {"slot": 2**16}, None),
                ("diag.selftest", {"slot": 0, "x": 1}, {-32602}),
                ("machine.maintenance", {"on": False}, None),
                ("machine.pause", {"reason": "\U0001f48a"}, None),
                ("machine.resume", {"x": 1}, {-32602}),
                ("machine.resume", None, None),
            ]
            for i, (method, params, codes) in enumerate(cases):
                self.send_checked("hostile_params", "technician", request(method, params, i),
                                  frozenset(codes) if codes else None, conn=tech)
            self.restore_quietly(tech)
        finally:
            tech.close()

    def restore_quietly(self, tech: Conn) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            self.restore(tech)

    def final_checks(self, watcher: Watcher, max_latency: float) -> None:
        problems = []
        if not self.t.alive():
            problems.append("the daemon is not running at the end")
        else:
            tech = Conn(self.t.socket, "technician", 60)
            verify = tech.call("audit.verify").get("result", {})
            tech.close()
            self.report.notes.append(f"audit.verify: ok={verify.get('ok')}, "
                                     f"{verify.get('records')} records")
            if verify.get("ok") is not True:
                problems.append(f"audit.verify: {verify}")
            if self.t.invariant is not None:
                broken = self.t.invariant()
                self.report.notes.append(f"journal vs simulator ledger: {len(broken)} problems")
                problems += broken[:10]
        self.report.notes.append(watcher.summary())
        problems += self.log_problems()
        if watcher.errors:
            problems += watcher.errors[:5]
        if watcher.latencies and max(watcher.latencies) > max_latency:
            problems.append(f"watcher ping took {max(watcher.latencies):.2f} s "
                            f"(bound {max_latency} s)")
        if problems:
            self.report.add("invariants", ["FAIL"], Failure("invariants", None, b"", problems))
        else:
            self.report.add("invariants", ["ok"], None)

    def log_problems(self) -> list[str]:
        """Faults the daemon logged: each is a defect even when the client got an answer."""
        if self.t.log_path is None or not self.t.log_path.exists():
            return []
        text = self.t.log_path.read_text(errors="replace")
        counts = {what: text.count(what) for what in
                  ("api handler failed", "Unhandled exception", "audit hook failed")}
        self.report.notes.append("daemon log: " + ", ".join(
            f"{n} x {what!r}" for what, n in counts.items()))
        return [f"the daemon logged {n} x {what!r}" for what, n in counts.items() if n]

    def close(self) -> None:
        for c in self.conns.values():
            c.close()


# Share of --cases per category (the fixed ones run a set number of cases of their own).
CATEGORIES: dict[str, float] = {
    "malformed_json": 0.14, "invalid_utf8": 0.08, "envelope": 0.20, "huge_values": 0.04,
    "deep_nesting": 0.03, "hostile_params": 0.15, "hostile_orders": 0.05, "mutated": 0.20,
    "half_written": 0.06, "concurrent": 0.05,
}
FIXED = ("ids", "audited_refusals", "oversize", "slow_client", "role_matrix", "invariants")


def run(target: Target, cases: int, seed: int, only: set[str] | None = None,
        max_latency: float = 2.0, concurrency: int = 100) -> Report:
    """Fuzz ``target`` with about ``cases`` messages; see the module docstring."""
    import random

    docs = ApiDocs.load()
    report = Report(seed)
    fuzz = Fuzzer(target, seed, report, docs)
    watcher = Watcher(target.socket)
    watcher.start()

    def want(name: str) -> bool:
        return only is None or name in only
    share = {k: max(1, round(cases * v)) for k, v in CATEGORIES.items()}
    try:
        if want("role_matrix"):
            fuzz.role_matrix()
        if want("ids"):
            fuzz.ids()
        if want("audited_refusals"):
            fuzz.audited_refusals()
        strategies = {"malformed_json": malformed_json(), "invalid_utf8": invalid_utf8(),
                      "envelope": envelope(), "huge_values": huge_values(),
                      "deep_nesting": deep_nesting(), "mutated": mutated()}
        for name, strategy in strategies.items():
            if want(name):
                fuzz.lines(name, strategy, share[name])
        if want("hostile_params"):
            fuzz.hostile(share["hostile_params"])
            fuzz.disruptive()
        if want("hostile_orders"):
            fuzz.orders(share["hostile_orders"])
        if want("half_written"):
            fuzz.half_written(share["half_written"])
        if want("oversize"):
            rng = random.Random(seed)
            fuzz.oversize([rng.randint(target.limit + 2, 3 * target.limit) for _ in range(2)])
        if want("concurrent"):
            per = max(3, share["concurrent"] // concurrency)
            fuzz.concurrent(concurrency, per)
        if want("slow_client"):
            fuzz.non_reader(watcher)
    finally:
        fuzz.close()
        watcher.stop()
    fuzz.final_checks(watcher, max_latency)
    return report


def replay(target: Target, path: Path) -> Report:
    docs = ApiDocs.load()
    report = Report(0)
    fuzz = Fuzzer(target, 0, report, docs)
    for line in path.read_text().splitlines():
        f = json.loads(line)
        if f["payload_b64"]:
            fuzz.send_checked(f["category"], f["role"], base64.b64decode(f["payload_b64"]))
    fuzz.close()
    return report


def failure_groups(report: Report) -> dict[tuple[str, str], list[Failure]]:
    """Failures by category and kind of problem (numbers and quoted values left out)."""
    groups: dict[tuple[str, str], list[Failure]] = defaultdict(list)
    for f in report.failures:
        kind = re.sub(r"[{'].*|incident \w+|(?<![-\d])\d+ ", "", f.problems[0]).strip()
        groups[(f.category, kind)].append(f)
    return groups


def print_failures(report: Report, per_group: int = 2) -> None:
    for (category, kind), failures in failure_groups(report).items():
        print(f"FAIL [{category}] x{len(failures)}: {kind}")
        for f in failures[:per_group]:
            print(f"    role={f.role} payload={f.payload[:200]!r}"
                  f"{' ...' if len(f.payload) > 200 else ''} ({len(f.payload)} bytes)")
            for p in f.problems:
                print(f"      {p[:300]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000, help="fuzz cases to send (about)")
    p.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    p.add_argument("--only", help="comma-separated categories: " + ", ".join(
        [*CATEGORIES, *FIXED[:-1]]))
    p.add_argument("--concurrency", type=int, default=100, help="connections at once")
    p.add_argument("--max-latency", type=float, default=2.0,
                   help="slowest watcher ping accepted, seconds")
    p.add_argument("--failures", type=Path, default=Path("fuzz-failures.jsonl"),
                   help="where failing payloads are written (JSON lines)")
    p.add_argument("--replay", type=Path, help="send the payloads of a failures file again")
    p.add_argument("--keep", type=Path, help="keep the daemon's files (log, journal) here")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    only = set(args.only.split(",")) if args.only else None
    print(f"fuzzing with seed {seed}: replay with --cases {args.cases} --seed {seed}"
          + (f" --only {args.only}" if args.only else ""), flush=True)
    started = time.monotonic()
    with live_stack(args.keep) as target:
        if args.replay:
            report = replay(target, args.replay)
        else:
            report = run(target, args.cases, seed, only, args.max_latency, args.concurrency)
    report.notes.append(f"took {time.monotonic() - started:.0f} s")
    print(report.render())
    print_failures(report)
    if report.failures:
        with open(args.failures, "w") as fh:
            for f in report.failures:
                fh.write(json.dumps(f.as_json()) + "\n")
        print(f"failing payloads written to {args.failures}; replay with "
              f"--replay {args.failures}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
