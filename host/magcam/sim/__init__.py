"""The simulated module: real firmware in the MicroPython unix port, virtual hardware around it."""

from .runner import Simulator, SimulatorError

__all__ = ["Simulator", "SimulatorError"]
