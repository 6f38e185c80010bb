"""Focus-by-wire (velocity, acceleration curve, fixed-point steps, end-stops, move_to) and the
lens actuator outputs (PWM, DAC, step/dir). Every time is an explicit ``now`` in ms."""

import sys

from _util import raises
from magcam_fw import protocol as P
from magcam_fw.actuator import DacActuator, PwmActuator, StepDirActuator
from magcam_fw.compat import ticks_add
from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.focus import DEFAULT_CURVE, LINEAR, Focus
from magcam_fw.hal_sim import SimHal, VirtualPin
from magcam_fw.scenario import Player, parse

TICK = 10


class _Actuator:
    def __init__(self):
        self.calls = []

    def __call__(self, pos):
        self.calls.append(pos)


def _steady(focus, rate, t0=0, ms=1000, c0=0, limit=None):
    """Turn at `rate` detents/s (negative: back) for `ms`, one update per tick; velocities seen."""
    seen = []
    t = 0
    while t <= ms:
        d = t * rate // 1000 if rate >= 0 else -((-rate) * t // 1000)
        if limit is not None:
            d = max(-limit, min(limit, d))
        focus.update(c0 + d, ticks_add(t0, t))
        seen.append(focus.velocity)
        t += TICK
    return seen


def _wide(curve=DEFAULT_CURVE, start=50000):
    act = _Actuator()
    return act, Focus(act, 0, 100000, start=start, curve=curve)


# ---------------------------------------------------------------------------------- basics


def test_focus_starts_mid_range_and_drives_actuator():
    act = _Actuator()
    f = Focus(act, lo=0, hi=1000, curve=LINEAR)
    assert f.position == 500 and act.calls == [500] and f.flags == 0 and f.velocity == 0
    assert f.update(0, 0) is False
    assert f.update(10, 10) is True
    assert f.position == 510 and act.calls == [500, 510]
    assert f.update(10, 20) is False  # no ring movement: no actuator call
    assert act.calls == [500, 510]
    assert f.update(-5, 30) is True and f.position == 495


def test_focus_start_outside_range_is_clamped():
    act = _Actuator()
    f = Focus(act, lo=0, hi=100, start=500)
    assert (f.position, act.calls, f.flags) == (100, [100], P.ENC_AT_MAX), (f.position, act.calls, f.flags)
    f = Focus(act, lo=0, hi=100, start=-3)
    assert (f.position, f.flags) == (0, P.ENC_AT_MIN)
    raises(ValueError, Focus, act, 10, 9)


def test_focus_follows_the_encoder():
    pa, pb = VirtualPin(0), VirtualPin(0)
    enc = QuadratureDecoder(pa, pb, divisor=4)
    enc.attach()
    f = Focus(_Actuator(), lo=0, hi=20, start=10, curve=LINEAR)
    seq = (1, 3, 2, 0)
    for s in seq * 8:  # 8 detents
        pa.value(s >> 1)
        pb.value(s & 1)
    f.update(enc.value(), 100)
    assert f.position == 18
    for s in seq * 4:  # +4, clamped at 20
        pa.value(s >> 1)
        pb.value(s & 1)
    f.update(enc.value(), 200)
    assert f.position == 20 and f.flags == P.ENC_AT_MAX
    for s in (2, 3, 1, 0) * 8:  # -8
        pa.value(s >> 1)
        pb.value(s & 1)
    f.update(enc.value(), 300)
    assert f.position == 12 and f.flags == 0


# ---------------------------------------------------------------------------------- velocity


