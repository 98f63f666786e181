"""One object for values that thousands of live orders, shipments and packs repeat.

Each row read from the journal brings its own copy of a drug code, a batch, an expiry
day, a delivery window's start or a time zone; 20,000 live orders with 20,000 packs
held about 10 MB of such copies (docs/performance.md, "Memory of the live state"). The
tables here give one object per value instead. They are bounded by what the machine
knows (drug codes, batches, days, windows, zones), not by orders, and are only ever read
or extended: a value is never changed in place (strings, dates, datetimes and tuples
cannot be).
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from functools import lru_cache

__all__ = ["shared_date", "shared_datetime", "shared_item", "shared_moment", "shared_text",
           "with_shared_zone"]

_TEXTS: dict[str, str] = {}
_ZONES: dict[tzinfo, tzinfo] = {}
_MOMENTS: dict[datetime, datetime] = {}
# Bounded anyway: a controller that runs for years sees new batches and windows every day.
_LIMIT = 200_000


def shared_text(text: str) -> str:
    """The one string object for ``text`` (drug codes, batches)."""
    known = _TEXTS.get(text)
    if known is not None:
        return known
    if len(_TEXTS) >= _LIMIT:
        _TEXTS.clear()  # (a fresh table: sharing starts again, nothing is lost)
    _TEXTS[text] = text
    return text


@lru_cache(maxsize=8192)
def shared_date(text: str) -> date:
    """The day of an ISO date text, one object per day (expiry dates)."""
    return date.fromisoformat(text)


def with_shared_zone(moment: datetime) -> datetime:
    """``moment`` with the one object of its time zone (each parse of "+08:00" makes a
    zone object of its own)."""
    zone = moment.tzinfo
    if zone is None:
        return moment
    known = _ZONES.setdefault(zone, zone)
    return moment if known is zone else moment.replace(tzinfo=known)


def shared_moment(moment: datetime) -> datetime:
    """The one object for a moment many rows repeat (a delivery window's start)."""
    known = _MOMENTS.get(moment)
    # (Equal instants with another offset print differently: not the same value here.)
    if known is not None and known.utcoffset() == moment.utcoffset():
        return known
    if len(_MOMENTS) >= _LIMIT:
        _MOMENTS.clear()
    moment = with_shared_zone(moment)
    _MOMENTS[moment] = moment
    return moment


@lru_cache(maxsize=8192)
def shared_datetime(text: str) -> datetime:
    """``shared_moment`` of an ISO text (the parse itself kept per distinct text): the
    window starts read from the journal and those of new orders are the same objects."""
    return shared_moment(datetime.fromisoformat(text))


@lru_cache(maxsize=16384)
def shared_item(text: str) -> tuple[str, int, int]:
    """An order item stored as ``drug_code*quantity*days_supply``, one tuple per text."""
    code, quantity, days = text.split("*")
    return shared_text(code), int(quantity), int(days)
