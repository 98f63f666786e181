"""Shelf life: which packs may serve an order item, and which can serve none any more.

- A pack may be allocated to an item only if it is not quarantined and its expiry is on
  or after ``dispense date + max(min_shelf_life_days, item.days_supply)``
  (``earliest_expiry``): the patient can use the whole supply before it expires, and never
  gets less than the pharmacy's minimum shelf life.
- A pack in stock whose expiry is before ``today + max(min_shelf_life_days,
  min_days_supply)`` (``near_expiry_before``) cannot serve even the shortest supply an
  order may ask for: it is **near expiry**, and **expired** once its expiry is before
  today. Both are derived from the expiry and the day, never stored: the pack stays
  ``in_stock`` until the expiry sweep takes it out.

The dispense date is the day the allocation is made; a reservation is checked again on the
day picking starts (``Allocator.recheck``).
"""

from __future__ import annotations

from datetime import date, timedelta

from dispenser.core.policy import Policy

__all__ = ["earliest_expiry", "expired", "near_expiry_before"]


def earliest_expiry(policy: Policy, today: date, days_supply: int) -> date:
    """The earliest expiry a pack may have to serve an item of ``days_supply`` days
    dispensed ``today`` (a pack expiring on that day qualifies)."""
    return today + timedelta(days=max(policy.min_shelf_life_days, days_supply))


def near_expiry_before(policy: Policy, today: date) -> date:
    """An in-stock pack expiring before this day is near expiry: it qualifies for no order
    (not even one of ``min_days_supply``)."""
    return earliest_expiry(policy, today, policy.min_days_supply)


def expired(expiry: date, today: date) -> bool:
    """Expired: the expiry day is over."""
    return expiry < today
