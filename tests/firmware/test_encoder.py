"""Quadrature decoder on virtual pins (divisor, reverse, glitches, detent hysteresis) and the
hardware-counter wrapper (divisor, reverse, wrap-around). Focus tests are in test_focus.py."""

import sys

from _util import raises
from magcam_fw.encoder import HardwareCounter, QuadratureDecoder
from magcam_fw.hal_sim import VirtualPin

FORWARD = (0, 1, 3, 2)  # (A << 1) | B through one quadrature cycle


def _ring(a=0, b=0, reverse=False, divisor=1):
    pa, pb = VirtualPin(a), VirtualPin(b)
    enc = QuadratureDecoder(pa, pb, divisor=divisor, reverse=reverse)
    enc.attach()
    return pa, pb, enc


def _go(pa, pb, state):
    """Move to a neighbouring state, one line at a time (as a real encoder does)."""
    pa.value(state >> 1)
    pb.value(state & 1)


def _state(pa, pb):
    return (pa.value() << 1) | pb.value()


def _step(pa, pb, direction):
    """One legal transition forward (+1) or back (-1) from wherever the lines are."""
    _go(pa, pb, FORWARD[(FORWARD.index(_state(pa, pb)) + direction) % 4])


def _cycles(pa, pb, n, forward=True):
    for _ in range(4 * n):
        _step(pa, pb, 1 if forward else -1)


def _both_at_once(pa, pb, enc, a, b):
    """Both lines change before the IRQ runs: the handler sees a two-line jump."""
    pa.irq(handler=None)
    pb.irq(handler=None)
    pa.value(a)
    pb.value(b)
    pa.irq(handler=enc._isr)
    pb.irq(handler=enc._isr)
    enc._isr(pa)  # A's interrupt, then B's (which sees no further change)
    enc._isr(pb)


# ---------------------------------------------------------------------------------- decoder


def test_forward_cycles_count_four_each():
    pa, pb, enc = _ring()
    for n in range(1, 6):
        _cycles(pa, pb, 1)
        assert enc.value() == 4 * n and enc.raw() == 4 * n
    assert enc.glitches == 0
    assert (pa.value(), pb.value()) == (0, 0)


def test_backward_cycles_count_minus_four_each():
    pa, pb, enc = _ring()
    _cycles(pa, pb, 3, forward=False)
    assert enc.value() == -12
    _cycles(pa, pb, 5)
    assert enc.value() == 8
    assert enc.glitches == 0


def test_each_transition_counts_one():
    pa, pb, enc = _ring()
    counts = []
    for s in (1, 3, 2, 0, 1, 0, 2, 3):
        _go(pa, pb, s)
        counts.append(enc.value())
    assert counts == [1, 2, 3, 4, 5, 4, 3, 2]


def test_starting_state_is_read_from_the_pins():
    pa, pb, enc = _ring(1, 1)  # start mid-cycle at AB = 11
    _go(pa, pb, 2)  # 11 -> 10 is forward
    assert enc.value() == 1 and enc.glitches == 0


def test_reverse_flag_negates():
    pa, pb, enc = _ring(reverse=True)
    _cycles(pa, pb, 2)
    assert enc.value() == -8 and enc.raw() == -8
    _cycles(pa, pb, 3, forward=False)
    assert enc.value() == 4 and enc.raw() == 4


def test_illegal_transitions_are_glitches_not_counts():
    pa, pb, enc = _ring()
    _both_at_once(pa, pb, enc, 1, 1)  # 00 -> 11
    assert enc.value() == 0 and enc.glitches == 1
    _both_at_once(pa, pb, enc, 0, 0)  # 11 -> 00
    _go(pa, pb, 1)  # a legal step afterwards still counts
    assert enc.value() == 1 and enc.glitches == 2
    _both_at_once(pa, pb, enc, 1, 0)  # 01 -> 10
    _both_at_once(pa, pb, enc, 0, 1)  # 10 -> 01
    assert enc.value() == 1 and enc.glitches == 4


def test_bounce_nets_zero():
    pa, pb, enc = _ring()
    for _ in range(25):
        pa.value(1)
        pa.value(0)
    assert enc.value() == 0 and enc.glitches == 0
    _go(pa, pb, 1)
    for _ in range(10):  # B bouncing at 01
        pb.value(0)
        pb.value(1)
    assert enc.value() == 1


def test_no_irq_for_writes_of_the_same_level():
    pa, pb, enc = _ring()
    pa.value(0)
    pb.value(0)
    assert enc.value() == 0 and enc.glitches == 0


def test_detach_stops_counting():
    pa, pb, enc = _ring()
    _cycles(pa, pb, 1)
    enc.detach()
    _cycles(pa, pb, 1)
    assert enc.raw() == 4


