"""Messages that keep the connection going: Hello, KeepAlive, Status, UnprocessedMessage."""

from __future__ import annotations

from typing import get_args

from dispenser.wwks2.errors import Reason
from dispenser.wwks2.messages.common import Component, Envelope, Routed, State, Subscriber
from dispenser.wwks2.model import BOOL, Model, attr, child, children, model, text

__all__ = [
    "HelloRequest",
    "HelloResponse",
    "KeepAliveRequest",
    "KeepAliveResponse",
    "OriginalMessage",
    "StatusRequest",
    "StatusResponse",
    "UnprocessedMessage",
]


@model("HelloRequest")
class HelloRequest(Envelope):
    subscriber: Subscriber = child(Subscriber)


@model("HelloResponse")
class HelloResponse(Envelope):
    subscriber: Subscriber = child(Subscriber)


@model("KeepAliveRequest")
class KeepAliveRequest(Routed):
    pass


@model("KeepAliveResponse")
class KeepAliveResponse(Routed):
    pass


@model("StatusRequest")
class StatusRequest(Routed):
    include_details: bool | None = attr("IncludeDetails", BOOL, default=None)


@model("StatusResponse")
class StatusResponse(Routed):
    state: State = attr("State", choices=get_args(State))
    state_text: str | None = attr("StateText", default=None)
    components: tuple[Component, ...] = children(Component, default=())


@model("Message")
class OriginalMessage(Model):
    """The message an UnprocessedMessage refers to: its Id and its text."""

    id: str | None = attr("Id", default=None)
    text: str | None = text(default=None)


_REASONS: tuple[Reason, ...] = get_args(Reason)


@model("UnprocessedMessage")
class UnprocessedMessage(Routed):
    reason: Reason = attr("Reason", choices=_REASONS)
    text: str | None = attr("Text", default=None)
    message: OriginalMessage | None = child(OriginalMessage, default=None)

