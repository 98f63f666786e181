"""Dispensing policy: safety checks, merging and stock rules.

A plain pydantic model with every field defaulted; the configuration loader embeds it as
the ``[policy]`` TOML table. Unknown keys are refused so a typo is an error, not a silent
default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# What a failed check does: hold the order for a pharmacist, refuse (reject) it outright,
# or skip the check.
CheckAction = Literal["hold", "reject", "off"]


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Eligibility: the prescription must carry a programme diagnosis (ICD-10 prefix match).
    eligibility: CheckAction = "hold"
    programme_diagnoses: tuple[str, ...] = ("E10", "E11", "E12", "E13", "E14")
    # Prescription age: issued at most this many days before the order.
    prescription_age: CheckAction = "hold"
    prescription_max_age_days: int = Field(default=90, ge=1, le=3650)
    # Duplicate dispensing: the same drug was dispensed to the patient and its supply
    # (dispensed date + days_supply) has not run out; refills this many days early pass.
    duplicate_dispensing: CheckAction = "hold"
    refill_grace_days: int = Field(default=7, ge=0, le=365)
    # The same prescription filled twice for the same drug (not asked of a registered
    # prescription while prescription_provenance runs: its fills are counted instead).
    duplicate_prescription: CheckAction = "hold"
    # Prescription provenance: the order's prescription must be registered by a designated
    # institution, match it, and have the quantity left. "auto" holds once any prescription
    # is registered or any [[institutions]] is configured, and is off before.
    prescription_provenance: Literal["auto", "hold", "reject", "off"] = "auto"
    # Quantity limits per order item.
    quantity_limit: CheckAction = "hold"
    min_days_supply: int = Field(default=1, ge=1)
    max_days_supply: int = Field(default=90, ge=1, le=3650)
    max_quantity: int = Field(default=12, ge=1, description="packs per order item")
    # The delivery window is already over when the order arrives.
    delivery_window: CheckAction = "hold"

    # Merging: orders of one patient to one address within this many seconds share a tote.
    merge_window_s: float = Field(default=300.0, ge=0)
    # When stock is short: False holds the whole shipment (stock_short); True sends what
    # is in stock and records the rest as owed.
    partial_dispensing: bool = False

    # Loading: packs must have at least this many days left before expiry.
    min_shelf_life_days: int = Field(default=30, ge=0)

    # The audit chain's end does not match its checkpoint at start (rows cut or rewritten):
    # the "audit" fault is latched either way; "stop" also stops picking until a person
    # acknowledges it, "continue" keeps dispensing.
    audit_mismatch: Literal["stop", "continue"] = "stop"
