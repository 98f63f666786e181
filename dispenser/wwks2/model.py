"""Declarative XML mapping for WWKS2 messages: typed dataclasses, one generic codec.

A model is a frozen, keyword-only dataclass with a ``TAG`` and fields declared with
:func:`attr` (an XML attribute), :func:`child` / :func:`children` (nested models) or
:func:`text_child` (a child element holding text, such as a label's ``Content``)::

    @model("Criteria")
    class StockCriteria(Model):
        quantity: int = attr("Quantity", INT)
        article_id: str | None = attr("ArticleId", default=None)

What callers may rely on:

- **Decoding** (:func:`decode`) reads the attributes a field declares and ignores any other
  attribute or child (newer revisions of the protocol add fields). A field without a
  default that is missing, and any value of the wrong type, raises
  :class:`~dispenser.wwks2.errors.DataError` naming the element path and attribute
  (``OutputRequest/Criteria[2]@Quantity``). An optional attribute that is present but empty
  reads as absent (``None``): "0 and empty mean not set" is then the caller's rule for 0.
- **Types.** Booleans are read case-insensitively (``True``, ``true``, ``1``) and written
  ``True``/``False``. Integers are decimal; dates are ``YYYY-MM-DD``. Enumerations
  (``choices``) are read case-insensitively and written in their one exact spelling.
  Text is kept exactly as received (``\\xHH`` escapes included).
- **Encoding** (:func:`encode`) writes attributes in field order, skips ``None``, then the
  children in field order. Text passes :func:`~dispenser.wwks2.xmlio.xml_safe`.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any, ClassVar, TypeVar, dataclass_transform

from dispenser.wwks2.errors import DataError
from dispenser.wwks2.xmlio import xml_safe

__all__ = [
    "BOOL",
    "DATE",
    "INT",
    "TEXT",
    "UINT",
    "Kind",
    "Model",
    "attr",
    "child",
    "children",
    "decode",
    "encode",
    "model",
    "text",
    "text_child",
]


class Kind(enum.Enum):
    TEXT = "text"
    INT = "int"  # signed 32-bit (subscriber ids, destinations)
    UINT = "uint"  # unsigned 64-bit (pack ids, quantities)
    BOOL = "bool"
    DATE = "date"


TEXT, INT, UINT, BOOL, DATE = Kind.TEXT, Kind.INT, Kind.UINT, Kind.BOOL, Kind.DATE

_KEY = "wwks2"
_INTEGER = re.compile(r"^[+-]?[0-9]{1,20}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})
_INT_RANGE = {Kind.INT: (-(2**31), 2**31 - 1), Kind.UINT: (0, 2**64 - 1)}


class Model:
    """Base of every mapped element; ``TAG`` is its XML element name."""

    TAG: ClassVar[str] = ""


M = TypeVar("M", bound=Model)


@dataclasses.dataclass(frozen=True, slots=True)
class _Attr:
    name: str
    kind: Kind
    choices: tuple[str, ...] | None
    aliases: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _Child:
    name: str
    model: type[Model]
    many: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _TextChild:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Text:
    pass


_MISSING: Any = dataclasses.MISSING


def _field(spec: _Attr | _Child | _TextChild | _Text, default: Any) -> Any:
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={_KEY: spec})
    return dataclasses.field(default=default, metadata={_KEY: spec})


def attr(name: str, kind: Kind = Kind.TEXT, *, default: Any = _MISSING,
         choices: Sequence[str] | None = None, aliases: Sequence[str] = ()) -> Any:
    """An XML attribute; required unless a ``default`` (normally None) is given."""
    spec = _Attr(name, kind, tuple(choices) if choices is not None else None, tuple(aliases))
    return _field(spec, default)


def child(cls: type[Model], *, default: Any = _MISSING) -> Any:
    """One nested element of model ``cls``; required unless ``default=None``."""
    return _field(_Child(cls.TAG, cls, many=False), default)


def children(cls: type[Model], *, default: Any = _MISSING) -> Any:
    """Nested elements of model ``cls``, as a tuple; pass ``default=()``."""
    return _field(_Child(cls.TAG, cls, many=True), default)


def text_child(name: str, *, default: Any = _MISSING) -> Any:
    """A child element whose text is the value (written as escaped text)."""
    return _field(_TextChild(name), default)


def text(*, default: Any = _MISSING) -> Any:
    """The element's own text (written as escaped text, never as raw CDATA)."""
    return _field(_Text(), default)


@dataclass_transform(kw_only_default=True, frozen_default=True,
                     field_specifiers=(dataclasses.field, attr, child, children, text_child,
                                       text))
