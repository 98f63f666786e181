"""Safe parsing (no DTD, no entities, bounded depth), the exact envelope, text escapes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from dispenser.wwks2.errors import NotSupportedError, XmlSyntaxError
from dispenser.wwks2.xmlio import (
    MAX_DEPTH,
    encode_envelope,
    from_wire,
    parse_envelope,
    to_wire,
    xml_safe,
)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<WWKS Version="2.0"><StatusRequest Id="&lol4;" Source="100" Destination="999"/></WWKS>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE WWKS [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<WWKS Version="2.0"><StatusRequest Id="&xxe;" Source="100" Destination="999"/></WWKS>"""


def nested(depth: int) -> bytes:
    return (b'<WWKS Version="2.0"><StatusRequest Id="1">' + b"<a>" * depth + b"</a>" * depth
            + b"</StatusRequest></WWKS>")


@pytest.mark.parametrize("frame", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_document_type_declarations_are_refused(frame: bytes) -> None:
    with pytest.raises(XmlSyntaxError, match="document type declarations"):
        parse_envelope(frame)


def test_deep_nesting_is_refused_while_parsing() -> None:
    assert parse_envelope(nested(MAX_DEPTH - 3)).tag == "StatusRequest"
    with pytest.raises(XmlSyntaxError, match="nested deeper"):
        parse_envelope(nested(100_000))


@pytest.mark.parametrize(("frame", "problem"), [
    (b"<WWKS><StatusRequest Id='1'></WWKS>", "not well-formed"),
    (b"\xff\xfe<WWKS/></WWKS>", "not well-formed"),
    (b'<Envelope><StatusRequest Id="1"/></Envelope>', "root element must be WWKS"),
    (b'<WWKS xmlns="urn:x"><StatusRequest Id="1"/></WWKS>', "root element must be WWKS"),
    (b'<WWKS Version="2.0"></WWKS>', "exactly one message"),
    (b'<WWKS Version="2.0"><A Id="1"/><B Id="2"/></WWKS>', "exactly one message"),
])
def test_what_is_not_one_message_in_an_envelope(frame: bytes, problem: str) -> None:
    with pytest.raises(XmlSyntaxError, match=problem):
        parse_envelope(frame)


def test_another_protocol_version_is_not_supported() -> None:
    with pytest.raises(NotSupportedError) as caught:
        parse_envelope(b'<WWKS Version="3.0"><StatusRequest Id="4"/></WWKS>')
    assert caught.value.message_id == "4"


def test_a_declaration_and_a_bom_are_accepted_on_input() -> None:
    frame = b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\n<WWKS Version="2.0" ' \
            b'TimeStamp="2025-01-10T08:00:01Z"><StatusRequest Id="1"/></WWKS>'
    assert parse_envelope(frame).get("Id") == "1"


def test_the_envelope_is_written_exactly() -> None:
    lead = ET.Element("KeepAliveResponse", {"Id": "12", "Source": "999", "Destination": "100"})
    data = encode_envelope(lead, datetime(2025, 1, 10, 8, 0, 1, tzinfo=UTC))
    assert data == (b'<WWKS Version="2.0" TimeStamp="2025-01-10T08:00:01Z"><KeepAliveResponse '
                    b'Id="12" Source="999" Destination="100" /></WWKS>')


def test_control_characters_as_wwks2_text() -> None:
    scan = "0104150123456789\x1d10B7"
    assert to_wire(scan) == "0104150123456789\\x1D10B7"
    assert from_wire("0104150123456789\\x1d10B7") == scan
    assert from_wire(to_wire(scan)) == scan
    assert from_wire("price \\x41 stays") == "price \\x41 stays"  # not a control character
    assert xml_safe("a\x01b\tc\ud800") == "a\\x01b\tc\ufffd"
