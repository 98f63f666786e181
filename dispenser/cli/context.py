"""What every command gets: the connection, the output streams and the exit codes.

A command is a function ``(ctx, args) -> Exit``. It calls the daemon with :meth:`Context.call`
(the connection is opened and logged in on first use) and shows a result with
:meth:`Context.emit`, which prints the raw JSON instead of the table under ``--json``.
Refusals (:class:`~dispenser.api.protocol.ApiError`), :class:`Unreachable` and
:class:`UsageError` propagate to ``main``, which turns them into the documented exit codes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from rich.console import Console, RenderableType

from dispenser.api.client import SyncApiClient
from dispenser.api.protocol import ApiError
from dispenser.cli.sheet import Sheet, plain_output
from dispenser.cli.visible import json_text, visible, visible_tree

__all__ = ["Context", "Exit", "Unreachable", "UsageError", "dumps"]


class Exit(IntEnum):
    """Exit codes of dispenserctl. Scripts rely on them: keep them stable (docs/cli.md)."""

    OK = 0
    REFUSED = 1  # the daemon refused: not found, wrong state, forbidden, invalid ...
    USAGE = 2  # bad arguments (argparse), unreadable input file, bad token file
    UNREACHABLE = 3  # no connection to dispenserd, or no answer in time
    PARTIAL = 4  # submit/load: one or more lines refused, the others processed
    AUDIT_FAILED = 5  # audit verify found the trail incomplete or altered


class UsageError(Exception):
    """The command line or an input file is unusable (exit 2)."""


class Unreachable(Exception):
    """dispenserd cannot be reached or did not answer in time (exit 3)."""


def dumps(value: Any) -> str:
    """One JSON document on one line (what ``--json`` prints); no control character in it
    is written raw (``dispenser.cli.visible.json_text``)."""
    return json_text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Into a file or a pipe: lists and records are plain lines that are never broken
        # (dispenser.cli.sheet); messages are printed whole too (soft_wrap in print()).
        console.width = 200
    return console


@dataclass
class Context:
    socket: str
    token: str | None
    timeout: float
    json: bool
    out: Console = field(default_factory=lambda: _console(stderr=False))
    err: Console = field(default_factory=lambda: _console(stderr=True))
    _client: SyncApiClient | None = None

    # -- the connection

    def client(self) -> SyncApiClient:
        if self._client is None:
            try:
                self._client = SyncApiClient(self.socket, token=self.token, timeout=self.timeout)
            except FileNotFoundError:
                raise Unreachable(
                    f"no socket at {self.socket}: is dispenserd running? "
                    "(choose another with --socket or $DISPENSER_SOCKET)"
                ) from None
            except ConnectionRefusedError:
                # Nobody listens: a port that is closed, or the socket file a crashed daemon
                # left behind.
                raise Unreachable(
                    f"cannot connect to dispenserd at {self.socket}: connection refused: "
                    "is dispenserd running?"
                ) from None
            except TimeoutError:
                raise Unreachable(
                    f"dispenserd at {self.socket} did not answer within {self.timeout:g} s"
                ) from None
            except OSError as exc:  # refused, permission denied, reset ...
                raise Unreachable(
                    f"cannot connect to dispenserd at {self.socket}: {_reason(exc)}"
                ) from None
        return self._client

    def call(self, method: str, params: dict[str, Any] | None = None,
             *, timeout: float | None = None) -> Any:
        """Call a method; refusals raise ApiError, a lost or silent daemon Unreachable.

        Except under ``--json`` (printed as JSON, exact), the result and a refusal's
        message and data come with every control character escaped visibly
        (``dispenser.cli.visible``): whatever renders them cannot write one to the
        terminal."""
        client = self.client()
        wait = self.timeout if timeout is None else timeout
        try:
            result = client.call(method, params, timeout=wait)
        except ApiError as exc:
            if self.json:
                raise
            raise ApiError(exc.code, visible(exc.message), visible_tree(exc.data)) from None
        except TimeoutError:
            raise Unreachable(
                f"dispenserd did not answer {method} within {wait:g} s (see --timeout)"
            ) from None
        except OSError as exc:  # ConnectionError: the daemon went away
            raise Unreachable(f"lost the connection to dispenserd: {_reason(exc)}") from None
        return result if self.json else visible_tree(result)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- output

    def emit(self, result: Any, render: Callable[[Any], RenderableType | None]) -> None:
        """The raw result as JSON under ``--json``, else what ``render`` makes of it."""
        if self.json:
            self.print_json(result)
            return
        shown = render(result)
        if shown is not None:
            self.print(shown)

    def print(self, shown: RenderableType) -> None:
        """Lists fit the width; plain lines are never broken (grep finds them whole). In a
        pipe or a file a list's page hint goes to stderr, apart from the rows."""
        if isinstance(shown, Sheet) and shown.hint is not None and plain_output(self.out):
            self.out.print(shown, soft_wrap=True)
            self.err.print(shown.hint, soft_wrap=True)
            return
        self.out.print(shown, soft_wrap=True)

    def print_json(self, value: Any) -> None:
        sys.stdout.write(dumps(value) + "\n")
        sys.stdout.flush()

    @property
    def interactive(self) -> bool:
        """Progress bars only for a person watching stderr, never under --json."""
        return not self.json and self.err.is_terminal
