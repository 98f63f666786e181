"""The systemd units: systemd's own checks, the directives we rely on, and that CPython runs
under the memory protection the service asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from dispenser.testing.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
SERVICE = UNITS / "dispenserd.service"
SOCKET = UNITS / "dispenserd.socket"


def _verifiable_copy(tmp_path: Path) -> Path:
    """Copies of both units whose ExecStart names a binary that exists on this machine:
    verify checks ExecStart is executable, and dispenserd is not installed here."""
    true = shutil.which("true") or "/bin/true"
    service = SERVICE.read_text()
    assert "ExecStart=/usr/bin/dispenserd --config /etc/dispenser/dispenserd.toml\n" in service
    (tmp_path / SERVICE.name).write_text(
        service.replace("ExecStart=/usr/bin/dispenserd ", f"ExecStart={true} ")
    )
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    return tmp_path


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    units = _verifiable_copy(tmp_path)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(units / SERVICE.name), str(units / SOCKET.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for unknown directives; any output at all is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_sandbox_exposure_stays_low(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    units = _verifiable_copy(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(units / SERVICE.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"exposure level for dispenserd\.service: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


def _directives(path: Path) -> dict[str, list[str]]:
    """Unit files allow repeated keys (configparser does not): key -> every value."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


def test_service_declares_what_the_daemon_relies_on() -> None:
    d = _directives(SERVICE)
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.WatchdogSec": ["30"],
        "Service.Restart": ["on-failure"],
        "Service.User": ["dispenser"],
        "Service.Group": ["dispenser"],
        "Service.SupplementaryGroups": ["dialout"],
        "Service.StateDirectory": ["dispenser"],
        "Service.RuntimeDirectory": ["dispenser"],
        "Service.RuntimeDirectoryPreserve": ["yes"],
        "Service.UMask": ["0007"],
        "Service.ProtectSystem": ["strict"],
        "Service.ProtectHome": ["yes"],
        "Service.PrivateTmp": ["yes"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.DevicePolicy": ["closed"],
        "Service.RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "Service.CapabilityBoundingSet": [""],
        "Service.MemoryDenyWriteExecute": ["yes"],
        "Service.KillSignal": ["SIGTERM"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert "@system-service" in d["Service.SystemCallFilter"]
    assert "char-ttyS rw" in d["Service.DeviceAllow"]
    assert "PrivateDevices" not in {k.split(".", 1)[1] for k in d}  # would hide serial ports


def test_service_hands_over_the_audit_key_and_does_not_restart_a_start_up_problem() -> None:
    d = _directives(SERVICE)
    assert d["Service.LoadCredential"] == ["audit.key:/etc/dispenser/audit.key"]
    assert d["Service.RestartPreventExitStatus"] == ["2"]
    config = tomllib.loads((ROOT / "config" / "dispenser.toml").read_text())
    assert config["journal"]["audit_key"] == "/etc/dispenser/audit.key"


def test_socket_matches_the_shipped_configuration() -> None:
    d = _directives(SOCKET)
    assert d["Socket.SocketMode"] == ["0660"]
    assert d["Socket.SocketGroup"] == ["dispenser"]
    config = tomllib.loads((ROOT / "config" / "dispenser.toml").read_text())
    assert d["Socket.ListenStream"] == [config["api"]["socket"]]


def test_sysusers_creates_the_account(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [sysusers, f"--root={tmp_path}", str(UNITS / "dispenser.sysusers")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^dispenser:x:\d+:\d+:[^:]*:/var/lib/dispenser:", passwd, re.M), passwd
    assert re.search(r"^dispenser:x:\d+:", (tmp_path / "etc" / "group").read_text(), re.M)


# The child turns on the kernel's memory-deny-write-execute (what MemoryDenyWriteExecute=yes
# enforces), proves it is active, then imports the daemon's stack and serves one API call.
MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, mmap, sys, tempfile
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("unsupported"); sys.exit(0)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        pass
    else:
        print("not enforced"); sys.exit(1)

    import asyncio
    from pathlib import Path
    import pydantic, structlog, pymodbus, transitions, serial  # the daemon's dependencies
    from dispenser.api.client import ApiClient
    from dispenser.api.server import ApiServer
    from dispenser.config import ApiConfig
    from dispenser.logs import configure_logging

    async def main() -> None:
        configure_logging("warning", "json")
        path = Path(tempfile.mkdtemp(dir="/tmp")) / "api.sock"
        server = ApiServer(ApiConfig(socket=path))
        await server.start()
        async with await ApiClient.connect(path) as client:
            assert (await client.call("system.ping"))["pong"]
        await server.stop()

    asyncio.run(main())
    print("ok")
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_cpython_runs_with_memory_deny_write_execute() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if result.stdout.strip() == "unsupported":
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.stdout.strip().endswith("ok"), result.stdout + result.stderr
