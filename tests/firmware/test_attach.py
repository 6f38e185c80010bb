"""Attach debounce, the power rail, thermal hysteresis, and the scenario player on the sim HAL.

Every time is an explicit ``now`` in ms: nothing sleeps.
"""

from _util import raises
from magcam_fw import attach, power, thermal
from magcam_fw import protocol as P
from magcam_fw.compat import ticks_add
from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.hal_sim import SimHal, VirtualPin
from magcam_fw.scenario import Player, parse

# ---------------------------------------------------------------------------------- attach


def _detector(hall=0, vbus=0, debounce_ms=30):
    h, v = VirtualPin(hall), VirtualPin(vbus)
    return h, v, attach.AttachDetector(h, v, debounce_ms)


def _set(h, v, present):
    h.value(present)
    v.value(present)


def test_attach_initial_state_follows_pins():
    assert _detector(1, 1)[2].state == attach.ATTACHED
    assert _detector(1, 1)[2].session == 1
    for hall, vbus in ((0, 0), (1, 0), (0, 1)):
        det = _detector(hall, vbus)[2]
        assert det.state == attach.DETACHED and det.session == 0 and not det.attached


def test_attach_needs_both_hall_and_vbus():
    h, v, det = _detector()
    h.value(1)  # magnet only
    for t in range(0, 200, 10):
        assert det.update(t) is False
    assert det.state == attach.DETACHED
    h.value(0)
    v.value(1)  # power only
    for t in range(200, 400, 10):
        det.update(t)
    assert det.state == attach.DETACHED and det.session == 0


def test_attach_debounce_and_session():
    h, v, det = _detector(debounce_ms=30)
    _set(h, v, 1)
    assert det.update(100) is True and det.state == attach.ATTACHING
    assert det.update(129) is False and det.state == attach.ATTACHING
    assert det.update(130) is True and det.state == attach.ATTACHED
    assert det.attached and det.session == 1
    _set(h, v, 0)
    assert det.update(200) is True and det.state == attach.DETACHING
    assert det.update(229) is False
    assert det.update(230) is True and det.state == attach.DETACHED
    _set(h, v, 1)
    det.update(300)
    det.update(330)
    assert det.state == attach.ATTACHED and det.session == 2
    assert [P.ATTACH_STATES[s] for s in (0, 1, 2, 3)] == ["detached", "attaching", "attached", "detaching"]


def test_attach_chatter_shorter_than_debounce():
    h, v, det = _detector(debounce_ms=30)
    _set(h, v, 1)
    det.update(0)
    det.update(30)
    assert det.state == attach.ATTACHED and det.session == 1
    # Contact chatter while attached: dropouts of 20 ms never reach DETACHED.
    t = 100
    for _ in range(5):
        h.value(0)
        det.update(t)
        det.update(t + 20)
        assert det.state == attach.DETACHING
        h.value(1)
        det.update(t + 25)
        assert det.state == attach.ATTACHED
        t += 50
    assert det.session == 1
    # Chatter while attaching: each bounce restarts the debounce.
    _set(h, v, 0)
    det.update(1000)
    det.update(1030)
    assert det.state == attach.DETACHED
    for t in range(2000, 2200, 20):
        v.value(1 - v.value())
        det.update(t)
        assert det.state != attach.ATTACHED
    assert det.session == 1


def test_attach_debounce_across_tick_wraparound():
    h, v, det = _detector(debounce_ms=30)
    _set(h, v, 1)
    t0 = ticks_add(0, -10)  # 10 ms before the tick counter wraps
    det.update(t0)
    assert det.update(ticks_add(t0, 29)) is False
    assert det.update(ticks_add(t0, 30)) is True and det.state == attach.ATTACHED


# ---------------------------------------------------------------------------------- power

GOOD = (5000, 250, 30000)  # mV, mA, milli-degC


class _Switch:
    def __init__(self):
        self.calls = []

    def __call__(self, on):
        self.calls.append(bool(on))

    @property
    def on(self):
        return self.calls[-1]


def _rail(**limits):
    sw = _Switch()
    return sw, power.PowerRail(sw, limits or None)


