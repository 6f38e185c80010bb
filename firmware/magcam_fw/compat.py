"""The one place that smooths over MicroPython, CircuitPython and CPython differences.

Usage::

    from magcam_fw.compat import const, ticks_ms, ticks_diff, sleep_ms

    _PERIOD_MS = const(10)
    t0 = ticks_ms()
    await sleep_ms(_PERIOD_MS)
    elapsed = ticks_diff(ticks_ms(), t0)
"""

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    import asyncio
except ImportError:  # very old MicroPython builds
    import uasyncio as asyncio

try:
    from time import ticks_ms, ticks_diff, ticks_add
except ImportError:  # CPython and CircuitPython without the ticks_* family
    import time as _time

    # Same wrap-around arithmetic as MicroPython's 30-bit ticks, so tests see the same maths.
    _TICKS_PERIOD = const(1 << 30)
    _TICKS_HALF = const(1 << 29)
    _T0 = _time.monotonic_ns() if hasattr(_time, "monotonic_ns") else int(_time.monotonic() * 1e9)

    def ticks_ms():
        now = _time.monotonic_ns() if hasattr(_time, "monotonic_ns") else int(_time.monotonic() * 1e9)
        return ((now - _T0) // 1000000) & (_TICKS_PERIOD - 1)

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def ticks_add(a, delta):
        return (a + delta) & (_TICKS_PERIOD - 1)


if hasattr(asyncio, "sleep_ms"):
    sleep_ms = asyncio.sleep_ms
else:

    def sleep_ms(ms):
        return asyncio.sleep(ms / 1000)


def is_micropython():
    import sys

    return sys.implementation.name in ("micropython", "circuitpython")
