"""Focus ring position: a table-driven quadrature decoder, or any hardware quadrature counter.

Both classes give the same API, so the app does not care which one a board has:

- ``raw()``: quadrature transitions (4 per full A/B cycle) since construction;
- ``value()``: detents, ``raw`` divided by ``divisor`` (1, 2 or 4 transitions per detent);
- ``glitches``: impossible transitions seen (always 0 for a hardware counter).

``QuadratureDecoder`` decodes two pins in software. The pins are passed in (any object with
``value()`` and ``irq(handler=..., trigger=...)``, e.g. ``machine.Pin``). Its interrupt handler
only reads the pins and updates small integers through lookup tables: no allocation, so it is
safe as a hard IRQ. Impossible transitions (both lines changing at once: a missed edge or
noise faster than the IRQ) are counted in ``glitches`` and never move the count.

Detents without jitter: ``value()`` does not follow ``raw() // divisor``, which would flicker
whenever the lines bounce across a detent boundary. A detent is counted when the decoder
*arrives* at a rest state (the Gray state the ring was in at construction, every ``divisor``
transitions) at a different position from the last rest state it arrived at. A legal bounce
around a rest state (rest -> neighbour -> rest) changes nothing, and a bounce across it counts
the detent once when first reached: ``value()`` moves at most once per ``divisor`` transitions
of net motion, never back and forth. Between rest states it holds the last detent reached
(hysteresis of one whole detent). Rest states are Gray states, so after glitches (lost
transitions) the count re-aligns with the mechanical detents at the next rest state; a detent
whose transitions were partly lost is dropped, never invented. Build the decoder while the ring
sits in a detent (at boot it does), or call ``attach()`` at rest.

``HardwareCounter`` wraps a counter the chip already has, given as a zero-argument callable
returning its transition count (see docs/focus.md for each runtime):

- MicroPython ``machine.Encoder(0, pin_a, pin_b, phases=4)``: ``HardwareCounter(enc.value,
  divisor=4)``; ``value()`` is already extended in software, no wrap;
- CircuitPython ``rotaryio.IncrementalEncoder(pin_a, pin_b, divisor=1)``: ``HardwareCounter(
  lambda: enc.position, divisor=4)``. rotaryio divides by its own ``divisor`` (default 4:
  it counts detents already); give it ``divisor=1`` so ``raw()`` is transitions and the detent
  hysteresis here applies (with rotaryio's default 4, use ``divisor=1`` here instead);
- rp2 PIO counter (32-bit register that wraps): ``HardwareCounter(read_sm, 4, bits=32)``.

With ``bits`` (16 or 32) the counter is taken to wrap modulo 2**bits and each reading is
unwrapped against the previous one (read it at least once per half period: trivially true at
10 ms ticks). The counter is sampled, so the detent hysteresis works on samples: ``value()``
moves up only when ``raw`` reaches the next multiple of ``divisor``, down only when it reaches
the previous one.

Usage::

    enc = QuadratureDecoder(pin_a, pin_b, divisor=4)
    enc.attach()                      # installs IRQs on both pins
    ...
    enc.value(), enc.raw(), enc.glitches

    enc = HardwareCounter(machine.Encoder(0, pin_a, pin_b, phases=4).value, divisor=4)
    enc.value()                       # detents, same API
"""

from magcam_fw.compat import const

# Index: (previous AB << 2) | new AB. +1 / -1 for a legal step, 0 for no change or illegal.
_STEP = (0, 1, -1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 0, -1, 1, 0)
# Illegal transitions: both lines flipped at once.
_ILLEGAL = (0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0)
# Position of each AB state in the forward Gray cycle 00 -> 01 -> 11 -> 10.
_GRAY_INDEX = (0, 1, 3, 2)
_IRQ_BOTH = const(3)  # Pin.IRQ_RISING | Pin.IRQ_FALLING on MicroPython
DIVISORS = (1, 2, 4)


def _check(divisor):
    if isinstance(divisor, bool) or divisor not in DIVISORS:
        raise ValueError("divisor must be 1, 2 or 4 transitions per detent")


class QuadratureDecoder:
    """Software quadrature decoder on two pins, driven by their edge interrupts."""

    def __init__(self, pin_a, pin_b, divisor=1, reverse=False):
        _check(divisor)
        self._a = pin_a
        self._b = pin_b
        self.divisor = divisor
        self._dir = -1 if reverse else 1
        state = (pin_a.value() << 1) | pin_b.value()
        self._state = state
        self._raw = 0  # transitions, in the pins' own direction
        self._det = 0  # detents, same direction
        self._mark = 0  # _raw when the last rest state was reached
        # 1 for the rest (detent) states: every `divisor` steps from the starting state.
        rest = bytearray(4)
        for s in range(4):
            rest[s] = 1 if (_GRAY_INDEX[s] - _GRAY_INDEX[state]) % divisor == 0 else 0
        self._rest = rest
        self.glitches = 0

    def attach(self, trigger=_IRQ_BOTH):
        self._a.irq(handler=self._isr, trigger=trigger)
        self._b.irq(handler=self._isr, trigger=trigger)

    def detach(self):
        self._a.irq(handler=None)
        self._b.irq(handler=None)

    def _isr(self, _pin):
        # Hard-IRQ safe: small-int arithmetic and table lookups only.
        new = (self._a.value() << 1) | self._b.value()
        idx = (self._state << 2) | new
        self._state = new
        raw = self._raw + _STEP[idx]
        self._raw = raw
        self.glitches += _ILLEGAL[idx]
        if self._rest[new]:
            moved = raw - self._mark
            if moved:
                self._mark = raw
                div = self.divisor
                # Whole detents since the last rest state, truncated toward zero: a detent
                # whose transitions were partly lost to glitches is dropped, never invented.
                if moved > 0:
                    self._det += moved // div
                else:
                    self._det -= (-moved) // div

    def value(self):
        """Detents since construction (signed; negative is the reverse direction)."""
        return self._det * self._dir

    def raw(self):
        """Quadrature transitions since construction (signed)."""
        return self._raw * self._dir


class HardwareCounter:
    """Any hardware quadrature counter behind a zero-argument ``read()``, same API as above."""

    def __init__(self, read, divisor=1, reverse=False, bits=0):
        _check(divisor)
        if bits not in (0, 16, 32):
            raise ValueError("bits must be 0 (no wrap), 16 or 32")
        self._read = read
        self.divisor = divisor
        self._dir = -1 if reverse else 1
        self._bits = bits
        self._last = read()
        self._raw = 0
        self._det = 0
        self.glitches = 0  # the hardware filters; nothing is seen here

    def _poll(self):
        now = self._read()
        delta = now - self._last
        self._last = now
        bits = self._bits
        if bits:
            # Unwrap: the shortest signed distance modulo 2**bits.
            half = 1 << (bits - 1)
            delta = ((delta + half) & ((half << 1) - 1)) - half
        if delta:
            raw = self._raw + delta
            self._raw = raw
            div = self.divisor
            det = self._det
            if raw >= (det + 1) * div:
                self._det = raw // div  # reached the next detent up (or several)
            elif raw <= (det - 1) * div:
                self._det = -((-raw) // div)  # reached the next detent down

    def value(self):
        """Detents since construction (signed)."""
        self._poll()
        return self._det * self._dir

    def raw(self):
        """Transitions since construction (signed)."""
        self._poll()
        return self._raw * self._dir
