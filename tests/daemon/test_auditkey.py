"""Where the daemon takes its audit key from: systemd's credential, the configured file, or
(demos and tests) a key it makes beside the journal."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dispenser.config import JournalConfig
from dispenser.daemon.auditkey import load_audit_key
from dispenser.journal import AuditKey, AuditKeyError


def test_the_systemd_credential_comes_first(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    credential = AuditKey.create(creds / "audit.key")
    (creds / "audit.key").chmod(0o440)  # the service's group may read it there
    configured = AuditKey.create(tmp_path / "audit.key")
    config = JournalConfig(path=tmp_path / "j.sqlite", audit_key=tmp_path / "audit.key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    key, source = load_audit_key(config)
    assert (key.key_id, source) == (credential.key_id, "credential")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    key, source = load_audit_key(config)
    assert (key.key_id, source) == (configured.key_id, "config")


def test_a_configured_key_is_never_made_and_must_be_private(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = JournalConfig(path=tmp_path / "j.sqlite", audit_key=tmp_path / "audit.key")
    with pytest.raises(AuditKeyError, match="dispenserctl audit init-key"):
        load_audit_key(config)
    assert not (tmp_path / "audit.key").exists()
    AuditKey.create(tmp_path / "audit.key")
    (tmp_path / "audit.key").chmod(0o604)
    with pytest.raises(AuditKeyError, match="read or written by others"):
        load_audit_key(config)


def test_without_a_key_one_is_made_beside_the_journal(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = JournalConfig(path=tmp_path / "var" / "journal")
    (tmp_path / "var").mkdir()
    key, source = load_audit_key(config)
    made = tmp_path / "var" / "audit.key"
    assert source == "beside" and stat.S_IMODE(made.stat().st_mode) == 0o600
    assert load_audit_key(config)[0].key_id == key.key_id  # the same one next time
