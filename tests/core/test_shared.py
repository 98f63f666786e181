"""Shared values (``dispenser.core.shared``): one object per value, and the value
unchanged, offsets included."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from dispenser.core.shared import (
    shared_date,
    shared_datetime,
    shared_item,
    shared_moment,
    shared_text,
    with_shared_zone,
)


def test_one_object_per_value() -> None:
    a, b = "".join(["0690000001", "0006"]), "".join(["06900000", "010006"])
    assert a is not b
    assert shared_text(a) is shared_text(b) == "06900000010006"
    assert shared_date("2027-05-31") is shared_date("2027-05-31") == date(2027, 5, 31)
    assert shared_item("06900000010006*2*30") == ("06900000010006", 2, 30)
    assert shared_item("06900000010006*2*30")[0] is shared_text(a)
    t = "2026-11-24T09:00:00+08:00"
    assert shared_datetime(t) is shared_datetime(t) == datetime.fromisoformat(t)


def test_a_moment_keeps_its_offset() -> None:
    cst = timezone(timedelta(hours=8))
    at_cst = datetime(2026, 11, 24, 9, 0, tzinfo=cst)
    at_utc = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert at_cst == at_utc
    first = shared_moment(at_cst)
    assert shared_moment(datetime(2026, 11, 24, 9, 0, tzinfo=timezone(timedelta(hours=8)))) \
        is first
    other = shared_moment(at_utc)  # the same instant, written in UTC: printed as given
    assert other.isoformat() == "2026-11-24T01:00:00+00:00"
    assert first.isoformat() == "2026-11-24T09:00:00+08:00"


def test_zones_are_shared() -> None:
    one = with_shared_zone(datetime.fromisoformat("2026-11-24T09:00:00+08:00"))
    two = with_shared_zone(datetime.fromisoformat("2026-11-25T10:30:00+08:00"))
    assert one.tzinfo is two.tzinfo
    assert two.isoformat() == "2026-11-25T10:30:00+08:00"
