"""Domain errors. Each carries a stable ``code`` and a message a person can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem in a submitted order: ``path`` like ``items.0.quantity``."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class DispenserError(Exception):
    """Base of every refusal the dispensing core gives."""

    code = "dispenser_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}


class InvalidOrder(DispenserError):
    code = "invalid_order"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        listing = "; ".join(f"{e.path}: {e.message}" for e in self.errors)
        super().__init__(f"order refused, fix these fields and send it again: {listing}")

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message,
                "errors": [e.as_dict() for e in self.errors]}


class UnknownDrug(DispenserError):
    code = "unknown_drug"

    def __init__(self, codes: Sequence[str]) -> None:
        self.codes = list(codes)
        super().__init__(
            "order refused: drug code(s) not in the formulary: " + ", ".join(self.codes)
            + "; correct the code or add the drug to the formulary first")

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "codes": self.codes}


class Conflict(DispenserError):
    code = "conflict"


class NotFound(DispenserError):
    code = "not_found"


class InvalidState(DispenserError):
    """The action does not fit the current state of the order, shipment or pack."""

    code = "invalid_state"


class LoadRefused(DispenserError):
    """A pack scan was refused for loading (or manual confirmation)."""

    code = "load_refused"
    REASONS = ("unknown_gtin", "no_expiry", "no_batch", "expired", "short_shelf_life",
               "serial_in_stock", "serial_dispensed", "serial_disposed", "unreadable",
               "not_on_pick_list", "quarantined", "no_free_slot")

    def __init__(self, reason_code: str, message: str) -> None:
        self.reason_code = reason_code
        super().__init__(message)

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason_code, "message": self.message}
