"""Message decoding, error objects, tokens and the method registry, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from dispenser.api.auth import Authenticator, hash_token, new_token
from dispenser.api.protocol import (
    ApiError,
    ErrorCode,
    MessageError,
    encode,
    parse_params,
    parse_request,
)
from dispenser.api.server import Caller, MethodRegistry
from dispenser.config import TokenConfig


def test_error_codes_are_the_documented_ones() -> None:
    assert {c.name: int(c) for c in ErrorCode} == {
        "PARSE_ERROR": -32700,
        "INVALID_REQUEST": -32600,
        "METHOD_NOT_FOUND": -32601,
        "INVALID_PARAMS": -32602,
        "INTERNAL_ERROR": -32603,
        "INVALID_ORDER": -32001,
        "UNKNOWN_DRUG": -32002,
        "NOT_FOUND": -32003,
        "CONFLICT": -32004,
        "FORBIDDEN": -32005,
        "WRONG_STATE": -32006,
        "UNAUTHENTICATED": -32007,
        "LOAD_REFUSED": -32008,
        "HARDWARE": -32009,
        "TOO_MANY_CONNECTIONS": -32020,
        "JOURNAL_UNAVAILABLE": -32010,
    }


def test_request_and_notification() -> None:
    request = parse_request(b'{"jsonrpc":"2.0","id":"a1","method":"order.get","params":{"x":1}}')
    assert (request.method, request.params, request.id, request.has_id) == (
        "order.get",
        {"x": 1},
        "a1",
        True,
    )
    note = parse_request(b'{"jsonrpc":"2.0","method":"system.ping"}\n')
    assert note.has_id is False
    assert note.params == {}
    assert parse_request(b'{"jsonrpc":"2.0","id":null,"method":"m"}').has_id is True


def test_invalid_params_of_a_notification_are_not_answered() -> None:
    with pytest.raises(MessageError) as caught:
        parse_request(b'{"jsonrpc":"2.0","method":"m","params":[1]}')
    assert caught.value.code == ErrorCode.INVALID_PARAMS
    assert caught.value.notification is True


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(line: bytes) -> None:
    try:
        parse_request(line)
    except MessageError as error:
        assert error.code in {
            ErrorCode.PARSE_ERROR,
            ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_PARAMS,
        }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(json_values)
def test_arbitrary_json_is_answered_or_accepted(value: Any) -> None:
    line = json.dumps(value).encode()
    try:
        request = parse_request(line)
    except MessageError:
        return
    assert isinstance(value, dict) and value["method"] == request.method


@given(st.text())
def test_encode_is_one_line_of_utf8(text: str) -> None:
    data = encode({"jsonrpc": "2.0", "method": "event", "params": {"text": text}})
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data.decode("utf-8"))["params"]["text"] == text


def test_api_error_round_trip() -> None:
    error = ApiError(ErrorCode.CONFLICT, "order id reused with other content", {"order_id": "A"})
    again = ApiError.from_error(error.to_error())
    assert (again.code, again.message, again.data) == (
        ErrorCode.CONFLICT,
        "order id reused with other content",
        {"order_id": "A"},
    )
    assert "CONFLICT -32004" in str(again)
    unknown = ApiError.from_error({"code": -1, "message": "odd"})
    assert unknown.code == -1
    assert ApiError.from_error("garbage").code == ErrorCode.INTERNAL_ERROR


def test_parse_params_lists_every_bad_field() -> None:
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        order_id: str
        quantity: int

    assert parse_params(Params, {"order_id": "A", "quantity": 2}).quantity == 2
    with pytest.raises(ApiError) as caught:
        parse_params(Params, {"quantity": "many", "colour": 1})
    assert caught.value.code == ErrorCode.INVALID_PARAMS
    paths = [e["path"] for e in caught.value.data["errors"]]
    assert sorted(paths) == ["colour", "order_id", "quantity"]


def test_token_hash_and_constant_time_check() -> None:
    token = new_token()
    assert len(token) >= 40 and new_token() != token
    configured = hash_token(token)
    assert configured.startswith("sha256:") and len(configured) == 7 + 64
    assert hash_token("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    with pytest.raises(ValueError):
        hash_token("")
    auth = Authenticator(
        [
            TokenConfig(role="staff", hash=configured, label="desk"),
            TokenConfig(role="technician", hash=hash_token("other")),
        ],
        {1000: "technician"},
    )
    identity = auth.check_token(token)
    assert identity is not None and (identity.role, identity.principal) == ("staff", "desk")
    other = auth.check_token("other")
    assert other is not None and other.principal == "token#1"
    assert auth.check_token(token + "x") is None
    assert auth.check_token(configured) is None  # the hash itself is not a token
    assert auth.check_uid(1000) is not None and auth.check_uid(1001) is None
    assert auth.check_uid(None) is None


def test_registry_validates_declarations() -> None:
    registry = MethodRegistry()

    async def handler(params: dict[str, Any], caller: Caller) -> None:
        return None

    registry.add("a.b", handler, roles={"staff"}, mutating=True)
    method = registry.get("a.b")
    assert method is not None and method.roles == frozenset({"staff"}) and method.mutating
    assert "a.b" in registry and registry.names() == ["a.b"]
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a.b", handler)
    with pytest.raises(ValueError, match="roles"):
        registry.add("c.d", handler, roles={"janitor"})
    with pytest.raises(ValueError, match="roles"):
        registry.add("c.d", handler, roles=set())

    def not_async(params: dict[str, Any], caller: Caller) -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        registry.add("e.f", not_async)  # type: ignore[arg-type]


@pytest.mark.parametrize(("line", "words"), [
    (b'{"jsonrpc":"2.0","id":"\\ud800","method":"system.ping"}', "surrogate"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":["x\\uDFFF"]}}', "surrogate"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"\\udbff":1}}', "surrogate"),
    (b'{"jsonrpc":"2.0","id":' + b"9" * 4301 + b',"method":"m"}', "4300 digits"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":-' + b"9" * 5000 + b"}}",
     "4300 digits"),
    (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"n":NaN}}', "NaN"),
    (b'{"jsonrpc":"2.0","id":Infinity,"method":"m"}', "Infinity"),
])
def test_what_could_not_be_stored_or_echoed_is_a_parse_error(line: bytes, words: str) -> None:
    # Before, a lone surrogate or a 4301-digit number got through (and later broke the
    # reply, SQLite or the audit trail), NaN/Infinity were taken as numbers.
    with pytest.raises(MessageError) as caught:
        parse_request(line)
    assert caught.value.code == ErrorCode.PARSE_ERROR
    assert caught.value.request_id is None
    assert words in caught.value.message


def test_surrogate_pairs_escaped_backslashes_and_long_numbers_are_fine() -> None:
    assert parse_request(b'{"jsonrpc":"2.0","id":"\\ud83d\\udc8a","method":"m"}').id == "\U0001f48a"
    assert parse_request(b'{"jsonrpc":"2.0","id":"\\\\ud800","method":"m"}').id == "\\ud800"
    assert parse_request(b'{"jsonrpc":"2.0","id":-' + b"9" * 4300 + b',"method":"m"}').id == -(
        10**4300 - 1)
