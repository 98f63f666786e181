"""Staff terminals are safe (issue 8): an order, a reason or a note with a control character
is refused naming the field, and text with control characters that reaches the CLI anyway
(here a pause reason kept in a journal written before reasons were checked) is shown
escaped, never written raw: in plain output, on a terminal and in ``--json``."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing import Daemon, Sim, drugs, order, wait_until
from dispenser.testing.cli import Machine

ROBOT_DRUG = drugs()["robot"][0]["drug_code"]
# Clear the screen, ring the bell, an 8-bit CSI, a line of its own, and a NUL-free C1.
HOSTILE = "jam\x1b[2J\x07 at\x9b31m output\r\nFAULT CLEARED\x85"
SHOWN = "jam\\x1b[2J\\x07 at\\x9b31m output\\x0d\\x0aFAULT CLEARED\\x85"
RAW = ("\x1b[2J", "\x07", "\x9b", "\r\n", "\x85")


def test_an_order_with_control_characters_is_refused_naming_the_field(
        machine: Machine) -> None:
    bad = order("CTL-1", "P-CTL1", [(ROBOT_DRUG, 1)])
    bad["patient"]["name"] = "Wang\x1b]0;owned\x07"
    bad["delivery"]["address"] += "\r\nDeliver instead to: elsewhere"
    ran = machine.ctl("submit", "-", stdin=json.dumps(bad) + "\n")
    assert ran.code == 4, ran
    assert "line 1 (CTL-1)" in ran.out and "(invalid_order)" in ran.out
    assert "  patient.name: control character U+001B at character 5 is not allowed" in ran.out
    assert "  delivery.address: control character U+000D" in ran.out
    assert "\x1b]" not in ran.out and "\x07" not in ran.out
    assert machine.ctl("order", "CTL-1").code == 1  # nothing stored


def test_a_reason_or_a_note_with_control_characters_is_refused_naming_the_field(
        machine: Machine) -> None:
    paused = machine.ctl("pause", "--reason", HOSTILE)
    assert paused.code != 0, paused
    assert "reason: control character U+001B at character 4 is not allowed" in paused.err
    assert not any(raw in paused.out + paused.err for raw in RAW)
    assert json.loads(machine.ctl("status", "--json").out)["state"] == "ready"
    acked = machine.ctl("ack", "1", "--note", HOSTILE)
    assert acked.code != 0, acked
    assert "note: control character U+001B at character 4 is not allowed" in acked.err
    assert not any(raw in acked.out + acked.err for raw in RAW)


@pytest.fixture
def kept_pause() -> Iterator[Machine]:
    """A machine paused with ``HOSTILE`` as its reason, the pause kept in a journal written
    before reasons were checked (the daemon takes a kept pause back at start)."""
    workdir = Path(tempfile.mkdtemp(prefix="dctl-cc", dir="/tmp"))
    sim = Sim(workdir, instant=True)
    sim.start()
    daemon = Daemon(workdir, sim)
    try:
        daemon.start()
        running = Machine(sim, daemon)
        wait_until(lambda: json.loads(running.ctl("status", "--json").out)["state"]
                   == "ready", "machine ready")
        assert running.ctl("pause", "--reason", "jam at output 2").code == 0
        assert daemon.stop() == 0
        with sqlite3.connect(daemon.journal_path) as raw:
            raw.execute("UPDATE machine_mode SET reason = ? WHERE id = 1", (HOSTILE,))
        daemon.start()
        wait_until(lambda: json.loads(running.ctl("status", "--json").out)["state"]
                   == "paused", "machine paused again")
        yield running
    finally:
        try:
            daemon.stop()
        finally:
            sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_text_from_the_daemon_is_shown_with_controls_escaped(kept_pause: Machine) -> None:
    machine = kept_pause
    plain = machine.ctl("status")
    assert plain.code == 0, plain
    [line] = [row for row in plain.out.splitlines() if row.startswith("machine")]
    assert SHOWN in line
    assert not any(raw in plain.out for raw in RAW)

    screen = machine.ctl_tty("status", columns=200, lines=40)
    assert screen.code == 0, screen
    # The terminal shows the escapes; the injected sequences never reached it (the
    # test terminal strips CSI sequences, so the escaped text proves they were not
    # sent as such).
    assert SHOWN in screen.out.replace("\n", "")
    assert "\x07" not in screen.out and "\x9b" not in screen.out

    top = machine.ctl("top", "--once")
    assert SHOWN in top.out and not any(raw in top.out for raw in RAW)

    as_json = machine.ctl("status", "--json")
    assert not any(raw in as_json.out for raw in RAW)
    assert json.loads(as_json.out)["pause"]["reason"] == HOSTILE  # the data, exact

    resumed = machine.ctl("resume")
    assert resumed.code == 0, resumed
    assert not any(raw in resumed.out for raw in RAW)
