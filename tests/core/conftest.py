"""Fixtures for the dispensing core (helpers: ``dispenser.testing.core``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispenser.core import Dispensary
from dispenser.core.formulary import Formulary
from dispenser.core.policy import Policy
from dispenser.core.stock import SlotGeometry
from dispenser.journal import Journal
from dispenser.testing.core import DEMO_FORMULARY, Factory, FakeClock


@pytest.fixture(scope="session")
def formulary() -> Formulary:
    return DEMO_FORMULARY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock) -> Iterator[Factory]:
    journals: list[Journal] = []

    def factory(policy: Policy | None = None, geometry: SlotGeometry | None = None,
                name: str = "journal.db",
                institutions: dict[str, str] | None = None,
                warm_indexes: bool = True) -> Dispensary:
        j = Journal(tmp_path / name)
        journals.append(j)
        return Dispensary(j, DEMO_FORMULARY, policy or Policy(), geometry or SlotGeometry(
            2, 5, 20, 10), clock, institutions, warm_indexes)

    yield factory
    for j in journals:
        j.close()


@pytest.fixture(scope="module")
def make_dispensary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    """For hypothesis tests: every call gives a fresh journal (function fixtures are not
    reset between examples)."""
    journals: list[Journal] = []
    counter = itertools.count()

    def factory(policy: Policy | None = None, geometry: SlotGeometry | None = None,
                clock: FakeClock | None = None,
                institutions: dict[str, str] | None = None,
                warm_indexes: bool = True) -> Dispensary:
        path = tmp_path_factory.mktemp("hyp") / f"j{next(counter)}.db"
        j = Journal(path)
        journals.append(j)
        return Dispensary(j, DEMO_FORMULARY, policy or Policy(),
                          geometry or SlotGeometry(1, 3, 10, 4), clock or FakeClock(),
                          institutions, warm_indexes)

    yield factory
    for j in journals:
        j.close()


@pytest.fixture
def disp(make: Factory) -> Dispensary:
    return make()
