"""Quadrature decoder for the focus ring: table-driven, exact, bounce-proof.

The pins are passed in (any object with ``value()`` and ``irq(handler=..., trigger=...)``).
The interrupt handler only reads the pins and updates an integer through a lookup table:
no allocation, so it is safe as a hard IRQ. Impossible transitions (both lines changing at
once: bounce or a missed edge) are counted as glitches and never move the count.

Usage::

    enc = QuadratureDecoder(pin_a, pin_b)
    enc.attach()             # installs IRQs on both pins
    ...
    enc.value(), enc.glitches
"""

from magcam_fw.compat import const

# Index: (previous AB << 2) | new AB. +1 / -1 for a legal step, 0 for no change or illegal.
_STEP = (0, 1, -1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 0, -1, 1, 0)
# Illegal transitions: both lines flipped at once.
_ILLEGAL = (0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0)
_IRQ_BOTH = const(3)  # Pin.IRQ_RISING | Pin.IRQ_FALLING on MicroPython


class QuadratureDecoder:
    def __init__(self, pin_a, pin_b, reverse=False):
        self._a = pin_a
        self._b = pin_b
        self._dir = -1 if reverse else 1
        self._state = (pin_a.value() << 1) | pin_b.value()
        self._count = 0
        self.glitches = 0

    def attach(self, trigger=_IRQ_BOTH):
        self._a.irq(handler=self._isr, trigger=trigger)
        self._b.irq(handler=self._isr, trigger=trigger)

    def _isr(self, _pin):
        new = (self._a.value() << 1) | self._b.value()
        idx = (self._state << 2) | new
        self._count += _STEP[idx] * self._dir
        self.glitches += _ILLEGAL[idx]
        self._state = new

    def value(self):
        return self._count
