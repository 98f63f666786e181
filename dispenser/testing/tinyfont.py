"""A minimal TrueType font built in memory: one filled square per requested character.

Zebra printers print Chinese only with a CJK font stored on them. The tests stand in for
that font with this one (downloaded with ``~DU`` ahead of the label), so the renderer has to
find a glyph for every character the label's escaped UTF-8 decodes to.
"""

from __future__ import annotations

import struct


def _table_checksum(data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def _cmap(chars: list[int]) -> bytes:
    segments = [(c, c, (i + 1 - c) & 0xFFFF) for i, c in enumerate(chars)]
    segments.append((0xFFFF, 0xFFFF, 1))
    n = len(segments)
    search = 2 ** (n.bit_length() - 1)
    body = struct.pack(">HHHH", 2 * n, 2 * search, search.bit_length() - 1, 2 * n - 2 * search)
    body += b"".join(struct.pack(">H", end) for _, end, _ in segments) + b"\0\0"
    body += b"".join(struct.pack(">H", start) for start, _, _ in segments)
    body += b"".join(struct.pack(">H", delta) for _, _, delta in segments)
    body += b"\0\0" * n  # idRangeOffset
    sub = struct.pack(">HHH", 4, 6 + len(body), 0) + body
    return struct.pack(">HHHHI", 0, 1, 3, 1, 12) + sub


def _square() -> bytes:
    # one contour, four on-curve points, 16-bit coordinate deltas
    header = struct.pack(">hhhhh", 1, 100, 0, 900, 800)
    points = [(100, 0), (100, 800), (900, 800), (900, 0)]
    deltas: list[tuple[int, int]] = []
    last = (0, 0)
    for p in points:
        deltas.append((p[0] - last[0], p[1] - last[1]))
        last = p
    body = struct.pack(">HH", 3, 0) + bytes([0x01] * 4)
    body += b"".join(struct.pack(">h", dx) for dx, _ in deltas)
    body += b"".join(struct.pack(">h", dy) for _, dy in deltas)
    glyph = header + body
    return glyph + b"\0" * (-len(glyph) % 4)


def build_font(text: str) -> bytes:
    """A TrueType font with a square glyph for every distinct character of ``text``."""
    chars = sorted({ord(c) for c in text if ord(c) < 0xFFFF})
    n_glyphs = len(chars) + 1
    square = _square()
    glyf = square * len(chars)
    # glyph 0 (.notdef) is empty; glyph i spans the i-th square
    loca = struct.pack(">I", 0) + b"".join(
        struct.pack(">I", len(square) * i) for i in range(n_glyphs)
    )
    head = struct.pack(
        ">IIIIHHqqhhhhHHhhh",
        0x00010000, 0x00010000, 0, 0x5F0F3CF5, 0x000B, 1000, 0, 0,
        0, 0, 1000, 800, 0, 8, 2, 1, 0,
    )  # fmt: skip
    hhea = struct.pack(
        ">IhhhHhhhhhhhhhhhH",
        0x00010000, 800, -200, 0, 1000, 0, 100, 900, 1, 0, 0, 0, 0, 0, 0, 0, n_glyphs,
    )  # fmt: skip
    maxp = struct.pack(
        ">IHHHHHHHHHHHHHH", 0x00010000, n_glyphs, 4, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0
    )
    hmtx = struct.pack(">Hh", 1000, 0) + struct.pack(">Hh", 1000, 100) * len(chars)
    post = struct.pack(">IIhhIIIII", 0x00030000, 0, -100, 50, 0, 0, 0, 0, 0)
    family = "Tiny".encode("utf-16-be")
    name = struct.pack(">HHH", 0, 1, 18) + struct.pack(">HHHHHH", 3, 1, 0x409, 1, len(family), 0)
    name += family
    tables = {
        b"cmap": _cmap(chars),
        b"glyf": glyf,
        b"head": head,
        b"hhea": hhea,
        b"hmtx": hmtx,
        b"loca": loca,
        b"maxp": maxp,
        b"name": name,
        b"post": post,
    }
    count = len(tables)
    search = 16 * 2 ** (count.bit_length() - 1)
    out = struct.pack(
        ">IHHHH", 0x00010000, count, search, count.bit_length() - 1, 16 * count - search
    )
    offset = 12 + 16 * count
    directory = b""
    data = b""
    for tag in sorted(tables):
        blob = tables[tag]
        directory += struct.pack(
            ">4sIII", tag, _table_checksum(blob), offset + len(data), len(blob)
        )
        data += blob + b"\0" * (-len(blob) % 4)
    return out + directory + data


def download_command(font: bytes, name: str = "E:CJK.TTF") -> bytes:
    """``~DU`` that stores ``font`` on the printer under ``name``."""
    return f"~DU{name},{len(font)},{font.hex().upper()}".encode("ascii")