def test_velocity_of_steady_turns():
    for rate in (5, 20, 30, 50, 70, 200, 330, 1000, 3000, -40, -700):
        _, f = _wide()
        seen = _steady(f, rate, ms=1500)[40:]  # after 400 ms of warm-up
        tol = max(1, abs(rate) // 10)
        assert min(seen) >= rate - tol and max(seen) <= rate + tol, (rate, min(seen), max(seen))


def test_velocity_of_slow_turns_with_a_jittery_tick():
    # The control tick is not exact (10-12 ms here): the time between two detents at 5/s is
    # then 200-210 ms, and 1000 / 201 truncated read 4 (20 % low) every other detent.
    for rate in (5, -5, 10, 20):
        _, f = _wide()
        seen, t, k = [], 0, 0
        while t <= 3000:
            d = t * rate // 1000 if rate >= 0 else -((-rate) * t // 1000)
            f.update(d, t)
            if t > 1000:  # after a few detents
                seen.append(f.velocity)
            t += (10, 12, 11, 12, 10, 11, 12)[k % 7]
            k += 1
        assert min(seen) == rate == max(seen), (rate, min(seen), max(seen))


def test_velocity_slow_isolated_detents_and_rest():
    _, f = _wide()
    f.update(1, 0)  # a first detent after rest reads as slow: 1 per second
    assert f.velocity == 1
    f.update(2, 500)  # one detent 500 ms after the last: 2 detents/s
    assert f.velocity == 2
    f.update(2, 700)
    assert f.velocity == 2
    f.update(2, 751)  # 251 ms without movement: at rest
    assert f.velocity == 0


def test_velocity_decays_to_zero_when_the_ring_stops():
    _, f = _wide()
    _steady(f, 500, ms=300)
    assert f.velocity == 500
    count = 150
    seen = []
    for t in range(310, 600, 10):
        f.update(count, t)
        seen.append(f.velocity)
    assert seen[0] == 500  # not yet overdue
    assert all(seen[i + 1] <= seen[i] for i in range(len(seen) - 1)), seen
    assert seen[-1] == 0 and 0 < seen[10] < 500, seen


def test_flick_from_rest_is_fast_from_its_first_tick():
    _, f = _wide(start=0)
    f.update(0, 0)
    f.update(0, 5000)  # long at rest
    f.update(40, 5010)  # 40 detents inside one 10 ms tick
    assert f.velocity >= 3900 and f.position == 40 * 16, (f.velocity, f.position)
    _, g = _wide(start=0)
    g.update(0, 0)
    g.update(1, 5000)  # a single detent after a pause stays fine
    assert g.velocity == 1 and g.position == 0
    g.update(-1, 5010)  # two back within a tick: at least one interval in 10 ms, backwards
    assert g.velocity <= -100, g.velocity


def test_velocity_across_tick_wraparound():
    _, f = _wide()
    t0 = ticks_add(0, -300)  # the ms clock wraps in the middle of the turn
    seen = _steady(f, 200, t0=t0, ms=600)[30:]
    assert min(seen) == 200 and max(seen) == 200, seen


# ---------------------------------------------------------------------------------- curve


def test_gain_curve_interpolates_and_is_flat_outside():
    _, f = _wide(curve=((10, 100), (20, 200), (40, 1000)))
    assert [f.gain(v) for v in (0, 10, 15, 20, 30, 40, 41, 100000)] == [100, 100, 150, 200, 600, 1000, 1000, 1000]
    assert f.gain(-30) == 600  # |velocity|
    _, f = _wide()
    assert f.gain(0) <= 256 and f.gain(300) >= 8 * 256  # fine when slow, coarse when fast


def test_curve_validation():
    act = _Actuator()
    for bad in ((), ((0, 1), (0, 2)), ((5, 1), (4, 2)), ((0, -1),), ((-1, 3),), ((0, 1.5),)):
        raises(ValueError, Focus, act, 0, 10, None, bad)
    f = Focus(act, 0, 10)
    f.set_curve(((0, 512),))
    assert f.gain(999) == 512


def test_slow_and_fast_turns_same_detents():
    """40 detents slowly (5/s) and quickly (400/s): the fast turn moves the lens much more."""
    act, slow = _wide()
    _steady(slow, 5, ms=12000, limit=40)
    _, fast = _wide()
    _steady(fast, 400, ms=1000, limit=40)
    moved_slow = slow.position - 50000
    moved_fast = fast.position - 50000
    assert 10 <= moved_slow <= 40, moved_slow  # at most 1 step per detent
    assert moved_fast >= 8 * 40, moved_fast  # at least 8 steps per detent on average
    # The actuator is called only when the integer position changes.
    assert len(act.calls) == len(set(act.calls)) and len(act.calls) <= moved_slow + 1


def test_fractions_accumulate_on_fine_turns():
    act, f = _wide(curve=((0, 64),), start=500)  # a quarter step per detent
    t = 0
    for n in range(1, 13):
        t += 1000
        f.update(n, t)
        assert f.position == 500 + n // 4, (n, f.position)
    assert act.calls == [500, 501, 502, 503]  # only whole-step changes reach the actuator
    for n in range(11, -1, -1):  # and back: exactly where it started
        t += 1000
        f.update(n, t)
    assert f.position == 500 and act.calls[-1] == 500


def test_default_curve_slow_detents_move_fractions():
    _, f = _wide(start=0)
    t = 0
    for n in range(1, 9):  # 8 detents, 2 per second
        f.update(n, t)
        t += 500
    # First detent after rest: 1 detent/s -> gain 128 + 128 * 1 // 8 = 144 (1/256 steps);
    # the next seven at 2 detents/s -> 160 each. 144 + 7 * 160 = 1264 / 256 = 4.9 steps.
    assert f.gain(1) == 144 and f.gain(2) == 160
    assert f.position == (144 + 7 * 160) // 256 == 4


def test_acceleration_through_the_scenario_player():
    """Same ring travel at 5 and 2000 transitions/s through the Player; lens on the sim HAL."""
    moved = []
    for rate in (5, 2000):
        hal = SimHal()
        enc = QuadratureDecoder(hal.ring_a, hal.ring_b)
        enc.attach()
        focus = Focus(hal.lens_actuator, 0, 100000, start=50000)
        player = Player(parse('{"t": 0, "do": "turn", "steps": 100, "rate": %d, "bounce": 1}' % rate))
        for now in range(0, 20100):
            player.step(hal, now)
            if now % TICK == 0:
                focus.update(enc.value(), now)
        assert enc.value() == 100 and enc.glitches == 0
        moved.append(hal.lens - 50000)
    assert moved[0] <= 100 and moved[1] >= 10 * moved[0], moved


# ---------------------------------------------------------------------------------- end-stops, move_to


def test_focus_clamps_and_sets_end_stop_flags():
    act = _Actuator()
    f = Focus(act, lo=0, hi=100, start=50, curve=LINEAR)
    assert f.update(60, 10) is True
    assert f.position == 100 and f.flags == P.ENC_AT_MAX and f.hit == P.ENC_AT_MAX
    n = len(act.calls)
    assert f.update(80, 20) is False  # further against the stop: no move, no call, no new hit
    assert len(act.calls) == n and f.flags == P.ENC_AT_MAX and f.hit == 0
    assert f.update(79, 30) is True  # backs off at once, no dead travel
    assert f.position == 99 and f.flags == 0 and f.hit == 0
    assert f.update(79 - 200, 40) is True
    assert f.position == 0 and f.flags == P.ENC_AT_MIN and f.hit == P.ENC_AT_MIN
    assert f.update(-500, 50) is False and f.flags == P.ENC_AT_MIN
    assert act.calls[-1] == 0 and act.calls.count(0) == 1


def test_newly_hit_stop_reported_once():
    act, f = _wide()
    f = Focus(act, 0, 1000, start=990, curve=LINEAR)
    reports = []
    hits = []
    for i in range(1, 60):  # keeps turning into the stop for 50 ticks
        reports.append(f.update(i, i * TICK))
        hits.append(f.hit)
    assert reports.count(True) == 10 and hits.count(P.ENC_AT_MAX) == 1, (reports, hits)
    assert hits.index(P.ENC_AT_MAX) == 9  # on the tick the stop is reached
    # Leave the stop and come back: a new hit, once.
    assert f.update(55, 600) is True and f.hit == 0
    hits = []
    for i in range(56, 70):
        f.update(i, i * TICK + 100)
        hits.append(f.hit)
    assert hits.count(P.ENC_AT_MAX) == 1, hits


def test_fast_turn_into_the_stop_accumulates_nothing_beyond_it():
    act, f = _wide()
    f = Focus(act, 0, 1000, start=500)
    _steady(f, 2000, ms=500)  # far beyond the stop at full gain
    assert f.position == 1000 and f.flags == P.ENC_AT_MAX
    f.update(1000 - 1, 1000)  # one slow detent back leaves the stop at once
    assert f.position < 1000 and f.flags == 0


def test_focus_move_to():
    act = _Actuator()
    f = Focus(act, lo=-50, hi=50, start=0)
    assert f.move_to(-50) is True and f.flags == P.ENC_AT_MIN
    assert f.move_to(-80) is False and f.position == -50
    assert f.move_to(50) is True and f.flags == P.ENC_AT_MAX
    assert f.move_to(10) is True and f.flags == 0
    assert act.calls == [0, -50, 50, 10]


def test_move_to_is_reported_by_the_next_update_and_drops_fractions():
    act = _Actuator()
    f = Focus(act, 0, 1000, start=500, curve=((0, 128),))  # half a step per detent
    f.update(1, 1000)
    assert f.position == 500  # half a step pending
    assert f.move_to(1000) is True
    assert f.update(1, 1010) is True and f.hit == P.ENC_AT_MAX  # host move reported once
    assert f.update(1, 1020) is False and f.hit == 0
    f.move_to(700)
    f.update(1, 1030)
    f.update(2, 2030)  # half a step: the old half was dropped by move_to
    assert f.position == 700
    f.update(3, 3030)
    assert f.position == 701


# ---------------------------------------------------------------------------------- actuators


class _Pwm:
    def __init__(self):
        self.duties = []

    def duty_u16(self, v):
        self.duties.append(v)


class _MachineDac:
    def __init__(self):
        self.codes = []

    def write(self, v):
        self.codes.append(v)


class _AnalogOut:
    def __init__(self):
        self.value = 0


def test_pwm_actuator_maps_and_clamps():
    pwm = _Pwm()
    act = PwmActuator(pwm, 0, 1000, duty_min=1000, duty_max=61000)
    for pos in (0, 1000, 500, 1, -5, 2000):
        act(pos)
    assert pwm.duties == [1000, 61000, 31000, 1060, 1000, 61000] and act.code == 61000
    inv = _Pwm()
    act = PwmActuator(inv, -100, 100, duty_min=65535, duty_max=0)
    for pos in (-100, 100, 0):
        act(pos)
    assert inv.duties == [65535, 0, 32767]  # 65535 - 32767.5: the offset rounds away from zero
    raises(ValueError, PwmActuator, pwm, 0, 10, -1, 100)
    raises(ValueError, PwmActuator, pwm, 0, 10, 0, 65536)
    raises(ValueError, PwmActuator, pwm, 10, 0)


def test_dac_actuator_machine_analogout_and_setter():
    dac = _MachineDac()
    act = DacActuator(dac, 0, 1000)  # machine.DAC: write(), 8 bits
    for pos in (0, 1000, 500, 2, 1001):
        act(pos)
    assert dac.codes == [0, 255, 128, 1, 255] and act.bits == 8
    out = _AnalogOut()
    act = DacActuator(out, 0, 1000)  # CircuitPython AnalogOut: .value, 16 bits
    act(1000)
    assert out.value == 65535 and act.bits == 16
    act(250)
    assert out.value == 16384
    got = []
    act = DacActuator(got.append, 0, 100, bits=12, code_min=100, code_max=4000)
    act(0)
    act(100)
    act(50)
    assert got == [100, 4000, 2050]
    raises(TypeError, DacActuator, object(), 0, 10)
    raises(ValueError, DacActuator, _MachineDac(), 0, 10, 8, 0, 256)


def _stepper(**kw):
    step, d = VirtualPin(0), VirtualPin(0)
    pulses = []  # the dir level at each rising step edge: what the driver latches

    def on_step(pin):
        if pin.value():
            pulses.append(d.value())

    step.irq(handler=on_step)
    return step, d, pulses, StepDirActuator(step, d, **kw)


def test_step_dir_moves_to_target_at_the_rate_limit():
    step, _, pulses, motor = _stepper(steps_per_unit=2, max_rate_hz=1000, max_steps_per_poll=8)
    motor(10)  # 20 steps
    assert motor.target == 20 and motor.busy and not pulses  # calling only sets the target
    per_poll = [motor.poll(t) for t in range(0, 25)]  # every 1 ms
    assert per_poll[:20] == [1] * 20 and sum(per_poll) == 20, per_poll
    assert pulses == [1] * 20 and motor.position == 20 and not motor.busy
    assert step.value() == 0  # each pulse ends low


def test_step_dir_bounded_per_poll_and_direction_first():
    _, _, pulses, motor = _stepper(max_rate_hz=1000, max_steps_per_poll=8)
    motor(-30)
    got = [motor.poll(t) for t in range(0, 200, 10)]  # 10 ms polls: 10 due, 8 allowed
    assert got[:4] == [1, 8, 8, 8] and sum(got) == 30, got
    assert pulses == [0] * 30 and motor.position == -30
    motor(-25)  # turn around: dir is set before the first step
    motor.poll(300)
    assert pulses[30:] == [1] * 5 and motor.position == -25


def test_step_dir_idle_time_does_not_save_up_a_burst():
    _, _, _, motor = _stepper(max_rate_hz=100, max_steps_per_poll=16)
    motor.poll(0)
    motor.poll(5000)  # long idle
    motor(50)
    assert motor.poll(5001) == 1  # one step at once, then the rate: 100 Hz
    assert motor.poll(5011) == 1 and motor.poll(5051) == 4


def test_step_dir_invert_zero_and_focus():
    _, _, pulses, motor = _stepper(invert_dir=True, max_rate_hz=1000)
    motor.zero(100)
    assert motor.position == 100 and not motor.busy
    motor(103)
    for t in range(5):
        motor.poll(t)
    assert pulses == [0, 0, 0] and motor.position == 103
    raises(ValueError, StepDirActuator, VirtualPin(), VirtualPin(), 0)
    # Focus drives it like any other actuator.
    _, _, pulses, motor = _stepper(steps_per_unit=4, max_rate_hz=2000)
    motor.zero(0)
    f = Focus(motor, 0, 100, start=0, curve=LINEAR)
    f.update(5, 10)
    for t in range(10, 30):
        motor.poll(t)
    assert motor.position == 20 and len(pulses) == 20


# ---------------------------------------------------------------------------------- allocation


class _Last:
    def __init__(self):
        self.pos = 0

    def __call__(self, pos):
        self.pos = pos


class _PwmLast:
    def __init__(self):
        self.duty = 0

    def duty_u16(self, v):
        self.duty = v


def test_update_and_actuators_allocate_nothing_on_micropython():
    if sys.implementation.name != "micropython":
        return  # CPython allocates for every int; the rule is about MicroPython's heap
    import micropython

    last = _Last()
    f = Focus(last, 0, 1000, start=500)
    bus = _PwmLast()
    pwm = PwmActuator(bus, 0, 1000)
    step = StepDirActuator(VirtualPin(), VirtualPin(), max_rate_hz=1000)
    step(40)
    count = 0
    micropython.heap_lock()
    try:
        for t in range(0, 3000, 10):
            if t < 1000:
                count += 1 if t % 50 == 0 else 0  # slow
            elif t < 1500:
                count += 20  # fast, into the stop
            elif t < 2000:
                count -= 3
            f.update(count, t)
            pwm(f.position)
            step.poll(t)
    finally:
        micropython.heap_unlock()
    assert last.pos == f.position and f.velocity == 0 and step.position == 40
    assert bus.duty == pwm.code == (f.position * 65535 + 500) // 1000
