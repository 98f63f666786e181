"""The journal: SQLite store of orders, shipments, packs, dispensing history and the
keyed, hash-chained audit log. See ``Journal`` in ``dispenser.journal.db``."""

from dispenser.journal.audit import AuditKey, AuditKeyError, Finding, VerifyResult
from dispenser.journal.db import Journal, JournalError, JournalUnavailable, verify_journal
from dispenser.journal.lock import JournalLocked
from dispenser.journal.migrations import CORE_MIGRATIONS, Migration

__all__ = ["CORE_MIGRATIONS", "AuditKey", "AuditKeyError", "Finding", "Journal",
           "JournalError", "JournalLocked", "JournalUnavailable", "Migration", "VerifyResult",
           "verify_journal"]
