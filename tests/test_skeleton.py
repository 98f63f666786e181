"""The project's packages import and carry their typing marker."""

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["dispenser", "drivers", "firmware_sim"])
def test_package_imports_and_is_typed(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert (Path(module.__file__).parent / "py.typed").exists()
