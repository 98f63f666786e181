"""``dispenser-sim put`` / ``take``: a person at the input point, through the control socket
of a running simulator (issue 13), and the scans they are given."""

from __future__ import annotations

import asyncio
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispenser.core.formulary import gtin_check_digit
from dispenser.core.gs1 import parse_scan
from firmware_sim import Simulator
from firmware_sim.packs import Pack, PackError

SCAN_1 = "0104150123456782172705311" + "0B1<GS>21S1"
SCAN_2 = "]d2010415012345678217280229" + "10B2\x1d21S2"
SIM = [str(Path(sys.executable).parent / "dispenser-sim")]


async def run(*args: str, stdin: str | None = None,
              env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``dispenser-sim`` as a process, while the simulator runs on this test's loop."""
    proc = await asyncio.create_subprocess_exec(
        *SIM, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else b""), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def serials(sim: Simulator) -> list[str]:
    return [p["serial"] for p in sim.ledger()["input"]]


async def test_put_and_take_through_the_control_socket(sim: Simulator) -> None:
    control = str(sim.control_path)
    code, out, err = await run("put", "--control", control, SCAN_1, SCAN_2)
    assert code == 0, err
    assert "put 04150123456782 batch B1 expiry 2027-05-31 serial S1" in out
    assert "input point: 2 packs there" in out
    assert serials(sim) == ["S1", "S2"]

    # The pack the scanner reads (the first) comes off first, with its scan to type again.
    code, out, err = await run("take", "--control", control)
    assert code == 0, err
    assert "took 04150123456782 batch B1 expiry 2027-05-31 serial S1" in out
    assert f"(scan {SCAN_1})" in out
    assert serials(sim) == ["S2"]

    code, out, _ = await run("put", "--control", control, "-", stdin=SCAN_1 + "\n\n")
    assert code == 0 and "2 packs there" in out
    code, out, _ = await run("take", "--all", "--control", control)
    assert code == 0 and out.count("took ") == 2
    assert serials(sim) == []

    code, _, err = await run("take", "--control", control)
    assert code == 1
    assert "no pack lies at the input point" in err


async def test_the_control_socket_comes_from_the_environment(sim: Simulator) -> None:
    code, _, err = await run("put", SCAN_1,
                             env={"DISPENSER_SIM_CONTROL": str(sim.control_path)})
    assert code == 0, err
    assert serials(sim) == ["S1"]


async def test_no_simulator_and_bad_scans_are_told(tmp_path: Path) -> None:
    nobody = str(tmp_path / "none.sock")
    code, _, err = await run("take", "--control", nobody)
    assert code == 1
    assert f"no simulator listens on {nobody}" in err
    for bad, why in (("17270531", "no GTIN (01)"), ("01041501234567", "takes 14 digits"),
                     ("0104150123456782" + "11250101", "the input scanner reads"),
                     ("0104150123456782" + "0104150123456782", "appears twice")):
        code, _, err = await run("put", "--control", nobody, bad)
        assert code == 2, bad
        assert why in err, err


def test_a_scan_without_batch_or_expiry() -> None:
    pack = Pack.from_scan("0104150123456782" + "21S9")
    assert (pack.gtin, pack.batch, pack.expiry, pack.serial) == ("04150123456782", "", "",
                                                                 "S9")
    with pytest.raises(PackError, match=r"\(17\) takes 6 digits"):
        Pack.from_scan("0104150123456782" + "1727053")


_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                              exclude_characters="<>{}^\\"), min_size=1, max_size=20)


@given(gtin=st.from_regex(r"\A[0-9]{14}\Z"), batch=_TEXT, serial=_TEXT,
       expiry=st.dates().map(lambda d: d.replace(year=2000 + d.year % 100)))
def test_what_the_robot_scans_is_what_was_put(gtin: str, batch: str, serial: str,
                                              expiry: Any) -> None:
    put = Pack(gtin, batch, expiry.isoformat(), serial)
    assert Pack.from_scan(put.scan_text()) == put
    assert Pack.from_scan(put.gs1()) == put


_CODE = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=1, max_size=20)


@given(body=st.from_regex(r"\A[0-9]{13}\Z"), batch=_CODE, serial=_CODE,
       expiry=st.dates(date(2025, 1, 1), date(2045, 12, 31)))
def test_the_controller_reads_the_pack_that_was_put(body: str, batch: str, serial: str,
                                                    expiry: date) -> None:
    gtin = body + gtin_check_digit(body)
    typed = Pack(gtin, batch, expiry.isoformat(), serial).scan_text()
    # What staff type and what the robot's scanner reads of the pack put with it.
    read = parse_scan(Pack.from_scan(typed).gs1())
    assert (read.gtin, read.batch, read.serial, read.expiry) == (gtin, batch, serial, expiry)


async def test_a_second_simulator_leaves_a_served_control_socket_alone(
        sim: Simulator) -> None:
    from firmware_sim import SimulatorError, SimulatorOptions

    second = Simulator(SimulatorOptions(tcp_port=0, instant=True,
                                        control_path=sim.control_path))
    with pytest.raises(SimulatorError, match="another simulator serves"):
        await second.start()
    code, _, err = await run("take", "--control", str(sim.control_path))
    assert code == 1 and "no pack lies at the input point" in err
