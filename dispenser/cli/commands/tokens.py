"""``hash-token``: the ``sha256:...`` form of a token for ``[[api.tokens]]`` in the config.

The token is read from stdin (or typed at a hidden prompt), never taken as an argument,
so it does not end up in shell history or the process list. ``--new`` makes a fresh token.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from rich.text import Text

from dispenser.api.auth import hash_token, new_token
from dispenser.cli.context import Context, Exit, UsageError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "hash-token", parents=[common], help="print the configured (hashed) form of a token",
        description="Print the form of a token that goes into the daemon's configuration "
        "([[api.tokens]] hash). The token is read from stdin or a hidden prompt; --new makes "
        "a random one and prints it too (give it to the client, keep only the hash). "
        "Needs no daemon.")
    p.add_argument("--new", action="store_true", help="generate a new random token")
    p.set_defaults(func=hash_command, offline=True)


def _read_token() -> str:
    if sys.stdin.isatty():
        token = getpass.getpass("token: ")
    else:
        token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        raise UsageError("no token given (type it at the prompt or pipe it on stdin)")
    return token


def hash_command(ctx: Context, args: argparse.Namespace) -> Exit:
    token = new_token() if args.new else _read_token()
    hashed = hash_token(token)
    if ctx.json:
        ctx.print_json({"token": token, "hash": hashed} if args.new else {"hash": hashed})
    elif args.new:
        ctx.print(Text(f"token: {token}\nhash:  {hashed}"))
    else:
        ctx.print(Text(hashed))
    return Exit.OK
