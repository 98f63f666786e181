"""Input (the storage system asks the IMS about a pack being loaded) and ArticleMasterSet."""

from __future__ import annotations

from typing import Literal, get_args

from dispenser.wwks2.messages.common import Article, Routed
from dispenser.wwks2.model import BOOL, Model, attr, child, children, model

__all__ = [
    "ArticleMasterSetRequest",
    "ArticleMasterSetResponse",
    "InputMessage",
    "InputRequest",
    "InputResponse",
    "SetResult",
    "SetResultValue",
]

SetResultValue = Literal["Accepted", "Rejected"]


@model("InputRequest")
class InputRequest(Routed):
    is_new_delivery: bool | None = attr("IsNewDelivery", BOOL, default=None)
    set_picking_indicator: bool | None = attr("SetPickingIndicator", BOOL, default=None)
    articles: tuple[Article, ...] = children(Article, default=())


@model("InputResponse")
class InputResponse(Routed):
    is_new_delivery: bool | None = attr("IsNewDelivery", BOOL, default=None)
    articles: tuple[Article, ...] = children(Article, default=())


@model("InputMessage")
class InputMessage(Routed):
    is_new_delivery: bool | None = attr("IsNewDelivery", BOOL, default=None)
    articles: tuple[Article, ...] = children(Article, default=())


@model("ArticleMasterSetRequest")
class ArticleMasterSetRequest(Routed):
    articles: tuple[Article, ...] = children(Article, default=())


@model("SetResult")
class SetResult(Model):
    value: SetResultValue = attr("Value", choices=get_args(SetResultValue))
    text: str | None = attr("Text", default=None)


@model("ArticleMasterSetResponse")
class ArticleMasterSetResponse(Routed):
    set_result: SetResult = child(SetResult)
