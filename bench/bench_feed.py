#!/usr/bin/env python3
"""The day's orders with the hospital feed (issue 10) through the dispensing core; prints
the holds by reason, asserts nothing.

    .venv/bin/python bench/bench_feed.py [--orders 20000] [--seed 20261128]

Makes the day (``bench/dayload.py``, ``day_plan``) and its hospital feed
(``hospital_feed``: records of the hospital's pharmacy for 5 % of the patients,
prescriptions registered for the orders but 1 % unregistered, 0.5 % from a clinic outside
the programme, 0.5 % short of one pack), registers the feed, submits the orders
(``submit_many`` in batches of 1,000) into a fresh journal with the designated
institutions configured, and counts the holds by reason against what the feed planned.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.core.views import Actor
from dispenser.journal import Journal
from dispenser.testing import FORMULARY
from dispenser.testing.campaigns.dayload import FEED_INSTITUTIONS, day_plan, hospital_feed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=20261128)
    args = ap.parse_args()
    plan = day_plan(args.orders, args.seed)
    feed = hospital_feed(plan.orders, args.seed)
    print(f"plan: {plan.summary()['kinds']}; feed: {feed.summary()}")
    formulary = Formulary.load(FORMULARY)
    with tempfile.TemporaryDirectory() as tmp:
        d = Dispensary(Journal(Path(tmp) / "journal.db"), formulary, Policy(), SlotGeometry(),
                       lambda: datetime.now(UTC), FEED_INSTITUTIONS)
        feed_actor = Actor("hospital-feed", "records")
        t = time.perf_counter()
        for i in range(0, len(feed.records), 1000):
            d.import_records(feed.records[i:i + 1000], feed_actor)
        for i in range(0, len(feed.prescriptions), 200):
            d.register_prescriptions(feed.prescriptions[i:i + 200], feed_actor)
        t_feed = time.perf_counter() - t
        t = time.perf_counter()
        holds: Counter[str] = Counter()
        held = 0
        for i in range(0, len(plan.orders), 1000):
            for v in d.submit_many(plan.orders[i:i + 1000], Actor("shop", "order_system")):
                if isinstance(v, Exception):
                    holds["refused: " + type(v).__name__] += 1
                    continue
                held += bool(v.holds)
                holds.update({h.code for h in v.holds})
        t_orders = time.perf_counter() - t
        d.journal.close()
    print(f"feed registered in {t_feed:.1f} s; {len(plan.orders):,} orders submitted in "
          f"{t_orders:.1f} s; {held:,} held")
    print("holds by reason (orders): " + ", ".join(f"{k} {n:,}" for k, n in holds.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
