"""Message framing: a WWKS2 message runs from ``<WWKS ...>`` up to and including ``</WWKS>``.

There is no length prefix and no terminator byte. :class:`FrameSplitter` is fed the bytes as
they arrive (any split: one byte at a time, several messages at once) and returns each
complete message. While it looks for the end tag it skips ``<![CDATA[ ... ]]>`` sections and
``<!-- ... -->`` comments, so a ``</WWKS>`` or ``<`` inside them does not end the message.
Whitespace between messages is dropped and never counted against the limit.

A message longer than ``max_message_bytes`` (end tag included) raises
:class:`~dispenser.wwks2.errors.FrameTooLarge`: the stream cannot be resynchronised, the
caller closes the connection. The splitter keeps at most ``max_message_bytes`` plus one
read's worth of bytes, and scans each byte a bounded number of times (no quadratic rescans
when a large message arrives in small pieces).
"""

from __future__ import annotations

from dispenser.wwks2.errors import FrameTooLarge

__all__ = ["END_TAG", "FrameSplitter"]

END_TAG = b"</WWKS>"
_CDATA_OPEN, _CDATA_CLOSE = b"<![CDATA[", b"]]>"
_COMMENT_OPEN, _COMMENT_CLOSE = b"<!--", b"-->"
_OPENERS = ((_CDATA_OPEN, _CDATA_CLOSE), (_COMMENT_OPEN, _COMMENT_CLOSE))
_WHITESPACE = b" \t\r\n"
# Compact the buffer once this much of it has been handed out.
_COMPACT_AT = 64 * 1024


class FrameSplitter:
    """Incremental splitter; one per connection."""

    def __init__(self, max_message_bytes: int) -> None:
        if max_message_bytes < len(END_TAG):
            raise ValueError("max_message_bytes is too small for any message")
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._start = 0  # where the current message begins (after whitespace)
        self._scan = 0  # where the search for its end goes on
        self._closer: bytes | None = None  # inside CDATA or a comment: what ends it
        self._started = False  # leading whitespace of the current message skipped

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held (0 between messages)."""
        return len(self._buf) - self._start if self._started else 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages they complete, in order.

        Raises :class:`FrameTooLarge` when the current message passes the limit; the
        messages completed before it in this call are in its ``frames``.
        """
        self._buf += data
        frames: list[bytes] = []
        while True:
            if not self._started and not self._skip_whitespace():
                break
            end = self._find_end()
            if end is None:
                if len(self._buf) - self._start > self.max_message_bytes:
                    raise FrameTooLarge(self.max_message_bytes, frames)
                break
            if end - self._start > self.max_message_bytes:
                raise FrameTooLarge(self.max_message_bytes, frames)
            frames.append(bytes(self._buf[self._start:end]))
            self._start = self._scan = end
            self._started = False
        if self._start >= _COMPACT_AT or (self._start and self._start == len(self._buf)):
            del self._buf[:self._start]
            self._scan -= self._start
            self._start = 0
        return frames

    def _skip_whitespace(self) -> bool:
        """Move past whitespace before a message; False when only whitespace is left."""
        buf, i, n = self._buf, self._start, len(self._buf)
        while i < n and buf[i] in _WHITESPACE:
            i += 1
        self._start = self._scan = i
        if i == n:
            return False
        self._started = True
        return True

    def _find_end(self) -> int | None:
        """Offset just past the current message's ``</WWKS>``, or None if not here yet."""
        buf = self._buf
        while True:
            if self._closer is not None:
                at = buf.find(self._closer, self._scan)
                if at < 0:
                    # Keep the last bytes: the closer may be split across two reads.
                    self._scan = max(self._scan, len(buf) - len(self._closer) + 1)
                    return None
                self._scan = at + len(self._closer)
                self._closer = None
                continue
            at = buf.find(b"<", self._scan)
            if at < 0:
                self._scan = len(buf)
                return None
            if buf.startswith(END_TAG, at):
                return at + len(END_TAG)
            opened = False
            for opener, closer in _OPENERS:
                if buf.startswith(opener, at):
                    self._closer = closer
                    self._scan = at + len(opener)
                    opened = True
                    break
            if opened:
                continue
            if len(buf) - at < len(_CDATA_OPEN) and any(
                token.startswith(bytes(buf[at:])) for token in (END_TAG, _CDATA_OPEN,
                                                                 _COMMENT_OPEN)
            ):
                self._scan = at  # decide when the next bytes arrive
                return None
            self._scan = at + 1
