"""How benchmarks and campaigns report: a line at a time, figures as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["report_campaign", "say"]


def say(text: str) -> None:
    """One line of a benchmark's or campaign's progress, shown at once."""
    print(text, flush=True)


def report_campaign(name: str, seed: int, fig: dict[str, Any], json_path: str | None,
                    hidden: tuple[str, ...] = ()) -> int:
    """Print a campaign's figures (less ``hidden`` keys), write them all to ``json_path``
    if given, say whether the invariant held, and return the exit status (0 held, 1 not)."""
    say(json.dumps({k: v for k, v in fig.items() if k not in hidden}, indent=1))
    if json_path:
        Path(json_path).write_text(json.dumps(fig, indent=1))
    ok = bool(fig["invariant"]["ok"])
    say(f"{name} campaign seed={seed}: invariant {'HOLDS' if ok else 'VIOLATED'}")
    return 0 if ok else 1
