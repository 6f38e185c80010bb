"""Quadrature decoder on virtual pins, and focus-by-wire with its soft end-stops."""


from magcam_fw import protocol as P
from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.focus import Focus
from magcam_fw.hal_sim import VirtualPin

FORWARD = (0, 1, 3, 2)  # (A << 1) | B through one quadrature cycle


def _ring(a=0, b=0, reverse=False):
    pa, pb = VirtualPin(a), VirtualPin(b)
    enc = QuadratureDecoder(pa, pb, reverse)
    enc.attach()
    return pa, pb, enc


def _go(pa, pb, state):
    """Move to a neighbouring state, one line at a time (as a real encoder does)."""
    pa.value(state >> 1)
    pb.value(state & 1)


def _cycles(pa, pb, n, forward=True):
    seq = FORWARD if forward else (0, 2, 3, 1)
    for _ in range(n):
        for s in seq[1:] + seq[:1]:
            _go(pa, pb, s)


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


def test_forward_cycles_count_four_each():
    pa, pb, enc = _ring()
    for n in range(1, 6):
        _cycles(pa, pb, 1)
        assert enc.value() == 4 * n
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
    assert enc.value() == -8
    _cycles(pa, pb, 3, forward=False)
    assert enc.value() == 4


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


class _Actuator:
    def __init__(self):
        self.calls = []

    def __call__(self, pos):
        self.calls.append(pos)


def test_focus_starts_mid_range_and_drives_actuator():
    act = _Actuator()
    f = Focus(act, lo=0, hi=1000)
    assert f.position == 500 and act.calls == [500] and f.flags == 0
    assert f.update(10) is True
    assert f.position == 510 and act.calls == [500, 510]
    assert f.update(10) is False  # no ring movement: no actuator call
    assert act.calls == [500, 510]
    assert f.update(-5) is True and f.position == 495


def test_focus_clamps_and_sets_end_stop_flags():
    act = _Actuator()
    f = Focus(act, lo=0, hi=100, start=50)
    assert f.update(60) is True
    assert f.position == 100 and f.flags == P.ENC_AT_MAX
    n = len(act.calls)
    assert f.update(80) is False  # further against the stop: no move, no call
    assert len(act.calls) == n and f.flags == P.ENC_AT_MAX
    assert f.update(79) is True  # backs off at once, no dead travel
    assert f.position == 99 and f.flags == 0
    assert f.update(79 - 200) is True
    assert f.position == 0 and f.flags == P.ENC_AT_MIN
    assert f.update(-500) is False and f.flags == P.ENC_AT_MIN
    assert act.calls[-1] == 0 and act.calls.count(0) == 1


def test_focus_move_to():
    act = _Actuator()
    f = Focus(act, lo=-50, hi=50, start=0)
    assert f.move_to(-50) is True and f.flags == P.ENC_AT_MIN
    assert f.move_to(-80) is False and f.position == -50
    assert f.move_to(50) is True and f.flags == P.ENC_AT_MAX
    assert f.move_to(10) is True and f.flags == 0
    assert act.calls == [0, -50, 50, 10]


def test_focus_follows_the_encoder():
    pa, pb, enc = _ring()
    act = _Actuator()
    f = Focus(act, lo=0, hi=20, start=10)
    _cycles(pa, pb, 2)  # +8
    f.update(enc.value())
    assert f.position == 18
    _cycles(pa, pb, 1)  # +4, clamped at 20
    f.update(enc.value())
    assert f.position == 20 and f.flags == P.ENC_AT_MAX
    _cycles(pa, pb, 2, forward=False)  # -8
    f.update(enc.value())
    assert f.position == 12 and f.flags == 0


def test_focus_start_outside_range_is_clamped():
    act = _Actuator()
    f = Focus(act, lo=0, hi=100, start=500)
    assert (f.position, act.calls, f.flags) == (100, [100], P.ENC_AT_MAX), (f.position, act.calls, f.flags)