def test_power_follows_attach():
    sw, rail = _rail()
    assert sw.calls == [False] and rail.state == power.OFF
    assert rail.update(False, *GOOD, now=0) == 0
    assert not sw.on and rail.state == power.OFF
    assert rail.update(True, *GOOD, now=10) == 0
    assert sw.on and rail.state == power.ON and P.POWER_STATES[rail.state] == "on"
    assert rail.update(True, *GOOD, now=20) == 0 and sw.on
    assert rail.update(False, *GOOD, now=30) == 0
    assert not sw.on and rail.state == power.OFF


def test_power_each_fault_cuts_in_the_same_update():
    cases = (
        ((5000, 1501, 30000), power.OVER_CURRENT, 1501, "over_current"),
        ((4399, 250, 30000), power.UNDER_VOLTAGE, 4399, "under_voltage"),
        ((5000, 250, 70001), power.OVER_TEMPERATURE, 70001, "over_temperature"),
    )
    for reading, cause, value, name in cases:
        sw, rail = _rail()
        rail.update(True, *GOOD, now=0)
        assert sw.on
        assert rail.update(True, *reading, now=10) == cause, name
        assert not sw.on, name  # cut in this very call
        assert rail.state == power.FAULT and P.POWER_STATES[rail.state] == "fault"
        assert P.FAULT_CAUSES[cause] == name
        assert rail.faults == 1 and rail.last_cause == cause and rail.last_value == value


def test_power_limits_are_inclusive_and_configurable():
    sw, rail = _rail()
    rail.update(True, *GOOD, now=0)
    assert rail.update(True, 4400, 1500, 70000, now=1) == 0 and sw.on  # exactly at the limits
    sw, rail = _rail(max_ma=500)
    rail.update(True, *GOOD, now=0)
    assert rail.update(True, 5000, 501, 30000, now=1) == power.OVER_CURRENT
    assert rail.limits["min_mv"] == power.DEFAULT_LIMITS["min_mv"]


def test_power_check_priority():
    _, rail = _rail()
    assert rail.check(*GOOD) == 0
    assert rail.check(4000, 2000, 80000) == power.OVER_CURRENT
    assert rail.check(4000, 100, 80000) == power.UNDER_VOLTAGE
    assert rail.check(5000, 100, 80000) == power.OVER_TEMPERATURE


def test_power_retry_after_retry_ms():
    sw, rail = _rail(retry_ms=1000)
    rail.update(True, *GOOD, now=0)
    assert rail.update(True, 5000, 2000, 30000, now=100) == power.OVER_CURRENT
    assert rail.update(True, *GOOD, now=110) == 0
    assert rail.state == power.RETRY_WAIT and not sw.on
    assert rail.update(True, *GOOD, now=1099) == 0
    assert rail.state == power.RETRY_WAIT and not sw.on
    assert rail.update(True, *GOOD, now=1100) == 0
    assert rail.state == power.ON and sw.on
    # A second fault counts again.
    assert rail.update(True, 4000, 100, 30000, now=1200) == power.UNDER_VOLTAGE
    assert rail.faults == 2 and not sw.on


def test_power_retry_across_tick_wraparound():
    sw, rail = _rail(retry_ms=1000)
    t0 = ticks_add(0, -500)
    rail.update(True, *GOOD, now=t0)
    rail.update(True, 5000, 2000, 30000, now=t0)
    rail.update(True, *GOOD, now=ticks_add(t0, 10))
    rail.update(True, *GOOD, now=ticks_add(t0, 999))
    assert not sw.on
    rail.update(True, *GOOD, now=ticks_add(t0, 1000))
    assert sw.on


def test_power_detach_turns_off_from_any_state():
    for faulted_ticks in (0, 1, 2):
        sw, rail = _rail()
        rail.update(True, *GOOD, now=0)
        if faulted_ticks:
            rail.update(True, 5000, 2000, 30000, now=10)
        if faulted_ticks == 2:
            rail.update(True, *GOOD, now=20)  # now RETRY_WAIT
        rail.update(False, *GOOD, now=30)
        assert rail.state == power.OFF and not sw.on
        rail.update(True, *GOOD, now=40)  # re-attached: on again
        assert rail.state == power.ON and sw.on


# ---------------------------------------------------------------------------------- thermal


