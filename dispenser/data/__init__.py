"""Data shipped inside the package, found wherever the daemon is started.

``formulary.csv`` is the demo formulary (1,400 drugs), made by ``scripts/gen_formulary.py``:
the daemon uses it when ``[formulary] path`` is not set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import as_file, files
from pathlib import Path

__all__ = ["DEMO_FORMULARY", "demo_formulary"]

# Its path in a source checkout or an installed package (both are plain files).
DEMO_FORMULARY = Path(__file__).with_name("formulary.csv")


@contextmanager
def demo_formulary() -> Iterator[Path]:
    """A path to the demo formulary for the duration of the block, however the package
    was installed (a zipped one is extracted to a temporary file)."""
    with as_file(files(__name__) / "formulary.csv") as path:
        yield path
