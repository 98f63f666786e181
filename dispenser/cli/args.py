"""Argument types shared by the commands: each refuses a bad value with a usage error."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import shtab

__all__ = ["complete_files", "limit", "number", "seconds"]


def complete_files(action: argparse.Action) -> argparse.Action:
    """Mark an argument as a file name for shell completion (``dispenserctl completion``)."""
    setattr(action, "complete", shtab.FILE)  # noqa: B010 - argparse.Action declares no such field
    return action


def limit(text: str) -> int:
    """A list page size, 1..1000 as the API accepts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be 1..1000")
    return value


def number(text: str) -> int:
    """Decimal or 0x hex, as register addresses are written in docs/robot-protocol.md."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A type for a duration in seconds within ``low..high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low:g}..{high:g} seconds")
        return value

    return parse
