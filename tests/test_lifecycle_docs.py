"""The lifecycle diagrams in docs/lifecycles.md are the tables' own."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_committed_diagrams_match_the_tables() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_lifecycles", ROOT / "scripts" / "gen_lifecycles.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT / "docs" / "lifecycles.md").read_text()
    assert committed == gen.page(), (
        "docs/lifecycles.md differs from the lifecycle tables: run scripts/gen_lifecycles.py")
