"""End-to-end fixtures: a dispenser-sim process and a dispenserd process per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.testing import Daemon, Sim


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # Unix socket paths must stay short.
    return tmp_path


@pytest.fixture
def sim(workdir: Path) -> Iterator[Sim]:
    s = Sim(workdir, instant=True)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def daemon(workdir: Path, sim: Sim, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    d = Daemon(workdir, sim)
    yield d
    try:
        code = d.stop()
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(d.log_tail(200))
    assert code == 0, "dispenserd did not stop cleanly:\n" + d.log_tail()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, "rep_" + rep.when, rep)
