"""Files named in a configuration file: relative to the file, and a missing one is named by
its key and the folder it was looked up in (issue 13)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dispenser.testing import BIN


def _run(config: Path, cwd: Path) -> tuple[int, str]:
    ran = subprocess.run([str(BIN / "dispenserd"), "--config", str(config)], cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    return ran.returncode, ran.stdout + ran.stderr


def test_a_missing_formulary_is_named_by_its_key_and_folder(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "dispenserd.toml"
    config.write_text('[journal]\npath = "journal"\n[api]\nsocket = "api.sock"\n'
                      '[formulary]\npath = "drugs.csv"\n[log]\nformat = "json"\n')
    code, out = _run(Path("etc/dispenserd.toml"), tmp_path)
    assert code == 2, out
    assert f"formulary.path: no file 'drugs.csv' in {etc}" in out, out
    # The journal was looked for beside the file too, not in the working directory.
    assert not (tmp_path / "journal").exists()


def test_a_missing_audit_key_is_named_by_its_key(tmp_path: Path) -> None:
    config = tmp_path / "dispenserd.toml"
    config.write_text('[journal]\npath = "journal"\naudit_key = "keys/audit.key"\n'
                      '[api]\nsocket = "api.sock"\n[log]\nformat = "json"\n')
    code, out = _run(config, Path("/"))
    assert code == 2, out
    assert f"journal.audit_key: no audit key at {tmp_path / 'keys' / 'audit.key'}" in out, out
