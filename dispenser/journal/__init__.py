"""The journal: SQLite store of orders, shipments, packs, dispensing history and the
hash-chained audit log. See ``Journal`` in ``dispenser.journal.db``."""

from dispenser.journal.audit import VerifyResult
from dispenser.journal.db import Journal, JournalError
from dispenser.journal.migrations import CORE_MIGRATIONS, Migration

__all__ = ["CORE_MIGRATIONS", "Journal", "JournalError", "Migration", "VerifyResult"]
