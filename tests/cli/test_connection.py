"""Tokens, roles, and the exit codes for refusals, usage errors and unreachable daemons."""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dispenser.api.auth import hash_token
from dispenser.cli.main import build_parser
from dispenser.testing import TOKENS
from dispenser.testing.cli import Machine


def test_forbidden_call_is_shown_and_exits_1(machine: Machine) -> None:
    ran = machine.ctl("faults", role="order_system")
    assert ran.code == 1
    assert ran.out == ""
    assert "role 'order_system' may not call fault.list (forbidden)" in ran.err
    assert "allowed roles: staff, technician" in ran.err

    as_json = machine.ctl("--json", "release", "X", "--reason", "r", role="order_system")
    assert as_json.code == 1
    error = json.loads(as_json.err)["error"]
    assert error["code"] == -32005 and error["name"] == "forbidden"


def test_token_sources(machine: Machine, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["technician"] + "\n")
    # --token-file wins over $DISPENSER_TOKEN; options may follow the command.
    ran = machine.ctl("diag", "printer", "--token-file", str(token_file), role="staff")
    assert ran.code == 0, ran
    ran = machine.ctl("--token", TOKENS["technician"], "diag", "printer", role=None)
    assert ran.code == 0, ran

    wrong = machine.ctl("status", "--token", "not-a-token")
    assert wrong.code == 1 and "token not accepted (unauthenticated)" in wrong.err
    anonymous = machine.ctl("orders", role=None)
    assert anonymous.code == 1 and "(unauthenticated)" in anonymous.err
    # A batch refused as a whole: nothing was submitted, so it is a refusal, not exit 4.
    refused = machine.ctl("submit", "-", role=None, stdin='{"order_id": "ANON-1"}\n')
    assert refused.code == 1 and "needs a login" in refused.err

    missing = machine.ctl("status", "--token-file", str(tmp_path / "absent"))
    assert missing.code == 2 and "cannot read token file" in missing.err


def test_no_daemon_exits_3(machine: Machine, tmp_path: Path) -> None:
    ran = machine.ctl("status", "--socket", str(tmp_path / "absent.sock"))
    assert ran.code == 3
    assert "is dispenserd running?" in ran.err

    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        path = Path(short) / "dead.sock"
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(path))  # a socket file nobody listens on
        refused = machine.ctl("--json", "status", env={"DISPENSER_SOCKET": str(path)})
        assert refused.code == 3
        assert json.loads(refused.err)["error"]["name"] == "unreachable"
        # What a crashed daemon leaves: the same hint as for a missing socket.
        stale = machine.ctl("status", env={"DISPENSER_SOCKET": str(path)})
        assert stale.code == 3
        assert "connection refused: is dispenserd running?" in stale.err, stale


def test_silent_daemon_times_out_with_exit_3() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:
        path = Path(short) / "silent.sock"
        with socket.socket(socket.AF_UNIX) as silent:
            silent.bind(str(path))
            silent.listen()  # connections queue up but are never answered
            ran = Machine.run_ctl("--socket", str(path), "--token", "t", "--timeout", "0.5",
                                  "status")
    assert ran.code == 3
    assert "did not answer" in ran.err


def test_usage_errors_exit_2(machine: Machine, tmp_path: Path) -> None:
    assert machine.ctl("cancel", "ORD-1").code == 2  # --reason is required
    assert machine.ctl("no-such-command").code == 2
    assert machine.ctl("orders", "--limit", "0").code == 2
    ran = machine.ctl("submit", str(tmp_path / "absent.jsonl"))
    assert ran.code == 2 and "cannot read" in ran.err
    assert "4  partial success" in machine.ctl("--help").out


def _parsers(parser: argparse.ArgumentParser,
             path: tuple[str, ...] = ("dispenserctl",)) -> Iterator[tuple[str, str]]:
    yield " ".join(path), parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from _parsers(command, (*path, name))


def test_help_is_plain_text_everywhere() -> None:
    shown = Machine.run_ctl("--help")
    assert shown.code == 0 and "dispenserd over its socket API" in shown.out
    helps = dict(_parsers(build_parser()))
    assert len(helps) > 25  # every command and subcommand
    for command, text in helps.items():
        for markup in ("``", ":class:", ":meth:", ":func:"):
            assert markup not in text, f"{command} --help shows {markup}:\n{text}"


def test_hash_token_needs_no_daemon(tmp_path: Path) -> None:
    ran = Machine.run_ctl("hash-token", "--socket", str(tmp_path / "absent.sock"),
                          stdin="secret-token\n")
    assert ran.code == 0, ran
    assert ran.out.strip() == hash_token("secret-token")
    fresh = json.loads(Machine.run_ctl("hash-token", "--new", "--json").out)
    assert fresh["hash"] == hash_token(fresh["token"])
