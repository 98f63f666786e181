"""Simulator of the picking robot and label printer, over real transports."""

from firmware_sim.simulator import Simulator, SimulatorError, SimulatorOptions

__all__ = ["Simulator", "SimulatorError", "SimulatorOptions"]
