"""ZPL encoder: exact bytes, escaping that no user string can break out of, and labels that
an independent renderer (zplkit) draws and an independent decoder (zxing-cpp) reads back."""

from __future__ import annotations

import re

import pytest
import zplkit
import zxingcpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zplkit.output import Raster
from zplkit.parse import parse
from zplkit.rendering import RenderError

from dispenser.testing.tinyfont import build_font, download_command
from drivers.printer.zpl import (
    Label,
    LabelError,
    cancel_all_request,
    field_data,
    host_status_request,
)


def test_label_exact_bytes() -> None:
    label = (
        Label(400, 200)
        .text(10, 20, "Metformin 500 mg")
        .code128(10, 60, "SHP-42", height=50)
        .datamatrix(300, 60, "0104012345678901", module=4, gs1=True)
        .box(0, 0, 400, 200, thickness=3)
    )
    assert label.build() == (
        b"^XA^CI28^PW400^LL200^LH0,0"
        b"^FO10,20^A0N,30,0^FH^FDMetformin 500 mg^FS"
        b"^FO10,60^BY2^BCN,50,Y,N,N,A^FH^FDSHP-42^FS"
        b"^FO300,60^BXN,4,200^FH^FD_7E10104012345678901^FS"
        b"^FO0,0^GB400,200,3^FS"
        b"^XZ"
    )
    assert host_status_request() == b"~HS"
    assert cancel_all_request() == b"~JA"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain text, 12.5 mg/ml", "plain text, 12.5 mg/ml"),
        ("^XZ^XA", "_5EXZ_5EXA"),
        ("~JR", "_7EJR"),
        ("a_b\\c", "a_5Fb_5Cc"),
        ("\r\n\x00\x7f", "_0D_0A_00_7F"),
        ("张伟", "_E5_BC_A0_E4_BC_9F"),
        ("é", "_C3_A9"),
    ],
)
def test_field_data_escapes(text: str, escaped: str) -> None:
    assert field_data(text) == escaped


def test_code128_greater_than_is_the_literal_invocation() -> None:
    assert b"^FDA>0B^FS" in Label(100, 100).code128(0, 0, "A>B").build()


@pytest.mark.parametrize(
    "build",
    [
        lambda: Label(100, 100).code128(0, 0, "张"),
        lambda: Label(100, 100).code128(0, 0, ""),
        lambda: Label(100, 100).datamatrix(0, 0, ""),
        lambda: Label(100, 100).text(-1, 0, "x"),
        lambda: Label(100, 100).text(0, 0, "x", font="E:BAD^XA.TTF"),
        lambda: Label(100, 100).text(0, 0, "x", font="^"),
        lambda: Label(0, 100),
        lambda: Label(100, 100, dpi=250),
    ],
)
def test_unencodable_elements_are_refused(build: object) -> None:
    with pytest.raises(LabelError):
        build()  # type: ignore[operator]


def _unescape(data: bytes) -> bytes:
    return re.sub(rb"_([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


def _field_contents(zpl: bytes) -> list[bytes]:
    return [_unescape(e.data[3:]) for e in parse(zpl).elements if e.data.startswith(b"^FD")]


ascii_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)


@given(text=st.text(), dm=st.text(min_size=1), c128=ascii_printable)
def test_no_user_string_can_add_a_command(text: str, dm: str, c128: str) -> None:
    label = Label(800, 600).text(0, 0, text).datamatrix(0, 100, dm).code128(0, 300, c128)
    zpl = label.build()
    elements = parse(zpl).elements
    assert all(e.kind == "format_command" for e in elements)
    assert [e.data[1:3].decode() for e in elements] == label.commands
    # and what the printer decodes is exactly the user's text
    contents = _field_contents(zpl)
    assert contents[0] == text.encode()
    assert contents[1].replace(b"~~", b"~") == dm.encode()
    assert contents[2].replace(b">0", b">") == c128.encode()


def _render(zpl: bytes, width: int = 812, height: int = 609) -> Raster:
    doc = zplkit.render(zpl, zplkit.Options(width=width, height=height, dpi=203))
    assert len(doc.labels) == 1
    return doc.labels[0].rasterize()


def _decode(raster: Raster) -> dict[str, bytes]:
    image = memoryview(raster.pixels).cast("B", (raster.height, raster.width))
    return {b.format.name: b.bytes for b in zxingcpp.read_barcodes(image)}


def test_rendered_label_with_chinese_name_and_both_barcodes() -> None:
    name = "张伟 (Zhang Wei) 天津市"
    gs1 = "0104012345678901" + "1728013110" + "LOT^7" + "\x1d" + "21SER~1"
    label = (
        Label(812, 609)
        .text(20, 20, name, height=40, font="E:CJK.TTF")
        .text(20, 80, "Shipment SHP-000123 ^XZ ~JA")
        .code128(20, 150, "SHP-000123>A_~", height=100)
        .datamatrix(520, 150, gs1, module=6, gs1=True)
        .hline(20, 560, 770)
    )
    raster = _render(download_command(build_font(name)) + label.build())
    found = _decode(raster)
    assert found["Code128"] == b"SHP-000123>A_~"
    # a GS1 DataMatrix reads back as its element string (FNC1 first, GS between fields)
    assert found["DataMatrix"] == gs1.encode()
    # the name line was drawn with glyphs of the stored font (it has no glyph for a char
    # outside the name, so rendering would fail if the escaping changed a character)
    row_ink = sum(
        1
        for y in range(20, 60)
        for x in range(20, 790)
        if raster.pixels[y * raster.width + x] < 128
    )
    assert row_ink > 5000


def test_chinese_text_without_a_cjk_font_is_not_silently_accepted_by_the_renderer() -> None:
    # The renderer is strict: it knows which characters the escaped bytes decode to.
    with pytest.raises(RenderError, match="张"):
        _render(Label(400, 100).text(0, 0, "张").build(), 400, 100)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c128=ascii_printable.filter(lambda s: len(s) <= 30), dm=st.text(min_size=1, max_size=60))
def test_barcodes_decode_to_what_was_encoded(c128: str, dm: str) -> None:
    label = (
        Label(812, 609)
        .code128(20, 20, c128, height=100, module_width=2)
        .datamatrix(20, 200, dm, module=6)
    )
    found = _decode(_render(label.build()))
    assert found.get("Code128") == c128.encode()
    assert found.get("DataMatrix") == dm.encode()
