"""Pure ZPL II encoding: a label builder and the host status request. No I/O.

Every string that comes from outside (names, addresses, barcode data) goes through
:func:`field_data`, which hex-escapes under ``^FH`` every byte that is not plain printable
ASCII, together with ``^``, ``~``, ``_`` and ``\\``. A user string therefore never contains
a ZPL command prefix or control character, and UTF-8 text (Chinese names) reaches the
printer byte for byte under ``^CI28``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HEX_INDICATOR = "_"
# Printable ASCII that stays literal. Everything else, including the command prefixes ^ and ~,
# the hex indicator _ and the backslash (a line break marker in ^FB blocks), becomes _XX.
_LITERAL = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"^", "~", "_", "\\"}


_FONT_FILE = re.compile(r"[A-Z]:[A-Z0-9_]{1,16}\.(TTF|TTE|FNT)")


class LabelError(ValueError):
    """A label element cannot be encoded (out-of-range geometry, unencodable barcode data)."""


def field_data(text: str) -> str:
    """The escaped form of ``text`` for a ``^FH^FD...^FS`` field: only literal-safe ASCII and
    ``_XX`` hex escapes of its UTF-8 bytes."""
    out: list[str] = []
    for ch in text:
        if ch in _LITERAL:
            out.append(ch)
        else:
            out.extend(f"{HEX_INDICATOR}{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def host_status_request() -> bytes:
    """The ``~HS`` host status request (answered with three STX...ETX CR LF strings)."""
    return b"~HS"


def cancel_all_request() -> bytes:
    """``~JA``: cancel every format waiting in the printer's buffer."""
    return b"~JA"


def _dots(value: int, name: str, low: int = 0, high: int = 32000) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise LabelError(f"{name}={value!r} must be an integer in {low}..{high} dots")
    return value


@dataclass
class Label:
    """A label of ``width`` x ``height`` dots (203 dpi unless told otherwise).

    Builder methods append one element each and return the label, so calls chain. Element
    order is print order; coordinates are dots from the top-left corner."""

    width: int
    height: int
    dpi: int = 203
    _fields: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        _dots(self.width, "width", 1)
        _dots(self.height, "height", 1)
        if self.dpi not in (152, 203, 300, 600):
            raise LabelError(f"dpi {self.dpi} is not a Zebra print head resolution")

    @property
    def commands(self) -> list[str]:
        """The format commands (two characters after ``^``) :meth:`build` emits, in order."""
        head = ["XA", "CI", "PW", "LL", "LH"]
        body: list[str] = []
        for f in self._fields:
            body.extend(part[:2] for part in f.split("^")[1:])
        return [*head, *body, "XZ"]

    def text(
        self, x: int, y: int, text: str, *, height: int = 30, width: int = 0, font: str = "0"
    ) -> Label:
        """A line of text; ``width`` 0 keeps the font's proportions.

        ``font`` is a one-character printer font (default ``0``, the scalable font) or the
        name of a TrueType font stored on the printer, such as ``E:SIMSUN.TTF``: Chinese names
        need a font with CJK glyphs loaded on the printer."""
        _dots(height, "height", 10)
        _dots(width, "width", 0)
        if len(font) == 1 and (font.isascii() and font.isalnum()):
            select = f"^A{font}N,{height},{width}"
        elif _FONT_FILE.fullmatch(font):
            select = f"^A@N,{height},{width},{font}"
        else:
            raise LabelError(f"font {font!r} is neither a font letter nor a font file name")
        self._fields.append(
            f"^FO{_dots(x, 'x')},{_dots(y, 'y')}{select}^FH^FD{field_data(text)}^FS"
        )
        return self

    def code128(
        self,
        x: int,
        y: int,
        data: str,
        *,
        height: int = 80,
        module_width: int = 2,
        interpretation: bool = True,
    ) -> Label:
        """A Code 128 barcode in automatic subset mode; data is printable ASCII."""
        if not data or any(not 0x20 <= ord(ch) < 0x7F for ch in data):
            raise LabelError(f"Code 128 data must be non-empty printable ASCII: {data!r}")
        # In ^BC data ">" starts an invocation code; ">0" is the literal ">".
        data = data.replace(">", ">0")
        _dots(height, "height", 1)
        _dots(module_width, "module_width", 1, 10)
        line = "Y" if interpretation else "N"
        self._fields.append(
            f"^FO{_dots(x, 'x')},{_dots(y, 'y')}^BY{module_width}"
            f"^BCN,{height},{line},N,N,A^FH^FD{field_data(data)}^FS"
        )
        return self

    def datamatrix(self, x: int, y: int, data: str, *, module: int = 6, gs1: bool = False) -> Label:
        """An ECC 200 DataMatrix of the UTF-8 bytes of ``data``; ``module`` is dots per cell.

        With ``gs1`` the symbol starts with FNC1 (a GS1 DataMatrix); separate variable-length
        fields in ``data`` with GS (``\\x1d``)."""
        if not data:
            raise LabelError("DataMatrix data must not be empty")
        _dots(module, "module", 1, 30)
        # In ^BX data "~" starts an escape sequence; "~~" is the literal "~". The escapes are
        # applied before field_data, so they too reach the printer hex-escaped.
        payload = ("~1" if gs1 else "") + data.replace("~", "~~")
        self._fields.append(
            f"^FO{_dots(x, 'x')},{_dots(y, 'y')}^BXN,{module},200^FH^FD{field_data(payload)}^FS"
        )
        return self

    def box(self, x: int, y: int, width: int, height: int, *, thickness: int = 2) -> Label:
        """A rectangle outline; a box as thick as it is narrow is a filled bar or a line."""
        _dots(thickness, "thickness", 1)
        _dots(width, "width", thickness)
        _dots(height, "height", thickness)
        self._fields.append(f"^FO{_dots(x, 'x')},{_dots(y, 'y')}^GB{width},{height},{thickness}^FS")
        return self

    def hline(self, x: int, y: int, length: int, *, thickness: int = 2) -> Label:
        return self.box(x, y, length, thickness, thickness=thickness)

    def vline(self, x: int, y: int, length: int, *, thickness: int = 2) -> Label:
        return self.box(x, y, thickness, length, thickness=thickness)

    def build(self) -> bytes:
        """The whole label as bytes: ``^XA ^CI28 ... ^XZ`` (ASCII only, by construction)."""
        head = f"^XA^CI28^PW{self.width}^LL{self.height}^LH0,0"
        return (head + "".join(self._fields) + "^XZ").encode("ascii")