def test_thermal_hysteresis_walk_up_and_down():
    th = thermal.Thermal(derate_mc=55000, suspend_mc=65000, hysteresis_mc=3000)
    walk = [
        (30000, "normal", False),
        (54999, "normal", False),
        (55000, "derated", True),
        (53000, "derated", False),  # within the hysteresis
        (52000, "derated", False),
        (51999, "normal", True),
        (60000, "derated", True),
        (65000, "suspended", True),
        (64000, "suspended", False),
        (62000, "suspended", False),
        (61999, "derated", True),
        (64999, "derated", False),
        (70000, "suspended", True),
        (53000, "derated", True),  # from suspended straight below derate, within hysteresis
        (40000, "normal", True),
        (80000, "suspended", True),
        (20000, "normal", True),  # and a straight fall
    ]
    for mc, want, changed in walk:
        assert th.update(mc) is changed, (mc, want)
        assert P.THERMAL_STATES[th.state] == want, (mc, P.THERMAL_STATES[th.state], want)


# ---------------------------------------------------------------------------------- scenario

SCRIPT = """
# a comment, then blank lines

{"t": 500, "do": "detach"}
{"t": 0, "do": "turn", "steps": 200, "rate": 1000}
   {"t": 900, "do": "attach"}
{"t": 1000, "do": "load", "ma": 1800}
{"do": "temp", "c": 72.5, "t": 1500}
{"t": 1200, "do": "vbus", "mv": 4300}
"""


def test_parse_good_lines_sorted():
    evs = parse(SCRIPT)
    assert [e["do"] for e in evs] == ["turn", "detach", "attach", "load", "vbus", "temp"]
    assert [e.get("t", 0) for e in evs] == [0, 500, 900, 1000, 1200, 1500]
    assert evs[0] == {"t": 0, "do": "turn", "steps": 200, "rate": 1000}
    assert parse("") == [] and parse("# nothing\n\n") == []
    assert parse('{"do": "attach"}') == [{"do": "attach"}]  # t defaults to 0


def test_parse_keeps_file_order_at_equal_times():
    # Same-time stimuli must apply in the order written (detach then attach = a re-plug).
    kinds = ["detach", "attach", "load", "temp", "vbus", "detach", "attach", "turn"]
    lines = []
    for k in kinds:
        extra = {"load": ', "ma": 1', "temp": ', "c": 1', "vbus": ', "mv": 1', "turn": ', "steps": 1, "rate": 1'}
        lines.append('{"t": 5, "do": "%s"%s}' % (k, extra.get(k, "")))
    lines.append('{"t": 0, "do": "attach"}')
    got = [e["do"] for e in parse("\n".join(lines))]
    assert got == ["attach"] + kinds, got


def test_parse_bad_lines_raise_value_error_naming_the_line():
    bad = [
        '{"t": 0, "do": "turn", "steps": 10',  # not JSON
        "[1, 2]",  # not an object
        '"attach"',
        '{"t": 0}',  # no "do"
        '{"t": 0, "do": "explode"}',
        '{"t": 1.5, "do": "attach"}',  # t not an integer
        '{"t": "0", "do": "attach"}',
        '{"t": 0, "do": "turn", "rate": 100}',  # steps missing
        '{"t": 0, "do": "turn", "steps": 1.5, "rate": 100}',
        '{"t": 0, "do": "turn", "steps": 10}',  # rate missing
        '{"t": 0, "do": "turn", "steps": 10, "rate": 0}',
        '{"t": 0, "do": "turn", "steps": 10, "rate": 1000001}',
    ]
    for line in bad:
        text = '# header\n{"t": 0, "do": "attach"}\n\n' + line + '\n{"t": 9, "do": "detach"}'
        e = raises(ValueError, parse, text)
        assert "line 4" in str(e), (line, str(e))


def test_parse_rejects_bad_stimulus_fields():
    bad = [
        '{"t": 0, "do": "turn", "steps": 10, "rate": "fast"}',  # TypeError in parse today
        '{"t": 0, "do": "load"}',  # KeyError later, in Player.step
        '{"t": 0, "do": "load", "ma": "lots"}',
        '{"t": 0, "do": "temp"}',
        '{"t": 0, "do": "temp", "c": null}',
        '{"t": 0, "do": "vbus"}',
    ]
    for line in bad:
        try:
            Player(parse('{"t": 0, "do": "attach"}\n' + line)).step(SimHal(), 10)
        except ValueError as e:
            assert "line 2" in str(e), (line, str(e))
        else:
            raise AssertionError("accepted: " + line)


