"""JSON-RPC 2.0 over newline-delimited JSON: message shapes and error codes.

Framing: every message is one JSON object encoded as UTF-8 on a single line ending in
``\\n`` (JSON escapes newlines inside strings, so a message never spans lines). Both sides
may send at any time: the server sends responses (matched by ``id``) and notifications
(``{"jsonrpc": "2.0", "method": "event", "params": {...}}``).

Rules a client may rely on:

- a request without ``id`` is a notification and never gets a reply, not even an error;
- ``params`` is an object (named parameters) or omitted; positional (array) params are
  refused with -32602;
- batches (a JSON array of requests) are **not supported** and refused with one -32600
  error whose ``id`` is ``null``; send one request per line instead (requests on one
  connection are answered in the order they were sent);
- errors carry ``code``, ``message`` (a sentence a person can act on) and sometimes
  ``data`` (machine-readable details, e.g. the list of bad order fields).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "JSONRPC_VERSION",
    "ApiError",
    "ErrorCode",
    "MessageError",
    "Request",
    "encode",
    "error_response",
    "notification",
    "parse_params",
    "parse_request",
    "result_response",
]

JSONRPC_VERSION = "2.0"

RequestId = str | int | None


class ErrorCode(IntEnum):
    """Error codes: JSON-RPC's standard ones and the dispenser's application codes."""

    # Standard JSON-RPC 2.0 codes.
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # Application codes.
    INVALID_ORDER = -32001
    UNKNOWN_DRUG = -32002
    NOT_FOUND = -32003
    CONFLICT = -32004
    FORBIDDEN = -32005
    WRONG_STATE = -32006
    UNAUTHENTICATED = -32007
    LOAD_REFUSED = -32008
    HARDWARE = -32009
    JOURNAL_UNAVAILABLE = -32010
    # Sent once to a connection the server will not serve, which it then closes.
    TOO_MANY_CONNECTIONS = -32020


class ApiError(Exception):
    """A refusal a method handler raises; becomes the JSON-RPC ``error`` object.

    The client raises the same type, so ``code``/``message``/``data`` round-trip.
    ``code`` is an :class:`ErrorCode` when known, the plain int otherwise.
    """

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        try:
            self.code: int = ErrorCode(code)
        except ValueError:
            self.code = int(code)
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": int(self.code), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @classmethod
    def from_error(cls, error: Any) -> ApiError:
        """Rebuild from a received ``error`` object (tolerating a malformed one)."""
        if not isinstance(error, dict):
            return cls(ErrorCode.INTERNAL_ERROR, f"malformed error object: {error!r}")
        code = error.get("code")
        message = error.get("message")
        return cls(
            code if isinstance(code, int) else ErrorCode.INTERNAL_ERROR,
            message if isinstance(message, str) else "error without a message",
            error.get("data"),
        )

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, {self.message!r}, data={self.data!r})"

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else "error"
        return f"{self.message} ({name} {int(self.code)})"


@dataclass(frozen=True)
class Request:
    """One decoded request. ``has_id`` is False for a notification."""

    method: str
    params: dict[str, Any]
    id: RequestId = None
    has_id: bool = True


def _request_id(obj: Any) -> RequestId:
    """The id to echo in an error for a message that failed validation (null if unusable)."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool):
            return value
    return None


# Python refuses to convert longer integers (sys.get_int_max_str_digits), so such a number
# could be neither used nor echoed.
MAX_NUMBER_DIGITS = 4300
# A \u escape of half a surrogate pair (U+D800-U+DFFF); alone it is no character.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _NotJson(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _NotJson(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _parse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def parse_request(line: bytes) -> Request:
    """Decode one line; raises :class:`MessageError` when it is not a usable request.

    Parse errors (-32700), besides bytes that are not UTF-8 and text that is not JSON:
    ``NaN``/``Infinity``, numbers of more than ``MAX_NUMBER_DIGITS`` digits, nesting
    deeper than the parser's stack and ``\\uD800``-style escapes of a lone surrogate (no
    character, not representable in UTF-8). So every string a handler sees can be stored
    and sent back as UTF-8, and every number converted.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(
            ErrorCode.PARSE_ERROR, f"message is not valid UTF-8 ({exc.reason})"
        ) from None
    try:
        obj = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise MessageError(ErrorCode.PARSE_ERROR, f"message is not valid JSON: {exc.msg}") from None
    except _NotJson as exc:
        raise MessageError(ErrorCode.PARSE_ERROR, f"message is not valid JSON: {exc}") from None
    except RecursionError:
        raise MessageError(ErrorCode.PARSE_ERROR, "message is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        raise MessageError(
            ErrorCode.PARSE_ERROR,
            "message is not valid UTF-8: a \\u escape names half of a surrogate pair",
        )
    if isinstance(obj, list):
        raise MessageError(
            ErrorCode.INVALID_REQUEST,
            "batches are not supported: send one request object per line",
        )
    if not isinstance(obj, dict):
        raise MessageError(ErrorCode.INVALID_REQUEST, "a request must be a JSON object")
    request_id = _request_id(obj)
    if obj.get("jsonrpc") != JSONRPC_VERSION:
        raise MessageError(ErrorCode.INVALID_REQUEST, '"jsonrpc" must be "2.0"', request_id)
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        raise MessageError(
            ErrorCode.INVALID_REQUEST, '"method" must be a non-empty string', request_id
        )
    has_id = "id" in obj
    raw_id = obj.get("id")
    if has_id and not (
        raw_id is None or (isinstance(raw_id, str | int) and not isinstance(raw_id, bool))
    ):
        raise MessageError(ErrorCode.INVALID_REQUEST, '"id" must be a string, an integer or null')
    params = obj.get("params", {})
    if not isinstance(params, dict):
        raise MessageError(
            ErrorCode.INVALID_PARAMS,
            '"params" must be an object of named parameters',
            request_id,
            notification=not has_id,
        )
    return Request(method=method, params=params, id=raw_id, has_id=has_id)


class MessageError(ApiError):
    """A line that is not a usable request.

    ``request_id`` is the id to answer with (null when it could not be read);
    ``notification`` is True when the message was a notification, which gets no answer.
    """

    def __init__(
        self, code: int, message: str, request_id: RequestId = None, *, notification: bool = False
    ) -> None:
        super().__init__(code, message)
        self.request_id = request_id
        self.notification = notification


def result_response(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "result": result}


def error_response(request_id: RequestId, error: ApiError) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC_VERSION, "id": request_id, "error": error.to_error()}


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC_VERSION, "method": method, "params": params}


def encode(message: dict[str, Any]) -> bytes:
    """One message as a UTF-8 line. Raises TypeError/ValueError if not JSON-able."""
    return (
        json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
            "utf-8"
        )
        + b"\n"
    )


Model = TypeVar("Model", bound=BaseModel)


def parse_params(model: type[Model], params: dict[str, Any]) -> Model:
    """Validate ``params`` with a pydantic model; bad params become -32602 listing each field.

    ``data`` is ``{"errors": [{"path": "items.0.quantity", "message": "..."}]}``.
    """
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        errors = [
            {
                "path": ".".join(str(part) for part in error["loc"]) or "(params)",
                "message": "unknown parameter"
                if error["type"] == "extra_forbidden"
                else str(error["msg"]).removeprefix("Value error, "),
            }
            for error in exc.errors()
        ]
        listing = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise ApiError(
            ErrorCode.INVALID_PARAMS, f"invalid params: {listing}", {"errors": errors}
        ) from None
