"""Why a message could not be processed, in the terms of WWKS2's ``UnprocessedMessage``.

Each error names the ``Reason`` the server answers with, and a text that says what is wrong
(with the element and attribute, e.g. ``OutputRequest/Criteria[2]@Quantity``) so the
pharmacy software's log tells its support what to fix.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "DataError",
    "FrameTooLarge",
    "NotSupportedError",
    "Reason",
    "UnprocessedError",
    "XmlSyntaxError",
]

Reason = Literal["SyntaxError", "NotSupported", "DataError", "TooManyRequests"]


class UnprocessedError(Exception):
    """A message the server did not act on; answered with ``UnprocessedMessage``.

    ``message_id`` is the ``Id`` of the offending message when it could be read, ``lead`` its
    lead element name.
    """

    reason: Reason = "DataError"

    def __init__(self, text: str, *, message_id: str | None = None,
                 lead: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.message_id = message_id
        self.lead = lead


class XmlSyntaxError(UnprocessedError):
    """Not well-formed XML, a DTD or entity declaration, or not one message in a WWKS
    envelope."""

    reason: Reason = "SyntaxError"


class NotSupportedError(UnprocessedError):
    """Well-formed, but a message this storage system does not take (unknown lead element,
    a message only the storage system sends, another protocol version)."""

    reason: Reason = "NotSupported"


class DataError(UnprocessedError):
    """A known message with a missing mandatory attribute or a value of the wrong type."""

    reason: Reason = "DataError"


class FrameTooLarge(Exception):
    """A message grew past ``max_message_bytes`` before its ``</WWKS>``: framing is lost and
    the connection must be closed."""

    def __init__(self, limit: int, frames: list[bytes] | None = None) -> None:
        super().__init__(f"message longer than {limit} bytes")
        self.limit = limit
        # Complete messages that came before the oversized one in the same read.
        self.frames = frames or []
