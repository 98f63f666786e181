"""The edge campaign (docs/reliability.md) at small sizes, one test per case: a full disk
mid-burst, floods, a second daemon, a tampered audit trail, short-dated stock, control
characters, a replaced robot board. Each case checks its outcome against the simulator's
ledger and the journal itself; here its figures are printed (never judged by time: the
flood's ping targets are the command's business) and its outcome asserted."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing.campaigns.edges import CASES, Sizes, run
from dispenser.testing.tools import under_ci

pytestmark = pytest.mark.slow

SMALL = Sizes(flood=1_000, flood_orders=12, flood_speed=0.0, unauth_calls=40,
              reason_bytes=100_000, swap_orders=6, judge_latency=False)


@pytest.fixture
def workdir() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="edges", dir="/tmp"))  # short socket paths
    yield where
    shutil.rmtree(where, ignore_errors=True)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(CASES))
async def test_edge_case(workdir: Path, name: str) -> None:
    [outcome] = await run(workdir, [name], SMALL)
    if outcome.outcome == "skipped":
        assert not under_ci(), outcome.why  # (the case itself fails under CI=true)
        pytest.skip(outcome.why)
    assert outcome.outcome == "passed", outcome.why
    assert outcome.figures
