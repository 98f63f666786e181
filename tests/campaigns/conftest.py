"""Short versions of the crash and fault campaigns (the full ones: docs/reliability.md).

Each run takes a random seed, printed and put in the failure message; set
``CAMPAIGN_SEED`` to replay one.
"""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture
def campaign_seed() -> int:
    raw = os.environ.get("CAMPAIGN_SEED")
    seed = int(raw) if raw else random.randrange(1, 10**6)
    print(f"campaign seed {seed} (replay: CAMPAIGN_SEED={seed})")
    return seed
