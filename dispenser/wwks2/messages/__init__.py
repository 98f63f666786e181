"""Typed WWKS2 messages and the lead-element registry.

:func:`decode_message` turns a parsed lead element into its model, refusing what a storage
system is not sent (:class:`~dispenser.wwks2.errors.NotSupportedError`) and bad values
(:class:`~dispenser.wwks2.errors.DataError`, with the message's Id when it has one).
:func:`encode_message` writes a model as one complete message (envelope included).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from dispenser.wwks2.errors import DataError, NotSupportedError
from dispenser.wwks2.messages.common import (
    CAPABILITIES,
    Article,
    Box,
    Capability,
    Component,
    Envelope,
    Handling,
    Label,
    Pack,
    ProductCode,
    Routed,
    Subscriber,
    Task,
)
from dispenser.wwks2.messages.input import (
    ArticleMasterSetRequest,
    ArticleMasterSetResponse,
    InputMessage,
    InputRequest,
    InputResponse,
    SetResult,
)
from dispenser.wwks2.messages.output import (
    OutputCriteria,
    OutputDetails,
    OutputInfoRequest,
    OutputInfoResponse,
    OutputMessage,
    OutputRequest,
    OutputResponse,
    TaskCancelOutputRequest,
    TaskCancelOutputResponse,
    TaskCancelRequest,
    TaskCancelResponse,
    TaskInfoRequest,
    TaskInfoResponse,
)
from dispenser.wwks2.messages.session import (
    HelloRequest,
    HelloResponse,
    KeepAliveRequest,
    KeepAliveResponse,
    OriginalMessage,
    StatusRequest,
    StatusResponse,
    UnprocessedMessage,
)
from dispenser.wwks2.messages.stock import (
    StockCriteria,
    StockInfoMessage,
    StockInfoRequest,
    StockInfoResponse,
)
from dispenser.wwks2.model import decode, encode
from dispenser.wwks2.xmlio import encode_envelope

__all__ = [
    "ALL_MESSAGES",
    "CAPABILITIES",
    "TO_STORAGE_SYSTEM",
    "Article",
    "ArticleMasterSetRequest",
    "ArticleMasterSetResponse",
    "Box",
    "Capability",
    "Component",
    "Envelope",
    "Handling",
    "HelloRequest",
    "HelloResponse",
    "InputMessage",
    "InputRequest",
    "InputResponse",
    "KeepAliveRequest",
    "KeepAliveResponse",
    "Label",
    "OriginalMessage",
    "OutputCriteria",
    "OutputDetails",
    "OutputInfoRequest",
    "OutputInfoResponse",
    "OutputMessage",
    "OutputRequest",
    "OutputResponse",
    "Pack",
    "ProductCode",
    "Routed",
    "SetResult",
    "StatusRequest",
    "StatusResponse",
    "StockCriteria",
    "StockInfoMessage",
    "StockInfoRequest",
    "StockInfoResponse",
    "Subscriber",
    "Task",
    "TaskCancelOutputRequest",
    "TaskCancelOutputResponse",
    "TaskCancelRequest",
    "TaskCancelResponse",
    "TaskInfoRequest",
    "TaskInfoResponse",
    "UnprocessedMessage",
    "decode_message",
    "encode_message",
]

# What the pharmacy software sends to a storage system.
_TO_STORAGE_SYSTEM: tuple[type[Envelope], ...] = (
    HelloRequest, KeepAliveRequest, KeepAliveResponse, StatusRequest, StockInfoRequest,
    OutputRequest, TaskInfoRequest, OutputInfoRequest, TaskCancelRequest,
    TaskCancelOutputRequest, InputResponse, ArticleMasterSetRequest,
)
_FROM_STORAGE_SYSTEM: tuple[type[Envelope], ...] = (
    HelloResponse, StatusResponse, StockInfoResponse, StockInfoMessage, OutputResponse,
    OutputMessage, TaskInfoResponse, OutputInfoResponse, TaskCancelResponse,
    TaskCancelOutputResponse, InputRequest, InputMessage, ArticleMasterSetResponse,
    UnprocessedMessage,
)
TO_STORAGE_SYSTEM: dict[str, type[Envelope]] = {cls.TAG: cls for cls in _TO_STORAGE_SYSTEM}
# Every message this package models, in both directions.
ALL_MESSAGES: dict[str, type[Envelope]] = {
    cls.TAG: cls for cls in (*_TO_STORAGE_SYSTEM, *_FROM_STORAGE_SYSTEM)}


def decode_message(lead: ET.Element,
                   accepted: dict[str, type[Envelope]] = TO_STORAGE_SYSTEM) -> Envelope:
    """The model of a lead element that this side accepts (``accepted``).

    Raises :class:`NotSupportedError` for an unknown lead element or one this side is not
    sent, and :class:`DataError` for a missing or mistyped value.
    """
    tag = lead.tag
    message_id = lead.get("Id")
    cls = accepted.get(tag)
    if cls is None:
        if tag in ALL_MESSAGES:
            text = f"{tag} is sent by a storage system, not to it"
        else:
            text = f"{tag} is not a message this storage system supports"
        raise NotSupportedError(text, message_id=message_id, lead=tag)
    try:
        return decode(cls, lead)
    except DataError as error:
        error.message_id, error.lead = message_id, tag
        raise


def encode_message(message: Envelope, now: datetime | None = None) -> bytes:
    """One complete message: ``<WWKS Version="2.0" TimeStamp="...">`` and the lead."""
    return encode_envelope(encode(message), now)