# ---------------------------------------------------------------------------------- divisor


def test_divisor_1_2_4_detents_per_cycle():
    for divisor, per_cycle in ((1, 4), (2, 2), (4, 1)):
        pa, pb, enc = _ring(divisor=divisor)
        assert enc.divisor == divisor
        _cycles(pa, pb, 5)
        assert enc.value() == 5 * per_cycle and enc.raw() == 20, (divisor, enc.value())
        _cycles(pa, pb, 8, forward=False)
        assert enc.value() == -3 * per_cycle and enc.raw() == -12, (divisor, enc.value())
        assert enc.glitches == 0


def test_divisor_each_transition():
    # value() moves exactly when a rest state is reached: every `divisor` transitions.
    for divisor in (1, 2, 4):
        pa, pb, enc = _ring(divisor=divisor)
        seen = []
        for _ in range(12):
            _step(pa, pb, 1)
            seen.append(enc.value())
        assert seen == [(i + 1) // divisor for i in range(12)], (divisor, seen)
        seen = []
        for _ in range(12):
            _step(pa, pb, -1)
            seen.append(enc.value())
        # Coming back, a detent is counted on arriving at the rest state below it.
        assert seen == [-(-(11 - i) // divisor) for i in range(12)], (divisor, seen)


def test_divisor_rejects_other_values():
    pa, pb = VirtualPin(0), VirtualPin(0)
    for bad in (0, 3, 8, -1, True):  # True: the old positional `reverse` must not pass as 1
        raises(ValueError, QuadratureDecoder, pa, pb, bad)
        raises(ValueError, HardwareCounter, lambda: 0, bad)


def test_detent_boundary_bounce_does_not_flicker():
    """Bounce across a detent boundary: value() changes once, when the detent is reached."""
    for divisor in (2, 4):
        pa, pb, enc = _ring(divisor=divisor)
        for _ in range(divisor - 1):
            _step(pa, pb, 1)
        values = [enc.value()]
        for _ in range(20):  # the last transition into the detent bounces: in, out, in, ...
            _step(pa, pb, 1)
            values.append(enc.value())
            _step(pa, pb, -1)
            values.append(enc.value())
        _step(pa, pb, 1)
        values.append(enc.value())
        changes = sum(1 for i in range(1, len(values)) if values[i] != values[i - 1])
        assert changes == 1 and values[-1] == 1, (divisor, values)
        # Resting in the detent and bouncing out of it either way changes nothing either.
        for d in (1, -1) * 10:
            _step(pa, pb, d)
            assert enc.value() == 1
            _step(pa, pb, -d)
            assert enc.value() == 1
        assert enc.raw() == divisor and enc.glitches == 0


def test_detent_hysteresis_half_way_back_and_forth():
    pa, pb, enc = _ring(divisor=4)
    _cycles(pa, pb, 2)  # two detents
    assert enc.value() == 2
    for _ in range(3):  # three quarters back: still detent 2 until the rest state below
        _step(pa, pb, -1)
        assert enc.value() == 2
    _step(pa, pb, -1)
    assert enc.value() == 1
    for _ in range(3):  # and forward again: detent 1 until detent 2 is reached again
        _step(pa, pb, 1)
        assert enc.value() == 1
    _step(pa, pb, 1)
    assert enc.value() == 2


def test_rest_state_is_the_starting_state():
    # Pull-ups, common to ground: many rings rest at AB = 11. Detents are counted there.
    pa, pb, enc = _ring(1, 1, divisor=4)
    _step(pa, pb, 1)
    _step(pa, pb, 1)
    _step(pa, pb, 1)
    assert enc.value() == 0
    _step(pa, pb, 1)
    assert _state(pa, pb) == 3 and enc.value() == 1


def test_divisor_with_reverse():
    pa, pb, enc = _ring(divisor=4, reverse=True)
    _cycles(pa, pb, 3)
    assert enc.value() == -3 and enc.raw() == -12
    _cycles(pa, pb, 5, forward=False)
    assert enc.value() == 2 and enc.raw() == 8


def test_glitches_realign_detents_never_invent_one():
    pa, pb, enc = _ring(divisor=4)
    _cycles(pa, pb, 1)
    assert enc.value() == 1
    # Two forward transitions are missed (seen as one 2-line jump), then the turn goes on.
    _step(pa, pb, 1)  # raw 5
    _both_at_once(pa, pb, enc, 1, 0)  # 01 -> 10: really +2, counted as a glitch
    assert enc.glitches == 1 and enc.raw() == 5
    _step(pa, pb, 1)  # back at the rest state 00 after really a whole detent
    # The half-lost detent is dropped, not invented; the count re-aligns to the rest state.
    assert enc.value() == 1 and _state(pa, pb) == 0
    _cycles(pa, pb, 3)
    assert enc.value() == 4 and enc.raw() == 18
    _cycles(pa, pb, 2, forward=False)
    assert enc.value() == 2


# ---------------------------------------------------------------------------------- hardware counter


class _Counter:
    """A hardware counter register: `n` transitions, read back as the hardware presents it."""

    def __init__(self, start=0, bits=0, signed=False):
        self.n = start
        self.bits = bits
        self.signed = signed
        self.reads = 0

    def __call__(self):
        self.reads += 1
        if not self.bits:
            return self.n
        v = self.n & ((1 << self.bits) - 1)
        if self.signed and v >= 1 << (self.bits - 1):
            v -= 1 << self.bits
        return v


def test_hardware_counter_same_api():
    hw = _Counter(start=1234)  # counts since boot: the wrapper starts from zero
    enc = HardwareCounter(hw)
    assert (enc.value(), enc.raw(), enc.glitches, enc.divisor) == (0, 0, 0, 1)
    hw.n += 7
    assert enc.value() == 7 and enc.raw() == 7
    hw.n -= 20
    assert enc.value() == -13
    for name in ("value", "raw", "glitches", "divisor"):
        assert hasattr(QuadratureDecoder(VirtualPin(), VirtualPin()), name), name


def test_hardware_counter_divisor_and_reverse():
    hw = _Counter()
    enc = HardwareCounter(hw, divisor=4, reverse=True)
    hw.n = 3
    assert enc.value() == 0 and enc.raw() == -3
    hw.n = 4
    assert enc.value() == -1
    hw.n = 9  # sampled: jumps over detents at once
    assert enc.value() == -2 and enc.raw() == -9
    hw.n = -8
    assert enc.value() == 2 and enc.raw() == 8


def test_hardware_counter_hysteresis_between_samples():
    hw = _Counter()
    enc = HardwareCounter(hw, divisor=4)
    seen = []
    for n in (3, 4, 3, 4, 3, 5, 4, 1, 0, 1, -1, 0, -3, -4, -3, -4):
        hw.n = n
        seen.append(enc.value())
    assert seen == [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, -1, -1, -1], seen
    for divisor in (1, 2):
        hw = _Counter()
        enc = HardwareCounter(hw, divisor=divisor)
        hw.n = 40
        assert enc.value() == 40 // divisor


def test_hardware_counter_wraps_16_and_32_bit():
    for bits, signed in ((16, False), (16, True), (32, False), (32, True)):
        top = 1 << bits
        hw = _Counter(start=top - 10, bits=bits, signed=signed)
        enc = HardwareCounter(hw, divisor=1, bits=bits)
        total = 0
        for step in (7, 7, 7, -30, -30, 1000, -2000, 5):  # crosses the wrap both ways
            hw.n += step
            total += step
            assert enc.raw() == total, (bits, signed, step, enc.raw(), total)
        # Many laps around the register, read often enough.
        for _ in range(5):
            for _ in range(4):
                hw.n += top // 4 - 1
                total += top // 4 - 1
                assert enc.raw() == total
    raises(ValueError, HardwareCounter, _Counter(), 1, False, 8)


def test_hardware_counter_without_bits_does_not_unwrap():
    hw = _Counter()
    enc = HardwareCounter(hw)
    hw.n = 1 << 20  # extended in software by the runtime: taken as is
    assert enc.raw() == 1 << 20
    hw.n = -(1 << 20)
    assert enc.raw() == -(1 << 20)


# ---------------------------------------------------------------------------------- allocation


def test_irq_handler_and_counter_allocate_nothing_on_micropython():
    if sys.implementation.name != "micropython":
        return  # CPython allocates for every int; the rule is about MicroPython's heap
    import micropython

    pa, pb, enc = _ring(divisor=4)
    isr = enc._isr  # bound once, as attach() does
    hw = _Counter(start=65530, bits=16)
    ctr = HardwareCounter(hw, divisor=4, bits=16)
    micropython.heap_lock()
    try:
        for _ in range(50):
            pb.value(1)  # forward 00 -> 01 -> 11 -> 10 -> 00, with B bouncing on the way
            pb.value(0)
            pb.value(1)
            pa.value(1)
            pb.value(0)
            pa.value(0)
            pa._v = 1  # both lines at once: a glitch
            pb._v = 1
            isr(pa)
            pa._v = 0
            pb._v = 0
            isr(pb)
            hw.n += 3
            ctr.value()
            ctr.raw()
    finally:
        micropython.heap_unlock()
    assert enc.raw() == 200 and enc.value() == 50 and enc.glitches == 100
    assert ctr.raw() == 150 and ctr.value() == 37
