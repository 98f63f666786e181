"""Which audit key the daemon uses, in this order:

1. the systemd credential ``audit.key`` (``LoadCredential=audit.key:/etc/dispenser/audit.key``
   in dispenserd.service): systemd copies the root-only file into
   ``$CREDENTIALS_DIRECTORY``, readable by the service alone;
2. ``[journal] audit_key``, a file of mode 0600 made by ``dispenserctl audit init-key``;
3. neither: ``audit.key`` beside the journal, made at the first start (demos and tests;
   the daemon warns, since whoever may write the journal's directory may read this key).

A key file that others may read, or that is not a key, stops the start (exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from dispenser.config import JournalConfig
from dispenser.journal import AuditKey, AuditKeyError
from dispenser.logs import get_logger

__all__ = ["CREDENTIAL", "load_audit_key", "log_audit_key"]

log = get_logger(__name__)

CREDENTIAL = "audit.key"


def load_audit_key(config: JournalConfig) -> tuple[AuditKey, str]:
    """The key and where it came from: ``credential``, ``config`` or ``beside``."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL).exists():
        # systemd may grant the service's group through the directory: only "others" is
        # refused there.
        return AuditKey.load(Path(creds) / CREDENTIAL, group_readable=True), "credential"
    if config.audit_key is not None:
        try:
            return AuditKey.load(config.audit_key), "config"
        except AuditKeyError as exc:
            raise AuditKeyError(f"journal.audit_key: {exc}") from None
    beside = Path(config.path).parent / "audit.key"
    if not beside.exists():
        try:
            AuditKey.create(beside)
        except OSError as exc:
            raise AuditKeyError(f"cannot make the audit key {beside} beside the journal: "
                                f"{exc.strerror}; set [journal] audit_key") from None
    return AuditKey.load(beside), "beside"


def log_audit_key(key: AuditKey, source: str) -> None:
    """Said once the journal is open (a start that fails says one line: why)."""
    if source == "beside":
        log.warning("audit key kept beside the journal: set [journal] audit_key for "
                    "production (docs/install.md)", key_id=key.key_id, path=key.source)
    else:
        log.info("audit key", key_id=key.key_id,
                 source="systemd credential" if source == "credential" else key.source)
