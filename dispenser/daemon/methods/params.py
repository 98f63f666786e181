"""The params of every API method, as pydantic models that refuse what JSON does not say
exactly (docs/api.md): no ``"true"`` for a boolean, no ``1`` for a boolean, no ``"5"`` for a
number, text of valid Unicode within its length, numbers within the journal's 64-bit
integers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from dispenser.api.protocol import ApiError, ErrorCode
from dispenser.core.orders import NoControl
from dispenser.core.states import OrderState, PackState, ShipmentState

# The longest free text a method takes (reasons, notes, scans; docs/api.md, Limits).
# Longer text is refused with -32602 naming the field, and an audit row keeps at most
# this much of any value.
MAX_TEXT = 500

# Params are taken as JSON gives them: no "true" for a boolean, no 1 for a boolean, no
# "5" for a number; text must be valid Unicode (no lone surrogate escapes), numbers fit
# the journal's 64-bit integers.
MAX_ID = 2**63 - 1
MAX_SLOT = 2**32 - 1


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (a lone surrogate escape is not)"
                         ) from None
    return value


def broken_text(value: Any, path: str = "") -> str | None:
    """The path of the first string (key or value) in ``value`` that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(order)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            found = broken_text(k, here) or broken_text(v, here)
            if found:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = broken_text(v, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def order_text_error(order: Any) -> ApiError | None:
    path = broken_text(order)
    if path is None:
        return None
    message = "text must be valid Unicode (a lone surrogate escape is not)"
    return ApiError(ErrorCode.INVALID_ORDER, f"order refused, fix these fields and send it "
                    f"again: {path}: {message}", {"errors": [{"path": path,
                                                               "message": message}]})


Text = Annotated[StrictStr, AfterValidator(_unicode)]
# Length limits go before the Unicode check: so they are checked on the string itself
# and say "at most N characters".
Ident = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_unicode)]
# Reasons and notes are read back by people (dispenserctl, the audit trail): no control
# character (C0, DEL, C1), as in an order's text (issue 8). Scans keep theirs: a GS1 scan
# separates its fields with GS (U+001D).
Reason = Annotated[StrictStr, Field(max_length=MAX_TEXT), AfterValidator(_unicode), NoControl]
RequiredReason = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT),
                           AfterValidator(_unicode), NoControl]
FreeText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TEXT),
                     AfterValidator(_unicode)]
Id = Annotated[StrictInt, Field(ge=0, le=MAX_ID)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Empty(Params):
    pass


class Page(Params):
    limit: Annotated[StrictInt, Field(ge=1, le=1000)] = 100


class Submit(Params):
    order: dict[str, Any]


class SubmitBatch(Params):
    orders: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class OrderAction(Params):
    order_id: Ident
    reason: Reason = ""


class OrderId(Params):
    order_id: Ident


class OrderList(Page):
    state: OrderState | None = None
    after: Ident | None = None


class ShipmentId(Params):
    shipment_id: Ident


class ShipmentList(Page):
    state: ShipmentState | None = None
    after: Ident | None = None


class ConfirmManual(Params):
    shipment_id: Ident
    scan: FreeText


class StockList(Page):
    drug_code: Annotated[Text, Field(pattern=r"^[0-9]{14}$")] | None = None
    state: PackState | None = PackState.IN_STOCK
    slot: Annotated[StrictInt, Field(ge=0, le=MAX_SLOT)] | None = None
    after: Id | None = None
    near_expiry: StrictBool | None = None

    @model_validator(mode="after")
    def _in_stock_only(self) -> StockList:
        if self.near_expiry is not None and self.state is not PackState.IN_STOCK:
            raise ValueError("near_expiry lists packs in stock: leave state out or give "
                             "in_stock")
        return self


class Load(Params):
    scan: FreeText
    wait: StrictBool = False


def old_name(data: Any, name: str, old: str) -> Any:
    """Params that give a field under its old name (``old``) as if they gave ``name``;
    both at once must agree. The old names are accepted for one release (docs/api.md,
    "Old names")."""
    if not isinstance(data, dict) or old not in data:
        return data
    if name in data and data[name] != data[old]:
        raise ValueError(f"{name} and {old} differ: {old} is the old name of {name}, give "
                         f"{name} only")
    data = dict(data)
    value = data.pop(old)
    data.setdefault(name, value)
    return data


class Quarantine(Params):
    drug_code: Annotated[Text, Field(pattern=r"^[0-9]{14}$")]
    batch: Annotated[StrictStr, Field(min_length=1, max_length=20), AfterValidator(_unicode)]
    reason: RequiredReason

    @model_validator(mode="before")
    @classmethod
    def _gtin(cls, data: Any) -> Any:
        # ``gtin`` was this param's name until 0.2.0; accepted until 0.3.0.
        return old_name(data, "drug_code", "gtin")


class Discrepancies(Page):
    after: Id | None = None


class Pause(Params):
    reason: Reason = ""


class Maintenance(Params):
    on: StrictBool


class FaultList(Page):
    active: StrictBool | None = None
    after: Id | None = None


class FaultAck(Params):
    fault_id: Id
    note: Reason | None = None


class RobotAdopt(Params):
    note: Reason | None = None


class Reprint(Params):
    shipment_id: Ident
    what: Literal["label", "slip", "both"] = "both"


class Registers(Params):
    address: Annotated[StrictInt, Field(ge=0, le=65535)]
    count: Annotated[StrictInt, Field(ge=1, le=125)]


class Selftest(Params):
    slot: Annotated[StrictInt, Field(ge=0, le=MAX_SLOT)] = 0
