"""StockInfo: the IMS asks what is in stock; StockInfoMessage reports changes unasked."""

from __future__ import annotations

from dispenser.wwks2.messages.common import Article, Routed
from dispenser.wwks2.model import BOOL, Model, attr, children, model

__all__ = ["StockCriteria", "StockInfoMessage", "StockInfoRequest", "StockInfoResponse"]


@model("Criteria")
class StockCriteria(Model):
    """One filter: its attributes are ANDed; several Criteria are ORed."""

    article_id: str | None = attr("ArticleId", default=None)
    batch_number: str | None = attr("BatchNumber", default=None)
    external_id: str | None = attr("ExternalId", default=None)
    stock_location_id: str | None = attr("StockLocationId", default=None)
    machine_location: str | None = attr("MachineLocation", default=None)


@model("StockInfoRequest")
class StockInfoRequest(Routed):
    include_packs: bool | None = attr("IncludePacks", BOOL, default=None)  # default True
    include_article_details: bool | None = attr("IncludeArticleDetails", BOOL, default=None)
    criteria: tuple[StockCriteria, ...] = children(StockCriteria, default=())


@model("StockInfoResponse")
class StockInfoResponse(Routed):
    articles: tuple[Article, ...] = children(Article, default=())


@model("StockInfoMessage")
class StockInfoMessage(Routed):
    articles: tuple[Article, ...] = children(Article, default=())
