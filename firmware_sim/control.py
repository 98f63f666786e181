"""Control socket: JSON-RPC 2.0 over a Unix socket, one JSON object per line.

Methods (params by name): ``sim.ledger``, ``sim.status``, ``sim.put_input {packs}``,
``sim.take_input {count?}``, ``sim.put_slot {slot, packs}``, ``sim.inject {fault, ...}``,
``sim.clear {fault?}``, ``sim.replace_board``, ``sim.save {path}``, ``sim.load {path}``.
Errors use the standard codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from firmware_sim.errors import SimulatorError

if TYPE_CHECKING:
    from firmware_sim.simulator import Simulator

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

LINE_LIMIT = 64 * 1024 * 1024


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _params(
    params: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object")
    missing = [name for name in required if name not in params]
    if missing:
        raise RpcError(INVALID_PARAMS, f"missing params: {', '.join(missing)}")
    unknown = set(params) - set(required) - set(optional)
    if unknown:
        raise RpcError(INVALID_PARAMS, f"unknown params: {', '.join(sorted(unknown))}")
    return params


class ControlServer:
    def __init__(self, sim: Simulator, path: str) -> None:
        self.sim = sim
        self.path = path
        self._server: asyncio.Server | None = None
        self._bound = False
        self._clients: set[asyncio.Task[None]] = set()
        self.methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "sim.ledger": self._ledger,
            "sim.status": self._status,
            "sim.put_input": self._put_input,
            "sim.take_input": self._take_input,
            "sim.put_slot": self._put_slot,
            "sim.inject": self._inject,
            "sim.clear": self._clear,
            "sim.replace_board": self._replace_board,
            "sim.save": self._save,
            "sim.load": self._load,
        }

    async def start(self) -> None:
        # A socket left by an earlier run is replaced; one another simulator still serves
        # is not, nor is any other file.
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                if _served(self.path):
                    raise SimulatorError(f"another simulator serves {self.path}")
                os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, self.path, limit=LINE_LIMIT)
        self._bound = True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            for task in list(self._clients):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._server.wait_closed()
            self._server = None
        if self._bound:  # never the socket of another simulator this one found serving
            self._bound = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    response: dict[str, Any] | None = _error(None, INVALID_REQUEST, "line too long")
                    writer.write(json.dumps(response).encode() + b"\n")
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self.handle_line(line)
                if response is not None:
                    writer.write(json.dumps(response).encode() + b"\n")
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def handle_line(self, line: bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(None, PARSE_ERROR, f"parse error: {exc}")
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "a request is one JSON object")
        rid = request.get("id")
        is_notification = "id" not in request
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(rid, INVALID_REQUEST, 'need "jsonrpc": "2.0" and a method name')
        handler = self.methods.get(method)
        try:
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"no method {method!r}")
            result = await handler(request.get("params"))
        except RpcError as exc:
            return None if is_notification else _error(rid, exc.code, exc.message)
        except Exception as exc:  # a bad request must not kill the socket
            if isinstance(exc, SimulatorError):
                return None if is_notification else _error(rid, INVALID_PARAMS, str(exc))
            return None if is_notification else _error(rid, INTERNAL_ERROR, repr(exc))
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "id": rid, "result": result}

    # --- methods -----------------------------------------------------------------------

    async def _ledger(self, params: Any) -> Any:
        _params(params, ())
        return self.sim.ledger()

    async def _status(self, params: Any) -> Any:
        _params(params, ())
        return self.sim.status()

    async def _put_input(self, params: Any) -> Any:
        p = _params(params, ("packs",))
        if not isinstance(p["packs"], list):
            raise RpcError(INVALID_PARAMS, "packs must be a list")
        return {"input_count": self.sim.put_input(p["packs"])}

    async def _take_input(self, params: Any) -> Any:
        p = _params(params, (), ("count",))
        count = p.get("count", 1)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise RpcError(INVALID_PARAMS, "count must be an integer (or null: all)")
        taken = self.sim.take_input(count)
        return {"packs": [p.to_dict() for p in taken],
                "input_count": len(self.sim.robot.input)}

    async def _replace_board(self, params: Any) -> Any:
        _params(params, ())
        return await self.sim.replace_board()

    async def _put_slot(self, params: Any) -> Any:
        p = _params(params, ("slot", "packs"))
        if not isinstance(p["packs"], list) or not isinstance(p["slot"], int):
            raise RpcError(INVALID_PARAMS, "slot is an integer, packs a list")
        return {"slot_count": self.sim.put_slot(p["slot"], p["packs"])}

    async def _inject(self, params: Any) -> Any:
        if not isinstance(params, dict) or not isinstance(params.get("fault"), str):
            raise RpcError(INVALID_PARAMS, "params need a fault name")
        rest = {k: v for k, v in params.items() if k != "fault"}
        return self.sim.inject(params["fault"], **rest)

    async def _clear(self, params: Any) -> Any:
        p = _params(params, (), ("fault",))
        fault = p.get("fault")
        if fault is not None and not isinstance(fault, str):
            raise RpcError(INVALID_PARAMS, "fault must be a name")
        return self.sim.clear(fault)

    async def _save(self, params: Any) -> Any:
        p = _params(params, ("path",))
        try:
            self.sim.save(str(p["path"]))
        except OSError as exc:
            raise RpcError(INVALID_PARAMS, f"cannot save: {exc}") from exc
        return {"saved": p["path"]}

    async def _load(self, params: Any) -> Any:
        p = _params(params, ("path",))
        await self.sim.load(str(p["path"]))
        return {"loaded": p["path"]}


def _served(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}
