"""Text from elsewhere made safe for a terminal: every control character shown as an escape.

An order system, a client with a token or an old journal can put text into the daemon's
answers (a patient's name, a pause reason, a fault note). Written raw to a staff terminal,
ESC or CSI (U+009B) sequences would move the cursor, clear the screen, retitle the window
or fake the lines around them; NUL, CR, LF and BEL would cut, overwrite or forge lines.

``dispenserctl`` therefore shows C0 controls (U+0000-U+001F), DEL (U+007F) and C1 controls
(U+0080-U+009F) as ``\\xNN`` (``\\x1b`` for ESC): a person sees that they are there and
what they are. :class:`~dispenser.cli.context.Context` applies :func:`visible_tree` to every
answer and refusal before anything renders it; ``--json`` output keeps the data exact and
is safe as it is (:func:`json_text`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["json_text", "visible", "visible_tree"]

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# What json.dumps(ensure_ascii=False) leaves raw: it escapes U+0000-U+001F itself.
_RAW_IN_JSON = re.compile("[\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with each control character written as ``\\xNN``."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def visible_tree(value: Any) -> Any:
    """A decoded JSON value with :func:`visible` applied to every string, keys included."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible_tree(k): visible_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [visible_tree(v) for v in value]
    return value


def json_text(text: str) -> str:
    """JSON text with DEL and the C1 controls written as ``\\u00NN`` escapes: the same
    JSON value, nothing a terminal acts on. (They can only occur inside strings: JSON's own
    syntax is printable ASCII.)"""
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
