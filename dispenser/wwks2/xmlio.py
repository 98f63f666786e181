"""One WWKS2 message as XML: safe parsing, the exact envelope, text conventions.

**Parsing** (:func:`parse_envelope`) uses the standard library's expat parser through
``defusedxml``: a document type declaration is refused outright (so no entity can be
declared, expanded or fetched: no "billion laughs", no external entity), and elements nested
deeper than :data:`MAX_DEPTH` are refused while parsing. The root must be ``WWKS`` without a
namespace, holding exactly one lead element.

**Writing** (:func:`encode_envelope`) builds the tree with ElementTree, never text by hand:
``<WWKS Version="2.0" TimeStamp="yyyy-MM-ddTHH:mm:ssZ">`` immediately followed by the lead
element, UTF-8, no XML declaration, no BOM, no namespace declarations: what the client
library embedded in most pharmacy software requires (it looks for the lead element in the
first 125 characters).

**Text.** WWKS2 writes control characters as the literal text ``\\xHH`` (the GS1 separator
as ``\\x1D``). Values read from messages are kept exactly as received, so echoes are
unchanged; :func:`from_wire` and :func:`to_wire` convert between that form and plain text
with real control characters (what the machine's scans hold). Anything XML 1.0 cannot carry
is written as ``\\xHH`` as a last resort (:func:`xml_safe`), so the server never emits a
document the peer cannot parse.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from dispenser.wwks2.errors import NotSupportedError, XmlSyntaxError

__all__ = [
    "MAX_DEPTH",
    "VERSION",
    "encode_envelope",
    "format_timestamp",
    "from_wire",
    "parse_envelope",
    "to_wire",
    "xml_safe",
]

VERSION = "2.0"
# The deepest WWKS2 message (WWKS/TaskInfoResponse/Task/Article/Pack/Handling) is 6 levels;
# anything far deeper is an attack on the parser, not a message.
MAX_DEPTH = 32

_WIRE_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class _TooDeep(Exception):
    pass


class _DepthLimitedBuilder:
    """An ElementTree target that refuses nesting deeper than ``MAX_DEPTH``."""

    def __init__(self) -> None:
        self._builder = ET.TreeBuilder()
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooDeep
        return self._builder.start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> ET.Element:
        return self._builder.close()


def parse_envelope(frame: bytes) -> ET.Element:
    """Parse one framed message and return its lead element (the child of ``WWKS``).

    Raises :class:`XmlSyntaxError` for anything that is not one well-formed message in a
    WWKS envelope, and :class:`NotSupportedError` for another protocol ``Version``.
    """
    parser: Any = DefusedXMLParser(target=_DepthLimitedBuilder(), forbid_dtd=True,
                                   forbid_entities=True, forbid_external=True)
    try:
        parser.feed(frame)
        root: ET.Element = parser.close()
    except _TooDeep:
        raise XmlSyntaxError(f"elements nested deeper than {MAX_DEPTH} levels") from None
    except DefusedXmlException:
        raise XmlSyntaxError("document type declarations and entities are not accepted") \
            from None
    except ET.ParseError as exc:
        raise XmlSyntaxError(f"not well-formed XML: {exc}") from None
    if root.tag != "WWKS":
        raise XmlSyntaxError(f"the root element must be WWKS (without a namespace), "
                             f"not {root.tag}")
    children = list(root)
    lead = children[0] if len(children) == 1 else None
    message_id = lead.get("Id") if lead is not None else None
    version = root.get("Version")
    if version is not None and version != VERSION:
        raise NotSupportedError(f"WWKS Version {version!r} is not supported; this storage "
                                f"system speaks {VERSION}",
                                message_id=message_id,
                                lead=lead.tag if lead is not None else None)
    if lead is None:
        raise XmlSyntaxError(f"a WWKS envelope holds exactly one message, this one holds "
                             f"{len(children)}")
    return lead


def format_timestamp(now: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` in UTC, as WWKS2 writes it."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_envelope(lead: ET.Element, now: datetime | None = None) -> bytes:
    """The complete message: envelope and lead element, UTF-8 bytes."""
    root = ET.Element("WWKS", {"Version": VERSION,
                               "TimeStamp": format_timestamp(now or datetime.now(UTC))})
    root.append(lead)
    # Serialized to text, then encoded once: the same bytes as encoding="utf-8" (which
    # writes no declaration either), without a codec call per piece of the tree (a third
    # of the time for a StockInfoResponse of 20,000 packs).
    return ET.tostring(root, encoding="unicode").encode("utf-8")


def from_wire(text: str) -> str:
    """Plain text from a WWKS2 value: ``\\xHH`` (either case) of a control character
    becomes that character; other text is unchanged."""
    if "\\x" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        code = int(match.group(1), 16)
        return chr(code) if code < 0x20 or code == 0x7F else match.group(0)

    return _WIRE_ESCAPE.sub(replace, text)


def to_wire(text: str) -> str:
    """A WWKS2 value from plain text: every control character becomes ``\\xHH``
    (upper-case hex, as the pharmacy client library writes it)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02X}", text)


def xml_safe(text: str) -> str:
    """``text`` with what XML 1.0 cannot carry replaced: control characters by ``\\xHH``,
    surrogates and non-characters by U+FFFD. Tab, newline and carriage return stay."""
    if not _NOT_XML.search(text):
        return text

    def replace(match: re.Match[str]) -> str:
        code = ord(match.group(0))
        return f"\\x{code:02X}" if code < 0x20 else "\ufffd"

    return _NOT_XML.sub(replace, text)
