"""Five SIGKILLs of dispenserd over 100 orders: every order ends final and the journal
equals the simulator's ledger pack by pack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispenser.testing.campaigns.crash import campaign

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
async def test_kills_lose_nothing_and_pick_nothing_twice(tmp_path: Path,
                                                         campaign_seed: int) -> None:
    fig = await campaign(tmp_path / "work", orders=100, kills=5, seed=campaign_seed,
                         speed=100.0, min_gap=0.2, max_gap=2.0, rate=20.0, max_down=2.0,
                         timeout=150)
    inv = fig["invariant"]
    assert inv["ok"], (f"seed {campaign_seed}: " + json.dumps(inv["first_problems"], indent=1)
                       + "\n(replay: CAMPAIGN_SEED=" + str(campaign_seed) + ")")
    assert fig["kills"] == 5
    assert sum(fig["orders_final"].values()) == 100, fig["orders_final"]