def _sim(script):
    hal = SimHal()
    enc = QuadratureDecoder(hal.ring_a, hal.ring_b)
    enc.attach()
    return hal, enc, Player(parse(script))


def test_player_turn_exact_counts_at_rate():
    hal, enc, player = _sim('{"t": 100, "do": "turn", "steps": 200, "rate": 1000}')
    player.step(hal, 99)
    assert enc.value() == 0
    player.step(hal, 100)
    assert enc.value() == 0
    player.step(hal, 150)
    assert enc.value() == 50  # 1000 transitions/s for 50 ms
    player.step(hal, 151)
    assert enc.value() == 51
    player.step(hal, 250)
    assert enc.value() == 150
    player.step(hal, 5000)
    assert enc.value() == 200 and enc.glitches == 0
    player.step(hal, 6000)
    assert enc.value() == 200


def test_player_slow_turn_and_negative_steps():
    hal, enc, player = _sim('{"t": 0, "do": "turn", "steps": -7, "rate": 10}')
    for now, want in ((0, 0), (99, 0), (100, -1), (350, -3), (699, -6), (700, -7), (2000, -7)):
        player.step(hal, now)
        assert enc.value() == want, (now, enc.value())
    assert enc.glitches == 0


def test_player_turns_back_and_forth_and_overlapping():
    script = "\n".join(
        [
            '{"t": 0, "do": "turn", "steps": 1000, "rate": 100000}',
            '{"t": 100, "do": "turn", "steps": -400, "rate": 4000}',
            '{"t": 100, "do": "turn", "steps": 30, "rate": 1000}',
        ]
    )
    hal, enc, player = _sim(script)
    player.step(hal, 50)
    assert enc.value() == 1000
    player.step(hal, 150)  # -200 and +30 so far
    assert enc.value() == 1000 - 200 + 30
    player.step(hal, 10000)
    assert enc.value() == 1000 - 400 + 30 and enc.glitches == 0
    assert player.done is False  # never started by a host connection
    player.start()
    assert player.done is True


def test_player_detach_attach_load_temp_vbus():
    script = "\n".join(
        [
            '{"t": 10, "do": "detach"}',
            '{"t": 20, "do": "attach"}',
            '{"t": 30, "do": "load", "ma": 1800}',
            '{"t": 40, "do": "temp", "c": 72.5}',
            '{"t": 50, "do": "vbus", "mv": 4300}',
        ]
    )
    hal, _, player = _sim(script)
    hal.set_rail(True)
    assert (hal.hall.value(), hal.vbus.value()) == (1, 1)
    assert hal.read_power() == (5000 - 250 * 150 // 1000, 250)
    player.step(hal, 10)
    assert (hal.hall.value(), hal.vbus.value()) == (0, 0)
    assert hal.read_power() == (0, 0)  # no VBUS: no voltage, no current
    player.step(hal, 20)
    assert (hal.hall.value(), hal.vbus.value()) == (1, 1)
    player.step(hal, 30)
    assert hal.load_ma == 1800 and hal.read_power() == (5000 - 270, 1800)
    player.step(hal, 40)
    assert hal.read_temp_mc() == 72500
    player.step(hal, 50)
    assert hal.vbus_mv == 4300 and hal.read_power() == (4300 - 270, 1800)
    hal.set_rail(False)
    assert hal.read_power() == (4300, 0)


def test_player_drives_attach_and_power_together():
    hal, _, player = _sim(
        '{"t": 100, "do": "detach"}\n{"t": 300, "do": "attach"}\n{"t": 500, "do": "load", "ma": 1600}'
    )
    det = attach.AttachDetector(hal.hall, hal.vbus, 30)
    rail = power.PowerRail(hal.set_rail)
    causes = []
    for now in range(0, 700, 10):
        player.step(hal, now)
        det.update(now)
        mv, ma = hal.read_power()
        cause = rail.update(det.attached, mv, ma, hal.read_temp_mc(), now)
        if cause:
            causes.append((now, cause))
        if now == 200:
            assert det.state == attach.DETACHED and not hal.rail_on
        if now == 400:
            assert det.attached and det.session == 2 and hal.rail_on
    # Detaching (not yet detached) already counts as not attached: the rail goes off without
    # an under-voltage fault. Only the load step over the limit trips it.
    assert causes == [(500, power.OVER_CURRENT)]
    assert not hal.rail_on and rail.state == power.RETRY_WAIT
