"""What an API call's audit row keeps of its params: ids and reasons, bounded, never
patient data."""

from __future__ import annotations

from typing import Any

from dispenser.api.protocol import ApiError
from dispenser.daemon.methods.params import MAX_ID, MAX_TEXT

__all__ = ["audit_summary", "outcome_dict", "storable"]

# Params that may be copied into the API audit record (never patient data).
# ``gtin`` is the old name of ``drug_code`` (accepted until 0.3.0): kept as given.
_AUDIT_KEYS = ("order_id", "shipment_id", "fault_id", "drug_code", "gtin", "batch", "reason",
               "on", "what", "slot", "address", "count", "note", "wait")


def storable(value: Any) -> Any:
    """Text as it can be stored (a lone surrogate escape becomes a visible backslash
    escape), so that even a refused call with broken text keeps its audit row."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ID:
        return str(value)
    return value


def _bounded(value: Any, key: str, truncated: dict[str, int]) -> Any:
    """A value as the audit row keeps it: storable, text cut to ``MAX_TEXT`` characters
    (``truncated`` records the original length), so a refused call's row stays small."""
    value = storable(value)
    if isinstance(value, str) and len(value) > MAX_TEXT:
        truncated[key] = len(value)
        return value[:MAX_TEXT]
    return value


def audit_summary(method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(subject, safe params) for the API audit row: ids and reasons, no patient data.

    A value longer than ``MAX_TEXT`` characters (only a refused call can have one) is cut
    to that length and ``safe["truncated"]`` maps its key to its original length: a row
    holds at most a few KB whatever the call sent."""
    truncated: dict[str, int] = {}
    safe = {k: _bounded(params[k], k, truncated) for k in _AUDIT_KEYS
            if k in params and not isinstance(params[k], dict | list)}
    subject = ""
    order = params.get("order")
    if isinstance(order, dict) and isinstance(order.get("order_id"), str):
        subject = _bounded(order["order_id"], "order.order_id", truncated)
    orders = params.get("orders")
    if isinstance(orders, list):
        ids = [o.get("order_id") for o in orders if isinstance(o, dict)]
        safe["orders"] = len(orders)
        subject = f"{len(ids)} orders"
    for key in ("order_id", "shipment_id", "fault_id", "drug_code", "gtin"):
        if key in safe and not subject:
            subject = str(safe[key])
    if truncated:
        safe["truncated"] = truncated
    return subject or method, safe


def outcome_dict(ok: bool, error: ApiError | None) -> dict[str, Any]:
    if ok or error is None:
        return {"ok": True}
    return {"ok": False, "code": int(error.code), "message": error.message}

