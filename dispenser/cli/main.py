"""``dispenserctl``: the command line for pharmacy staff and technicians (docs/cli.md)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.text import Text

from dispenser.api.protocol import ApiError
from dispenser.cli.args import complete_files, seconds
from dispenser.cli.commands import register_all
from dispenser.cli.context import Context, Exit, Unreachable, UsageError, dumps
from dispenser.cli.render import api_error_lines, code_name
from dispenser.config import ApiConfig

__all__ = ["build_parser", "main"]

DESCRIPTION = (
    "Talks to dispenserd over its socket API (docs/api.md) with the caller's token. Shows "
    "results as tables on a terminal, as plain aligned text in a pipe or a file, or as the "
    "raw JSON result with --json. See docs/cli.md.")

EXIT_CODES = """\
exit codes:
  0  done
  1  dispenserd refused (not found, wrong state, forbidden, invalid ...), or a
     check it ran failed (diag selftest, reprint not printed)
  2  usage error: bad arguments, unreadable input or token file
  3  cannot connect to dispenserd, or no answer within --timeout
  4  partial success: submit/load refused one or more lines (all are reported)
  5  audit verify: the audit trail is incomplete or altered

environment: DISPENSER_SOCKET (socket path or host:port), DISPENSER_TOKEN
"""


def default_socket() -> str:
    return os.environ.get("DISPENSER_SOCKET") or str(ApiConfig.model_fields["socket"].default)


def _common() -> argparse.ArgumentParser:
    """Global options, accepted before or after the command (``status --json``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    s = argparse.SUPPRESS  # unset unless given, so a later level does not overwrite it
    complete_files(group.add_argument(
        "--socket", default=s, metavar="PATH",
        help="dispenserd's socket or host:port (default $DISPENSER_SOCKET, "
        f"else {ApiConfig.model_fields['socket'].default})"))
    group.add_argument("--token", default=s, help="API token (default $DISPENSER_TOKEN)")
    complete_files(group.add_argument("--token-file", default=s, metavar="FILE",
                                      help="read the API token from FILE"))
    group.add_argument("--json", action="store_true", default=s,
                       help="print the raw JSON result on stdout (errors as JSON on stderr)")
    group.add_argument("--timeout", type=seconds(0.01, 3600), default=s, metavar="SECONDS",
                       help="to connect and for each call (default 30)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="dispenserctl", parents=[common], description=DESCRIPTION,
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register_all(sub, common)
    # Commands that describe the CLI itself (shell completion) read it from here.
    parser.set_defaults(parser=parser)
    return parser


def _token(args: argparse.Namespace) -> str | None:
    token: str | None = getattr(args, "token", None)
    path: str | None = getattr(args, "token_file", None)
    if token is not None and path is not None:
        raise UsageError("give --token or --token-file, not both")
    if path is not None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read token file {path}: {exc}") from None
        if not token:
            raise UsageError(f"token file {path} is empty")
    if token is None:
        token = os.environ.get("DISPENSER_TOKEN") or None
    return token


def _report(ctx: Context, code: Exit, name: str, message: str, lines: list[str],
            error: dict[str, object] | None = None) -> Exit:
    if ctx.json:
        body: dict[str, object] = error or {"name": name, "message": message}
        sys.stderr.write(f'{{"error":{dumps(body)},"exit_code":{int(code)}}}\n')
    else:
        ctx.err.print(Text("dispenserctl: " + "\n".join(lines), style="red"))
    return code


def run(ctx: Context, args: argparse.Namespace) -> Exit:
    try:
        return Exit(args.func(ctx, args))
    except UsageError as exc:
        return _report(ctx, Exit.USAGE, "usage", str(exc), [f"error: {exc}"])
    except Unreachable as exc:
        return _report(ctx, Exit.UNREACHABLE, "unreachable", str(exc), [str(exc)])
    except ApiError as exc:
        error: dict[str, object] = {"code": int(exc.code), "name": code_name(exc.code),
                                    "message": exc.message}
        if exc.data is not None:
            error["data"] = exc.data
        return _report(ctx, Exit.REFUSED, code_name(exc.code), exc.message,
                       api_error_lines(exc), error)
    finally:
        ctx.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    ctx = Context(
        socket=getattr(args, "socket", None) or default_socket(),
        token=None,
        timeout=getattr(args, "timeout", 30.0),
        json=getattr(args, "json", False),
    )
    try:
        if not getattr(args, "offline", False):
            ctx.token = _token(args)
        return int(run(ctx, args))
    except UsageError as exc:
        return int(_report(ctx, Exit.USAGE, "usage", str(exc), [f"error: {exc}"]))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: nothing more to say, and nobody to say it to.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(Exit.OK)


if __name__ == "__main__":
    sys.exit(main())