def model(tag: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: a frozen keyword-only dataclass mapped to element ``tag``."""

    def wrap(cls: type[M]) -> type[M]:
        cls.TAG = tag
        return dataclasses.dataclass(frozen=True, kw_only=True, slots=True)(cls)

    return wrap


_Spec = tuple[str, _Attr | _Child | _TextChild | _Text, bool]


_SPECS: dict[type[Model], tuple[_Spec, ...]] = {}


def _specs(cls: type[Model]) -> tuple[_Spec, ...]:
    """(field name, mapping, required) of every mapped field, in declaration order."""
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    found = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = f.metadata.get(_KEY)
        if spec is None:
            continue
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        found.append((f.name, spec, required))
    _SPECS[cls] = result = tuple(found)
    return result


# --------------------------------------------------------------------------- decoding


def _convert(raw: str, spec: _Attr, where: str) -> Any:
    kind = spec.kind
    if kind is Kind.TEXT:
        if spec.choices is None:
            return raw
        for choice in spec.choices:
            if choice.lower() == raw.lower():
                return choice
        raise DataError(f"{where}: {raw!r} is not one of {', '.join(spec.choices)}")
    if kind is Kind.BOOL:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise DataError(f"{where}: {raw!r} is not a boolean (True or False)")
    if kind is Kind.DATE:
        text = raw.strip()
        if _DATE.match(text):
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        raise DataError(f"{where}: {raw!r} is not a date (YYYY-MM-DD)")
    text = raw.strip()
    if not _INTEGER.match(text):
        raise DataError(f"{where}: {raw!r} is not an integer")
    value = int(text)
    lowest, highest = _INT_RANGE[kind]
    if not lowest <= value <= highest:
        raise DataError(f"{where}: {value} is out of range ({lowest}..{highest})")
    return value


def decode(cls: type[M], element: ET.Element, path: str | None = None) -> M:
    """Build model ``cls`` from ``element``; raises :class:`DataError` naming the path."""
    path = path or element.tag
    values: dict[str, Any] = {}
    for name, spec, required in _specs(cls):
        if isinstance(spec, _Attr):
            raw = element.get(spec.name)
            for alias in spec.aliases:
                if raw is None:
                    raw = element.get(alias)
            where = f"{path}@{spec.name}"
            if raw is None or (raw == "" and spec.kind is not Kind.TEXT) or (
                    raw == "" and spec.choices is not None):
                if required:
                    raise DataError(f"{where} is missing")
                continue
            values[name] = _convert(raw, spec, where)
        elif isinstance(spec, _Child):
            found = element.findall(spec.name)
            if spec.many:
                values[name] = tuple(
                    decode(spec.model, e, f"{path}/{spec.name}[{i}]")
                    for i, e in enumerate(found, 1))
            elif found:
                values[name] = decode(spec.model, found[0], f"{path}/{spec.name}")
            elif required:
                raise DataError(f"{path}/{spec.name} is missing")
        elif isinstance(spec, _TextChild):
            node = element.find(spec.name)
            if node is not None:
                values[name] = node.text or ""
            elif required:
                raise DataError(f"{path}/{spec.name} is missing")
        else:
            values[name] = element.text or ""
    return cls(**values)


# --------------------------------------------------------------------------- encoding


def _text(value: Any) -> str:
    kind = type(value)  # the common types first: this runs for every attribute written
    if kind is str:
        return xml_safe(value)
    if kind is bool:
        return "True" if value else "False"
    if kind is int:
        return str(value)
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    return xml_safe(str(value))


_Plan = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, Any], ...]]
_PLANS: dict[type[Model], _Plan] = {}


def _plan(cls: type[Model]) -> _Plan:
    """(field, attribute name) of the attributes, (field, spec) of the rest, in order."""
    plan = _PLANS.get(cls)
    if plan is None:
        specs = _specs(cls)
        plan = _PLANS[cls] = (
            tuple((name, spec.name) for name, spec, _ in specs if isinstance(spec, _Attr)),
            tuple((name, spec) for name, spec, _ in specs if not isinstance(spec, _Attr)))
    return plan


def encode(obj: Model, parent: ET.Element | None = None) -> ET.Element:
    """The element for ``obj`` (appended to ``parent`` when given)."""
    cls = type(obj)
    element = ET.Element(cls.TAG) if parent is None else ET.SubElement(parent, cls.TAG)
    attributes, others = _plan(cls)
    for name, xml_name in attributes:
        value = getattr(obj, name)
        if value is not None:
            element.set(xml_name, _text(value))
    for name, spec in others:
        if isinstance(spec, _Child):
            value = getattr(obj, name)
            if spec.many:
                for item in value:
                    encode(item, element)
            elif value is not None:
                encode(value, element)
        elif isinstance(spec, _TextChild):
            value = getattr(obj, name)
            if value is not None:
                ET.SubElement(element, spec.name).text = xml_safe(value)
        elif isinstance(spec, _Text):
            value = getattr(obj, name)
            if value is not None:
                element.text = xml_safe(value)
    return element
