"""Simulator of the picking robot and label printer, over real transports."""

from firmware_sim.errors import SimulatorError
from firmware_sim.simulator import Simulator, SimulatorOptions

__all__ = ["Simulator", "SimulatorError", "SimulatorOptions"]
