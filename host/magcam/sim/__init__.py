"""The simulated module: real firmware in the MicroPython unix port, virtual hardware around it."""

__all__ = ["Simulator", "SimulatorError"]


def __getattr__(name):
    # Lazy: port discovery reads the registry without pulling in numpy and OpenCV.
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
