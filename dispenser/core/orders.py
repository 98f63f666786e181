"""The order contract (see docs/orders.md): a pydantic model that refuses unknown fields.

``parse_order`` turns a raw mapping (decoded JSON) into an ``Order`` or raises
``InvalidOrder`` listing every problem by field path (``items.0.quantity``).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationError,
    model_validator,
)

from dispenser.core.errors import FieldError, InvalidOrder


class Priority(enum.Enum):
    """Scheduling priority. Urgent orders skip the merge window."""

    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}

# C0 controls, DEL and C1 controls. Order text is printed on labels and shown on staff
# terminals: ESC, CSI (U+009B) and the like would move the cursor, clear the screen or
# retitle the terminal of whoever reads it; NUL, CR and LF would cut or forge lines.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _no_control(value: Any) -> Any:
    """Refuse text with a control character anywhere (also where surrounding whitespace
    would be stripped: a sender that puts one there has a bug to know of)."""
    if isinstance(value, str) and (found := _CONTROL.search(value)):
        raise ValueError(f"control character U+{ord(found.group()):04X} at character "
                         f"{found.start() + 1} is not allowed in text; remove it")
    return value


NoControl = BeforeValidator(_no_control)
Text = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1,
                                        max_length=200), NoControl]
Address = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1,
                                           max_length=500), NoControl]
Ident = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"),
                  NoControl]
Icd10 = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$"),
                  NoControl]
Phone = Annotated[str, StringConstraints(strict=True, pattern=r"^\+?[0-9 -]{5,20}$"), NoControl]
InsuranceId = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9A-Za-z]{4,32}$"),
                        NoControl]
DrugCode = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9]{14}$"), NoControl]


def _iso_text(pattern: str, example: str) -> Callable[[Any], Any]:
    """Dates and times come as ISO 8601 text; pydantic alone would also take a number (or
    a text of digits) as seconds since 1970."""
    form = re.compile(pattern)

    def check(value: Any) -> Any:
        if not isinstance(value, str) or not form.match(value):
            raise ValueError(f"must be ISO 8601 text such as {example}")
        return value

    return check


IsoDate = Annotated[date, BeforeValidator(_iso_text(r"[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                                                    "2026-11-01"))]
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(
    _iso_text(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T", "2026-11-24T09:00:00+08:00"))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Patient(_Strict):
    id: Ident
    name: Text
    phone: Phone | None = None
    insurance_id: InsuranceId | None = None


class Prescription(_Strict):
    id: Ident
    issued_on: IsoDate
    institution: Text
    prescriber: Text
    diagnoses: list[Icd10] = Field(min_length=1, max_length=20)


class Item(_Strict):
    drug_code: DrugCode
    quantity: StrictInt = Field(ge=1, le=1000, description="number of packs")
    days_supply: StrictInt = Field(ge=1, le=3650)


class Delivery(_Strict):
    address: Address
    window_start: IsoDatetime
    window_end: IsoDatetime

    @model_validator(mode="after")
    def _window(self) -> Delivery:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class Order(_Strict):
    order_id: Ident
    patient: Patient
    prescription: Prescription
    items: list[Item] = Field(min_length=1, max_length=50)
    delivery: Delivery
    priority: Priority = Priority.NORMAL

    @model_validator(mode="after")
    def _distinct_drugs(self) -> Order:
        seen: set[str] = set()
        for item in self.items:
            if item.drug_code in seen:
                raise ValueError(f"drug_code {item.drug_code} appears in more than one item; "
                                 "put the whole quantity in one item")
            seen.add(item.drug_code)
        return self

    def canonical_json(self) -> str:
        """Canonical form used for idempotency (same content -> same text)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False,
                          separators=(",", ":"))

    def address_key(self) -> str:
        return address_key(self.delivery.address)


def address_key(address: str) -> str:
    """A key equal for equal delivery addresses (case and spacing ignored); it lets the
    core merge shipments without keeping addresses in indexes or the audit log."""
    norm = " ".join(address.split()).casefold()
    return hashlib.sha256(norm.encode()).hexdigest()[:24]


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(order)"


def parse_order(raw: Mapping[str, object]) -> Order:
    """Validate a raw order; raise ``InvalidOrder`` listing every problem."""
    if not isinstance(raw, Mapping):
        raise InvalidOrder([FieldError("(order)", "an order must be a JSON object")])
    try:
        return Order.model_validate(dict(raw))
    except ValidationError as exc:
        errors = []
        for e in exc.errors(include_url=False):
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field; remove it"
            elif e["type"] == "missing":
                msg = "required field is missing"
            errors.append(FieldError(_path(tuple(e["loc"])), msg))
        raise InvalidOrder(errors) from None


def order_from_json(text: str) -> Order:
    """Rebuild a stored order (already validated once) from its canonical JSON."""
    data: Any = json.loads(text)
    return Order.model_validate(data)
