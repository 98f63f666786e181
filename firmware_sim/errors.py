"""The simulator's own error."""

from __future__ import annotations

__all__ = ["SimulatorError"]


class SimulatorError(ValueError):
    """A request to the simulator that cannot be carried out (bad fault name, bad pack...)."""
