"""The fuzzer's oracle says what docs/api.md says: checked without a daemon."""

from __future__ import annotations

import json

import pytest

from dispenser.testing.campaigns.fuzz import (
    FIELDS,
    ApiDocs,
    Observed,
    expect_line,
    expect_payload,
    judge,
)

DOCS = ApiDocs.load()
LIMIT = 1024


def test_every_documented_method_has_its_params_described() -> None:
    assert set(DOCS.methods) == set(FIELDS)
    assert DOCS.anyone == {"system.ping", "system.info", "auth.login"}
    assert DOCS.allowed["audit.verify"] == {"technician"}
    assert DOCS.allowed["order.submit"] == {"order_system", "staff", "technician"}
    assert DOCS.allowed["stock.load"] == {"staff", "technician"}
    assert {"order.submit", "machine.pause", "diag.selftest"} <= DOCS.mutating
    assert not {"order.get", "audit.verify", "system.ping"} & DOCS.mutating


@pytest.mark.parametrize(("line", "role", "reply", "codes", "ids"), [
    (b"", None, "none", None, None),
    (b"  \t", "staff", "none", None, None),
    (b"\xff{}", None, "one", {-32700}, (None,)),
    (b'{"jsonrpc":"2.0","id":1,"method":"system.ping"', None, "one", {-32700}, (None,)),
    (b'{"jsonrpc":"2.0","id":NaN,"method":"system.ping"}', None, "one", {-32700}, (None,)),
    (b"[]", None, "one", {-32600}, (None,)),
    (b'[{"jsonrpc":"2.0","id":1,"method":"system.ping"}]', None, "one", {-32600}, (None,)),
    (b"7", None, "one", {-32600}, (None,)),
    (b'{"jsonrpc":"1.0","id":3,"method":"system.ping"}', None, "one", {-32600}, (3, None)),
    (b'{"jsonrpc":"2.0","id":3,"method":7}', None, "one", {-32600}, (3, None)),
    (b'{"jsonrpc":"2.0","id":true,"method":"system.ping"}', None, "one", {-32600}, (None,)),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"system.ping"}', None, "one", {-32600}, (None,)),
    (b'{"jsonrpc":"2.0","id":"a","method":"order.get","params":[1]}', "staff", "one",
     {-32602}, ("a",)),
    (b'{"jsonrpc":"2.0","method":"order.get","params":[1]}', "staff", "none", None, None),
    (b'{"jsonrpc":"2.0","method":"no.such"}', None, "none", None, None),
    (b'{"jsonrpc":"2.0","id":null,"method":"no.such"}', "staff", "one", {-32601}, (None,)),
    (b'{"jsonrpc":"2.0","id":2,"method":"order.list"}', None, "one", {-32007}, (2,)),
    (b'{"jsonrpc":"2.0","id":2,"method":"audit.verify"}', "staff", "one", {-32005}, (2,)),
    (b'{"jsonrpc":"2.0","id":2,"method":"audit.verify"}', "technician", "one", None, (2,)),
    (b'{"jsonrpc":"2.0","id":2,"method":"system.ping"}', None, "one", None, (2,)),
])
def test_expectation_per_line(line: bytes, role: str | None, reply: str,
                              codes: set[int] | None, ids: tuple[object, ...] | None) -> None:
    exp = expect_line(line, role, DOCS, LIMIT)
    assert exp.reply == reply
    assert exp.codes == (frozenset(codes) if codes is not None else None)
    if ids is not None:
        assert exp.ids == ids


def test_a_forbidden_call_must_name_the_role_and_the_allowed_roles() -> None:
    exp = expect_line(b'{"jsonrpc":"2.0","id":2,"method":"stock.load"}', "order_system",
                      DOCS, LIMIT)
    assert exp.data == {"role": "order_system", "allowed_roles": ["staff", "technician"]}


def test_over_the_limit_closes_and_nothing_after_it_is_expected() -> None:
    line = b"x" * (LIMIT + 1)
    assert expect_line(b"x" * LIMIT, None, DOCS, LIMIT).codes == frozenset({-32700})
    expects = expect_payload(line + b"\n" + b'{"jsonrpc":"2.0","id":1,"method":"system.ping"}',
                             None, DOCS, LIMIT)
    assert [e.reply for _, e in expects] == ["close"]
    assert expects[0][1].data == {"max_message_bytes": LIMIT}


def test_lone_surrogates_and_huge_integers_may_be_refused_but_need_no_fault() -> None:
    for line in (b'{"jsonrpc":"2.0","id":"\\ud800","method":"system.ping"}',
                 b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"system.ping"}'):
        assert expect_line(line, None, DOCS, 1 << 20).reply == "maybe"


def reply(rid: object, code: int | None = None, data: object = None) -> dict[str, object]:
    if code is None:
        return {"jsonrpc": "2.0", "id": rid, "result": {"pong": True}}
    error: dict[str, object] = {"code": code, "message": "refused"}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def test_judge_accepts_the_documented_answers() -> None:
    payload = (b'{"jsonrpc":"2.0","id":1,"method":"system.ping"}\n\n'
               b'{"jsonrpc":"2.0","method":"system.ping"}\n{bad')
    expects = expect_payload(payload, None, DOCS, LIMIT)
    outcomes, problems = judge(expects, Observed([reply(1), reply(None, -32700)]))
    assert problems == []
    assert outcomes == ["result", "no reply", "no reply", "-32700"]


@pytest.mark.parametrize(("replies", "closed", "problem"), [
    ([], True, "connection closed without a reply"),
    ([reply(1, -32603, {"incident": "x"})], False, "internal error"),
    ([reply(2)], False, "reply id 2"),
    ([reply(1), reply(1)], False, "more than requests"),
    ([{"jsonrpc": "2.0", "id": 1}], False, "exactly one of result/error"),
    ([reply(1, -32099)], False, "undocumented error code"),
    ([reply(1)], True, "the daemon closed the connection"),
])
def test_judge_names_each_broken_promise(replies: list[object], closed: bool,
                                         problem: str) -> None:
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "system.ping"}).encode()
    _, problems = judge(expect_payload(line, None, DOCS, LIMIT), Observed(replies, closed))
    assert any(problem in p for p in problems), problems
