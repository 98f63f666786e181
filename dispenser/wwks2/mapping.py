"""Between WWKS2 messages and the machine's side (:mod:`dispenser.wwks2.backend`).

Pure functions, no I/O. Text from messages is turned into plain text with
:func:`~dispenser.wwks2.xmlio.from_wire` on its way to the machine and back with
:func:`~dispenser.wwks2.xmlio.to_wire`; echoes of the request are not converted, so they
repeat it exactly.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import cast

from dispenser.wwks2.backend import (
    ArticleStock,
    DispensedPack,
    InputAnswer,
    InputOutcome,
    InputVerdict,
    MasterArticle,
    OutputCriterion,
    OutputOutcome,
    OutputTask,
    Priority,
    ScannedPack,
    StockFilter,
    StockPack,
    StockQuery,
    TaskKey,
    TaskReport,
)
from dispenser.wwks2.config import Wwks2Config
from dispenser.wwks2.messages import (
    Article,
    ArticleMasterSetRequest,
    Handling,
    InputResponse,
    OutputCriteria,
    OutputDetails,
    OutputMessage,
    OutputRequest,
    Pack,
    StockInfoRequest,
    Task,
)
from dispenser.wwks2.model import encode
from dispenser.wwks2.xmlio import from_wire, to_wire

__all__ = [
    "OutputRefused",
    "article_elements",
    "dispensed_articles",
    "input_answer",
    "input_message_articles",
    "input_request_articles",
    "master_articles",
    "output_message",
    "output_task",
    "stock_query",
    "task_element",
]


class OutputRefused(Exception):
    """An OutputRequest the machine cannot take as asked: answered Rejected."""


def _plain(value: str | None) -> str | None:
    """Plain text from an optional WWKS2 value; empty means not set."""
    return from_wire(value) if value else None


def _wire(value: str | None) -> str | None:
    return to_wire(value) if value is not None else None


# --------------------------------------------------------------------------- stock


def stock_query(request: StockInfoRequest) -> StockQuery:
    filters = tuple(
        StockFilter(article_id=_plain(c.article_id), batch_number=_plain(c.batch_number),
                    external_id=_plain(c.external_id),
                    stock_location_id=_plain(c.stock_location_id),
                    machine_location=_plain(c.machine_location))
        for c in request.criteria)
    return StockQuery(
        filters=filters,
        include_packs=request.include_packs is not False,  # WWKS2's default is True
        include_article_details=bool(request.include_article_details))


def _stock_pack(pack: StockPack) -> Pack:
    return Pack(id=pack.pack_id, delivery_number=_wire(pack.delivery_number),
                batch_number=_wire(pack.batch_number), external_id=_wire(pack.external_id),
                serial_number=_wire(pack.serial_number), expiry_date=pack.expiry_date,
                stock_in_date=pack.stock_in_date, scan_code=_wire(pack.scan_code),
                state="Available" if pack.available else "NotAvailable",
                is_in_fridge=pack.in_fridge)


def article_elements(stock: Sequence[ArticleStock], include_packs: bool,
                     include_details: bool) -> tuple[Article, ...]:
    """StockInfoResponse / StockInfoMessage articles."""
    articles = []
    for item in stock:
        details = item.details if include_details else None
        articles.append(Article(
            id=to_wire(item.article_id),
            name=_wire(details.name) if details else None,
            dosage_form=_wire(details.dosage_form) if details else None,
            packaging_unit=_wire(details.packaging_unit) if details else None,
            max_sub_item_quantity=details.max_sub_item_quantity if details else None,
            quantity=item.quantity,
            packs=tuple(_stock_pack(p) for p in item.packs) if include_packs else ()))
    return tuple(articles)


# --------------------------------------------------------------------------- outputs


def _criterion(criteria: OutputCriteria, index: int) -> OutputCriterion:
    where = f"Criteria[{index}]"
    pack_id = criteria.pack_id or None
    sub_items = criteria.sub_item_quantity or None
    article_id = _plain(criteria.article_id)
    quantity = criteria.quantity
    if pack_id is not None:
        if quantity > 1:
            raise OutputRefused(f"{where}: PackId selects one pack, Quantity {quantity} "
                                "cannot be served")
        quantity = 1
    elif article_id is None:
        raise OutputRefused(f"{where}: names neither an ArticleId nor a PackId")
    elif quantity == 0 and sub_items is None:
        raise OutputRefused(f"{where}: Quantity 0 dispenses nothing")
    return OutputCriterion(
        quantity=max(quantity, 1), article_id=article_id, pack_id=pack_id,
        batch_number=_plain(criteria.batch_number),
        single_batch=bool(criteria.single_batch_number),
        minimum_expiry_date=criteria.minimum_expiry_date, sub_item_quantity=sub_items,
        external_id=_plain(criteria.external_id), serial_number=_plain(criteria.serial_number),
        stock_location_id=_plain(criteria.stock_location_id),
        machine_location=_plain(criteria.machine_location),
        label_requested=bool(criteria.labels))


def fingerprint(request: OutputRequest) -> str:
    """The same for two OutputRequests that ask for the same thing (Ids, routing and the
    envelope aside)."""
    body = ET.Element("Output")
    if request.box_number is not None:
        body.set("BoxNumber", request.box_number)
    body.append(encode(request.details))
    for criteria in request.criteria:
        body.append(encode(criteria))
    return hashlib.sha256(ET.tostring(body, encoding="utf-8")).hexdigest()[:32]


def output_task(request: OutputRequest, key: TaskKey, actor: str,
                config: Wwks2Config) -> OutputTask:
    """The task an OutputRequest asks for; raises :class:`OutputRefused` when it cannot
    be taken as asked (unknown destination, nothing to dispense)."""
    details = request.details
    point = config.output_point(details.output_destination)
    if point is None:
        raise OutputRefused(f"OutputDestination {details.output_destination} is not an "
                            "output of this machine")
    if not request.criteria:
        raise OutputRefused("an output without Criteria only forwards a box; this machine "
                            "has no box system")
    criteria = tuple(_criterion(c, i) for i, c in enumerate(request.criteria, 1))
    priority: Priority = details.priority or "Normal"
    return OutputTask(key=key, actor=actor, priority=priority,
                      destination=details.output_destination, output_point=point,
                      criteria=criteria, fingerprint=fingerprint(request),
                      box_number=request.box_number)


def _dispensed(pack: DispensedPack, destination: int) -> Pack:
    return Pack(id=pack.pack_id, batch_number=_wire(pack.batch_number),
                external_id=_wire(pack.external_id), serial_number=_wire(pack.serial_number),
                expiry_date=pack.expiry_date, scan_code=_wire(pack.scan_code),
                box_number=_wire(pack.box_number), output_destination=destination,
                label_status=pack.label_status)


def _pack_destination(pack: DispensedPack, requested: int | None,
                      config: Wwks2Config) -> int:
    if requested is not None and config.output_point(requested) == pack.output_point:
        return requested
    return config.destination_of(pack.output_point)


def dispensed_articles(packs: Sequence[DispensedPack], unserved: Sequence[str],
                       requested: int | None, config: Wwks2Config) -> tuple[Article, ...]:
    """Packs grouped under their article (in the order dispensed), then an empty Article
    for each unserved article id that got no pack at all."""
    grouped: dict[str, list[Pack]] = {}
    for pack in packs:
        grouped.setdefault(pack.article_id, []).append(
            _dispensed(pack, _pack_destination(pack, requested, config)))
    articles = [Article(id=to_wire(a), packs=tuple(p)) for a, p in grouped.items()]
    articles += [Article(id=to_wire(a)) for a in dict.fromkeys(unserved) if a not in grouped]
    return tuple(articles)


def output_message(outcome: OutputOutcome, source: int, destination: int,
                   config: Wwks2Config) -> OutputMessage:
    """The OutputMessage of a finished task (Id "1" for a manual output)."""
    task_id = outcome.key.task_id if outcome.key is not None else "1"
    return OutputMessage(
        id=task_id, source=source, destination=destination, box_number=outcome.box_number,
        details=OutputDetails(priority=outcome.priority,
                              output_destination=outcome.destination,
                              status=outcome.status),
        articles=dispensed_articles(outcome.packs, outcome.unserved, outcome.destination,
                                    config))


def task_element(key: TaskKey, report: TaskReport, include_details: bool,
                 config: Wwks2Config) -> Task:
    articles = (dispensed_articles(report.packs, (), report.destination, config)
                if include_details else ())
    return Task(type="Output", id=key.task_id, status=report.status, articles=articles)


# --------------------------------------------------------------------------- articles


def master_articles(request: ArticleMasterSetRequest) -> list[MasterArticle]:
    """The articles of an ArticleMasterSet; raises ValueError when one has no Id."""
    found = []
    for i, article in enumerate(request.articles, 1):
        if not article.id:
            raise ValueError(f"ArticleMasterSetRequest/Article[{i}]@Id is missing")
        found.append(MasterArticle(
            article_id=from_wire(article.id), name=from_wire(article.name or ""),
            dosage_form=from_wire(article.dosage_form or ""),
            packaging_unit=from_wire(article.packaging_unit or ""),
            requires_fridge=bool(article.requires_fridge),
            max_sub_item_quantity=article.max_sub_item_quantity or 0,
            product_codes=tuple(from_wire(c.code) for c in article.product_codes if c.code),
            stock_location_id=_plain(article.stock_location_id),
            machine_location=_plain(article.machine_location)))
    return found


# --------------------------------------------------------------------------- input


def input_request_articles(pack: ScannedPack) -> tuple[Article, ...]:
    """The one Article (without Id) of an InputRequest, with the pack at Index 0."""
    offered = Pack(index=0, scan_code=to_wire(pack.scan_code),
                   delivery_number=_wire(pack.delivery_number),
                   batch_number=_wire(pack.batch_number), external_id=_wire(pack.external_id),
                   serial_number=_wire(pack.serial_number), expiry_date=pack.expiry_date)
    return (Article(packs=(offered,)),)


def input_answer(response: InputResponse, request_id: str, scan_code: str) -> InputAnswer:
    """The decision an InputResponse gives for our pack (Index 0, or the only pack).

    A response without a Handling for the pack counts as Rejected: nothing is stored on
    an answer the machine cannot read."""
    source = response.source
    for article in response.articles:
        for pack in article.packs:
            if pack.index not in (None, 0):
                continue
            handling: Handling | None = pack.handling
            if handling is None or handling.input in ("Completed", "Aborted"):
                return InputAnswer(request_id, "Rejected",
                                   "the InputResponse has no Handling Input for the pack",
                                   subscriber_id=source)
            verdict = cast(InputVerdict, handling.input)
            article_id = _plain(article.id) or scan_code
            return InputAnswer(
                request_id, verdict, from_wire(handling.text or ""), article_id=article_id,
                article_name=_plain(article.name), requires_fridge=article.requires_fridge,
                batch_number=_plain(pack.batch_number), expiry_date=pack.expiry_date,
                serial_number=_plain(pack.serial_number), subscriber_id=source)
    return InputAnswer(request_id, "Rejected", "the InputResponse names no pack",
                       subscriber_id=source)


def input_message_articles(outcome: InputOutcome) -> tuple[Article, ...]:
    handling = Handling(input="Completed" if outcome.pack_id > 0 else "Aborted")
    stored = Pack(index=0, id=outcome.pack_id, batch_number=_wire(outcome.batch_number),
                  external_id=_wire(outcome.external_id),
                  serial_number=_wire(outcome.serial_number), expiry_date=outcome.expiry_date,
                  scan_code=_wire(outcome.scan_code), handling=handling)
    return (Article(id=to_wire(outcome.article_id), packs=(stored,)),)
